#!/usr/bin/env bash
# Installs the AWS emulators the integration tests run against, into the git-ignored .tools/ of
# this repository, so nothing outside the checkout changes:
#   moto's server (DynamoDB, SQS)  ->  .tools/venv/bin/moto_server
#   local-kms (KMS)                ->  .tools/bin/local-kms
# Each tool gets a stamp file naming the version it was installed at; a run whose stamps match the
# versions below (and whose binaries exist) installs nothing. Changing a version here reinstalls
# that tool on the next run.
#
# `install.sh --check` installs nothing and prints nothing: it exits 0 when both tools are
# installed at these versions and 1 otherwise (the test harness asks before installing loudly).
set -euo pipefail

readonly moto_requirement='moto[server]==5.2.5'
readonly local_kms_module='github.com/nsmithuk/local-kms@v0.0.0-20260228092603-2a5e92d09ab6'

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
tools="$root/.tools"
venv="$tools/venv"
bin="$tools/bin"
moto_stamp="$venv/.gpuai-installed"
local_kms_stamp="$bin/.local-kms-installed"

# True when the stamp exists and names exactly this version.
stamped() {
  [[ -f "$1" ]] && [[ "$(cat "$1")" == "$2" ]]
}
moto_installed() {
  [[ -x "$venv/bin/moto_server" ]] && stamped "$moto_stamp" "$moto_requirement"
}
local_kms_installed() {
  [[ -x "$bin/local-kms" ]] && stamped "$local_kms_stamp" "$local_kms_module"
}

if [[ "${1:-}" == "--check" ]]; then
  moto_installed && local_kms_installed
  exit
fi

mkdir -p "$tools" "$bin"

# Two test runs starting at once must not install into the same venv concurrently.
exec 9>"$tools/install.lock"
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

if moto_installed; then
  echo "install.sh: $moto_requirement already installed in $venv"
else
  echo "install.sh: installing $moto_requirement into $venv"
  # A half-made venv from an interrupted run is rebuilt from scratch.
  rm -rf "$venv"
  run_logged 'python3 -m venv' python3 -m venv "$venv"
  run_logged "pip install $moto_requirement" "$venv/bin/python" -m pip install --quiet "$moto_requirement"
  echo "$moto_requirement" >"$moto_stamp"
fi

if local_kms_installed; then
  echo "install.sh: local-kms already installed in $bin ($local_kms_module)"
else
  echo "install.sh: building $local_kms_module into $bin"
  rm -f "$local_kms_stamp"
  run_logged "go install $local_kms_module" env GOBIN="$bin" go install "$local_kms_module"
  echo "$local_kms_module" >"$local_kms_stamp"
fi
