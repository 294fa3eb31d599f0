import { parseArgs } from 'node:util';
import { runEmbeddedChaos } from './embedded-run.js';
import { jsonLine, table } from './report.js';
import { type FaultKind, faultKinds, type RunOptions } from './run-core.js';

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
  --fault-limit <s>    the longest the fault phase may run before the run heals, drains and
                       checks anyway, so stuck tasks end in the report instead of a hang
                       (default 120 + 5 per job; not with --soak)
  --faults <k,k,..>    only these fault kinds: agent-sigkill, control-plane-kill (embedded only),
                       duplicate-messages, network-cut, garbled-answers, clock-skew, disk-full,
                       rogue-node; cloud only: kms-throttle, dynamodb-throttle. clock-skew and
                       rogue-node run throughout (they are counted, not scheduled). None: --faults ''
  --keep-data          keep the data dirs (the SQLite file) for a post-mortem
  --help               this text

Ctrl-C or SIGTERM heals the faults, drains the backlog, checks and prints the report (marked
interrupted unless it ends a soak); a second one kills everything, cleans up and exits 130.

Faults (embedded): agents SIGKILLed and restarted, the control plane kill -9'd and restarted,
queue messages delivered twice and out of order, an agent's network cut for longer than its
lease, garbled and 5xx answers to an agent, agents with clocks skewed +-30 s, an agent's disk
filled (a small tmpfs; needs root), a rogue node posting malformed and mismatched reports.

Faults (--cloud): the same on the agents (kill, network cut, garbled answers, skewed clocks,
full disk) and the rogue node; SQS batches delivered twice in reverse order and stale triggers
sent to the queues; bursts of throttled DynamoDB and KMS requests (ThrottlingException,
ProvisionedThroughputExceeded, RequestLimitExceeded, LimitExceededException, 500s). A 503 with
Retry-After is the control plane's allowed answer to a throttle; any other 5xx is a defect.`;

// Bad arguments get one line and the way to the help, not a stack trace.
const { values } = (() => {
  try {
    return parseArgs({
      options: {
        quick: { type: 'boolean' },
        soak: { type: 'boolean' },
        cloud: { type: 'boolean' },
        jobs: { type: 'string' },
        agents: { type: 'string' },
        slots: { type: 'string' },
        seed: { type: 'string' },
        'fault-every': { type: 'string' },
        'fault-limit': { type: 'string' },
        rate: { type: 'string' },
        interval: { type: 'string' },
        'keep-data': { type: 'boolean' },
        faults: { type: 'string' },
        dispatch: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
    });
  } catch (error) {
    return usageError((error instanceof Error ? error.message : String(error)).replaceAll('\n', ' '));
  }
})();

function usageError(message: string): never {
  process.stderr.write(`chaos: ${message}\nRun npm run chaos -- --help for the options.\n`);
  process.exit(2);
}

if (values.help) {
  process.stdout.write(`${help}\n`);
  process.exit(0);
}

const int = (name: string, text: string | undefined, fallback: number): number => {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (text.trim() === '' || !Number.isSafeInteger(n) || n < 0)
    usageError(`--${name} must be a whole number, got '${text}'`);
  return n;
};

if (values.cloud && values.soak) usageError('--soak runs on the embedded deployment only');
if (values.dispatch !== undefined && values.dispatch !== 'long-poll' && values.dispatch !== 'sqs')
  usageError(`--dispatch must be long-poll or sqs, got '${values.dispatch}'`);
const chosenFaults = values.faults
  ?.split(',')
  .map((k) => k.trim())
  .filter((k) => k !== '');
const unknownFaults = chosenFaults?.filter((k) => !(faultKinds as readonly string[]).includes(k)) ?? [];
if (unknownFaults.length > 0)
  usageError(`unknown fault kind ${unknownFaults.join(', ')}; the kinds are ${faultKinds.join(', ')}`);

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
  ...(values['fault-limit'] === undefined
    ? {}
    : { faultPhaseLimitMs: int('fault-limit', values['fault-limit'], 0) * 1000 }),
  progressEveryMs: values.soak ? int('interval', values.interval, 30) * 1000 : 10_000,
  soak: values.soak ?? false,
  soakRatePerSecond: int('rate', values.rate, 5),
  stop: stop.signal,
  keepData: values['keep-data'] ?? false,
  ...(chosenFaults === undefined ? {} : { faultKinds: chosenFaults as FaultKind[] }),
  onProgress: (line) => process.stderr.write(`${line}\n`),
  log: (line) => process.stderr.write(`${line}\n`),
};

// The control plane and agents run in their own process groups (embedded-cluster.ts), so the
// terminal's Ctrl-C reaches this process alone and the cluster stays up to drain. A second signal
// exits at once: the onAbruptExit hooks (run-core.ts) kill the cluster, unmount and remove the data.
// One Ctrl-C can arrive more than once: the terminal signals npm, sh, tsx and this process alike,
// and npm and tsx relay it too. A repeat within a couple of seconds is the same Ctrl-C.
let firstSignalAt = 0;
const onSignal = (signal: NodeJS.Signals) => {
  if (stop.signal.aborted) {
    if (Date.now() - firstSignalAt < 2000) return;
    process.stderr.write(`${signal} again: killing the cluster and quitting\n`);
    process.exit(130);
  }
  firstSignalAt = Date.now();
  process.stderr.write(`${signal}: healing faults and draining the backlog (again to quit now)\n`);
  stop.abort();
};
process.on('SIGINT', onSignal);
process.on('SIGTERM', onSignal);

process.stderr.write(
  `chaos: ${values.soak ? 'soak' : `${jobs} jobs`}, ${values.cloud ? 'cloud' : 'embedded'}, ${options.agents} agents x ${options.slots} slots, seed ${seed}\n`,
);
const report = values.cloud ? await runCloud(options) : await runEmbeddedChaos(options);
if (stop.signal.aborted && !values.soak) report.interrupted = true;
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
