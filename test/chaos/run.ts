import { parseArgs } from 'node:util';
import { runEmbeddedChaos } from './embedded-run.js';
import { jsonLine, table } from './report.js';
import type { FaultKind, RunOptions } from './run-core.js';

/**
 * `npm run chaos`: a chaos run with its table and one JSON line; exits 1 when anything was lost,
 * completed twice, or an invariant failed. See --help.
 */

const help = `Usage: npm run chaos -- [options]

Runs jobs through a control plane and agents while injecting faults, then checks the
invariants over the whole stored state (test/chaos/invariants.ts) and prints a table
and one line of JSON. Exit status 1 if a job was lost or completed twice or an invariant
failed.

Modes:
  (default)            10,000 jobs on the embedded deployment (control plane and agents as
                       real processes; takes a while: progress every 10 s)
  --quick              a CI-sized run: 200 jobs
  --soak               runs until Ctrl-C, submitting --rate jobs/s; prints throughput, latency
                       and the invariants every --interval seconds, then drains and checks
  --cloud              the cloud deployment over the emulators (moto + local-kms, installed into
                       .tools/ on first use): the Lambda handlers in-process, real agent
                       processes, DynamoDB and KMS throttled at random; invariants over a scan
                       of the DynamoDB table (not with --soak)

Options:
  --jobs <n>           jobs to submit (default 10000; --quick 200)
  --agents <n>         agent processes (default 5)
  --slots <n>          tasks each agent runs at once (default 2)
  --seed <n>           seed of the fault schedule (default: random; printed)
  --fault-every <ms>   mean pause between faults (default 1500)
  --dispatch <mode>    --cloud: how agents learn of work, long-poll (default) or sqs
  --rate <n>           --soak: jobs submitted per second (default 5)
  --interval <s>       --soak: seconds between reports (default 30)
  --faults <k,k,..>    only these fault kinds (agent-sigkill, control-plane-kill (embedded only),
                       duplicate-messages, network-cut, garbled-answers, disk-full; cloud only:
                       kms-throttle, dynamodb-throttle); none: --faults ''
  --keep-data          keep the data dirs (the SQLite file) for a post-mortem
  --help               this text

Faults (embedded): agents SIGKILLed and restarted, the control plane kill -9'd and restarted,
queue messages delivered twice and out of order, an agent's network cut for longer than its
lease, garbled and 5xx answers to an agent, agents with clocks skewed +-30 s, an agent's disk
filled (a small tmpfs; needs root), a rogue node posting malformed and mismatched reports.

Faults (--cloud): the same on the agents (kill, network cut, garbled answers, skewed clocks,
full disk) and the rogue node; SQS batches delivered twice in reverse order and stale triggers
sent to the queues; bursts of throttled DynamoDB and KMS requests (ThrottlingException,
ProvisionedThroughputExceeded, RequestLimitExceeded, LimitExceededException, 500s). A 503 with
Retry-After is the control plane's allowed answer to a throttle; any other 5xx is a defect.`;

const { values } = parseArgs({
  options: {
    quick: { type: 'boolean' },
    soak: { type: 'boolean' },
    cloud: { type: 'boolean' },
    jobs: { type: 'string' },
    agents: { type: 'string' },
    slots: { type: 'string' },
    seed: { type: 'string' },
    'fault-every': { type: 'string' },
    rate: { type: 'string' },
    interval: { type: 'string' },
    'keep-data': { type: 'boolean' },
    faults: { type: 'string' },
    dispatch: { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  },
  strict: true,
});

if (values.help) {
  process.stdout.write(`${help}\n`);
  process.exit(0);
}

const int = (name: string, text: string | undefined, fallback: number): number => {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!Number.isSafeInteger(n) || n < 0) {
    process.stderr.write(`chaos: --${name} must be a whole number, got '${text}'\n`);
    process.exit(2);
  }
  return n;
};

if (values.cloud && values.soak) {
  process.stderr.write('chaos: --soak runs on the embedded deployment only\n');
  process.exit(2);
}
if (values.dispatch !== undefined && values.dispatch !== 'long-poll' && values.dispatch !== 'sqs') {
  process.stderr.write(`chaos: --dispatch must be long-poll or sqs, got '${values.dispatch}'\n`);
  process.exit(2);
}

const seed = int('seed', values.seed, Math.floor(Math.random() * 2 ** 31));
const jobs = int('jobs', values.jobs, values.quick ? 200 : 10_000);
const stop = new AbortController();
const options: RunOptions = {
  jobs,
  seed,
  agents: int('agents', values.agents, 5),
  slots: int('slots', values.slots, 2),
  concurrency: 8,
  faultEveryMs: int('fault-every', values['fault-every'], 1500),
  controlPlaneRestartEveryMs: 15_000,
  drainTimeoutMs: 180_000,
  progressEveryMs: values.soak ? int('interval', values.interval, 30) * 1000 : 10_000,
  soak: values.soak ?? false,
  soakRatePerSecond: int('rate', values.rate, 5),
  stop: stop.signal,
  keepData: values['keep-data'] ?? false,
  ...(values.faults === undefined ? {} : { faultKinds: values.faults.split(',').map((k) => k.trim()) as FaultKind[] }),
  onProgress: (line) => process.stderr.write(`${line}\n`),
  log: (line) => process.stderr.write(`${line}\n`),
};

process.on('SIGINT', () => {
  if (stop.signal.aborted) process.exit(130);
  process.stderr.write('stopping: healing faults and draining the backlog (Ctrl-C again to quit now)\n');
  stop.abort();
});

process.stderr.write(
  `chaos: ${values.soak ? 'soak' : `${jobs} jobs`}, ${values.cloud ? 'cloud' : 'embedded'}, ${options.agents} agents x ${options.slots} slots, seed ${seed}\n`,
);
const report = values.cloud ? await runCloud(options) : await runEmbeddedChaos(options);
process.stdout.write(table(report));
process.stdout.write(`${jsonLine(report)}\n`);
process.exit(report.lost === 0 && report.completedTwice === 0 && report.invariantsFailed === 0 ? 0 : 1);

/** The cloud run starts the emulators itself (in a test, the vitest global setup does). */
async function runCloud(options: RunOptions) {
  const { startEmulators } = await import('../emulators/emulators.js');
  const { runCloudChaos } = await import('./cloud-run.js');
  const emulators = await startEmulators();
  try {
    return await runCloudChaos({
      ...options,
      endpoints: emulators.endpoints,
      dispatch: (values.dispatch ?? 'long-poll') as 'long-poll' | 'sqs',
    });
  } finally {
    await emulators.stop();
  }
}
