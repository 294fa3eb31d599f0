import { type JobSpecInput, resultHash, sha256Hex } from '../../protocol/index.js';

/**
 * The jobs a chaos run submits: tiny shell commands, so the run measures the control plane and
 * the agents, not the work. The mix has quick jobs, slow ones (running work for kills and cuts to
 * hit), jobs verified against an expected hash (a garbage result must never pass), jobs that
 * always fail (the retry budget must end them), and jobs the client cancels mid-flight.
 */
export type JobKind = 'quick' | 'slow' | 'expected-hash' | 'always-fails' | 'cancelled';

export interface PlannedJob {
  kind: JobKind;
  spec: JobSpecInput;
  idempotencyKey: string;
}

const fixedOutput = 'chaos fixed output\n';
/** What an expected-hash job's every task prints, hashed as the agent hashes stdout. */
export const fixedOutputHash = resultHash([
  { name: 'stdout', sha256: sha256Hex(fixedOutput), bytes: Buffer.byteLength(fixedOutput) },
]);

const echo = 'echo "chaos $GPUAI_JOB_ID $GPUAI_TASK_INDEX"';
/** Also written to a file: a node whose disk is full fails the attempt, as a real job's output would. */
const echoToFile = `${echo} | tee "$GPUAI_OUTPUT_DIR/out.txt"`;
/**
 * A secret for the slow and cancelled jobs: their env is sealed under a data key (KMS in the cloud),
 * unwrapped at each claim and sealed to the node, so KMS is on the path of every claim of theirs.
 */
const secretEnv = { CHAOS_TOKEN: 'sealed-to-one-node' };
/** Enough retries that kills, cuts and a rogue node rarely exhaust the budget of a job that should succeed. */
const retries = 6;

const kinds: readonly JobKind[] = [
  'quick',
  'quick',
  'quick',
  'quick',
  'slow',
  'expected-hash',
  'quick',
  'always-fails',
  'expected-hash',
  'cancelled',
];

export function planJob(runId: string, i: number): PlannedJob {
  const kind = kinds[i % kinds.length] as JobKind;
  const idempotencyKey = `chaos-${runId}-${i}`;
  const name = `chaos-${i}-${kind}`;
  switch (kind) {
    case 'quick':
      return {
        kind,
        idempotencyKey,
        spec: { name, command: ['sh', '-c', echoToFile], tasks: 1 + (i % 3 === 0 ? 1 : 0), retries },
      };
    case 'slow':
      return {
        kind,
        idempotencyKey,
        spec: { name, command: ['sh', '-c', `sleep 1.5; ${echo}`], tasks: 1, retries, env: secretEnv },
      };
    case 'expected-hash':
      return {
        kind,
        idempotencyKey,
        spec: {
          name,
          command: ['sh', '-c', `printf '${fixedOutput.replace('\n', '\\n')}'`],
          tasks: 1 + (i % 2),
          retries,
          verification: { mode: 'expected-hash', sha256: fixedOutputHash },
        },
      };
    case 'always-fails':
      // Verified against a hash too: a rogue node's made-up success must not pass for it either.
      return {
        kind,
        idempotencyKey,
        spec: {
          name,
          command: ['sh', '-c', 'echo failing >&2; exit 7'],
          tasks: 1,
          retries: 1,
          verification: { mode: 'expected-hash', sha256: fixedOutputHash },
        },
      };
    case 'cancelled':
      return {
        kind,
        idempotencyKey,
        spec: { name, command: ['sh', '-c', `sleep 3; ${echo}`], tasks: 2, retries, env: secretEnv },
      };
  }
}
