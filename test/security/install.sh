#!/usr/bin/env bash
# Installs Schemathesis (and `cryptography`, which the auth hook signs node requests with) into the
# git-ignored .tools/ of this repository, in a venv of its own so that nothing outside the checkout
# changes and the emulators' venv is not touched:
#   .tools/schemathesis/bin/schemathesis
# A stamp file names the requirements installed; a run whose stamp matches installs nothing.
#
# `install.sh --check` installs nothing and prints nothing: exit 0 when installed at these
# versions, 1 otherwise.
set -euo pipefail

readonly requirements='schemathesis==4.32.5 cryptography==50.0.2'

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
tools="$root/.tools"
venv="$tools/schemathesis"
stamp="$venv/.gpuai-installed"

installed() {
  [[ -x "$venv/bin/schemathesis" ]] && [[ -f "$stamp" ]] && [[ "$(cat "$stamp")" == "$requirements" ]]
}

if [[ "${1:-}" == "--check" ]]; then
  installed
  exit
fi

mkdir -p "$tools"
# Two test runs starting at once must not install into the same venv concurrently.
exec 9>"$tools/schemathesis.lock"
flock 9

if installed; then
  echo "install.sh: $requirements already installed in $venv"
  exit 0
fi

log="$(mktemp "$tools/schemathesis-install-log.XXXXXX")"
trap 'rm -f "$log"' EXIT
started=$SECONDS
echo "install.sh: installing $requirements into $venv"
# A half-made venv from an interrupted run is rebuilt from scratch.
rm -rf "$venv"
# shellcheck disable=SC2086 # the requirements are several words on purpose
if ! { python3 -m venv "$venv" && "$venv/bin/python" -m pip install --quiet $requirements; } >"$log" 2>&1; then
  echo "install.sh: installing $requirements failed; its output:" >&2
  cat "$log" >&2
  exit 1
fi
echo "$requirements" >"$stamp"
echo "install.sh: done in $((SECONDS - started)) s"
