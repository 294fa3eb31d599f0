#!/usr/bin/env bash
# The second lane: the tests of what runs on AWS Lambda (the AWS adapters, the handlers, the CDK
# app) under Node 22, Lambda's runtime, while the machine's Node is 20. SQLite's native driver is
# built for the machine's Node, so the embedded tests stay in the first lane.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
node22="$(bash "$root/test/node22/install.sh")"
echo "node22 lane: $("$node22" --version)"
cd "$root"
# Left out: what does not change with the Node that runs it. The cloud chaos run drives the
# handlers in-process but spends its time in agent processes and moto; the IaC linters read the
# synthesized template (Python tools); the agent's SQS work source is tested beside an embedded
# (SQLite) control plane, whose native driver is built for the machine's Node.
exec "$node22" node_modules/vitest/vitest.mjs run --project lambda \
  --exclude 'test/chaos/**' --exclude 'test/infra/template-lint.test.ts' \
  --exclude 'test/integration/aws-agent-sqs.test.ts' "$@"
