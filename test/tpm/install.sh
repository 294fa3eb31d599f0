#!/usr/bin/env bash
# Installs the TPM 2.0 software the attestation integration tests run against: swtpm (a software
# TPM, socket interface) and tpm2-tools (tpm2_createek, tpm2_createak, tpm2_quote, ...), from the
# distribution's packages (Debian 12: swtpm 0.7.1, tpm2-tools 5.4). Idempotent: installs nothing
# when the three commands are already on PATH.
#
# `install.sh --check` installs nothing and prints nothing: exit 0 when everything is present.
set -euo pipefail

present() {
  command -v swtpm >/dev/null && command -v swtpm_setup >/dev/null && command -v tpm2_quote >/dev/null &&
    command -v tpm2_createak >/dev/null && command -v tpm2_flushcontext >/dev/null
}

if [[ "${1:-}" == "--check" ]]; then
  present
  exit
fi

if present; then
  echo "tpm/install.sh: swtpm and tpm2-tools already installed"
  exit 0
fi

if ! command -v apt-get >/dev/null; then
  echo "tpm/install.sh: swtpm and tpm2-tools are missing and this is not an apt system; install them by hand" >&2
  exit 1
fi
sudo=()
if [[ "$(id -u)" != 0 ]]; then
  sudo=(sudo -n)
fi

# Two test runs starting at once must not run apt-get concurrently.
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
mkdir -p "$root/.tools"
exec 9>"$root/.tools/tpm-install.lock"
flock 9
if present; then
  exit 0
fi

log="$(mktemp)"
started=$SECONDS
echo "tpm/install.sh: apt-get install swtpm swtpm-tools tpm2-tools"
if ! { "${sudo[@]}" apt-get update -qq && DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq swtpm swtpm-tools tpm2-tools; } >"$log" 2>&1; then
  echo "tpm/install.sh: apt-get failed; its output:" >&2
  cat "$log" >&2
  rm -f "$log"
  exit 1
fi
rm -f "$log"
echo "tpm/install.sh: done in $((SECONDS - started)) s"
