#!/usr/bin/env bash
# Installs the template linters that test/infra/template-lint.test.ts runs on the synthesized
# CloudFormation, into the git-ignored .tools/ of this repository (nothing outside the checkout
# changes):
#   checkov   ->  .tools/iac-venv/bin/checkov
#   cfn-lint  ->  .tools/iac-venv/bin/cfn-lint
# Their own venv, apart from moto's (.tools/venv): checkov pins many libraries, and the two tool
# sets must not fight over versions. A stamp file names the requirements the venv was made with; a
# run whose stamp matches (and whose binaries exist) installs nothing. Changing a version here
# reinstalls on the next run.
#
# `install-iac-lint.sh --check` installs nothing and prints nothing: it exits 0 when both tools are
# installed at these versions and 1 otherwise.
set -euo pipefail

readonly requirements='checkov==3.3.30 cfn-lint==1.58.0'

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
tools="$root/.tools"
venv="$tools/iac-venv"
stamp="$venv/.gpuai-installed"

installed() {
  [[ -x "$venv/bin/checkov" ]] && [[ -x "$venv/bin/cfn-lint" ]] && [[ -f "$stamp" ]] &&
    [[ "$(cat "$stamp")" == "$requirements" ]]
}

if [[ "${1:-}" == "--check" ]]; then
  installed
  exit
fi

mkdir -p "$tools"
# Two test runs starting at once must not install into the same venv concurrently.
exec 9>"$tools/iac-install.lock"
flock 9

if installed; then
  echo "install-iac-lint.sh: $requirements already installed in $venv"
  exit 0
fi

log="$(mktemp "$tools/iac-install-log.XXXXXX")"
trap 'rm -f "$log"' EXIT
started=$SECONDS
echo "install-iac-lint.sh: installing $requirements into $venv"
# A half-made venv from an interrupted run is rebuilt from scratch.
rm -rf "$venv"
# shellcheck disable=SC2086 # the requirements are separate words on purpose
if ! { python3 -m venv "$venv" && "$venv/bin/python" -m pip install --quiet --disable-pip-version-check $requirements; } >"$log" 2>&1; then
  echo "install-iac-lint.sh: installing $requirements failed; its output:" >&2
  cat "$log" >&2
  exit 1
fi
echo "$requirements" >"$stamp"
echo "install-iac-lint.sh: done in $((SECONDS - started)) s"
