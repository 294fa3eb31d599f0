import type { NodeRecord } from '../../functions/domain/resource/node-record.js';
import type { JobRecord } from '../../functions/domain/scheduling/job-record.js';
import {
  isTerminal,
  leaseDueShard,
  type TaskRecord,
  verifyDueShard,
} from '../../functions/domain/scheduling/task-record.js';
import { resultHash } from '../../protocol/index.js';

/**
 * The invariant checker: named checks over the whole stored state after (or during) a chaos run.
 * Each layer adds its own list to {@link invariantChecks} (the incentive layer's escrow and payout
 * checks join here when that layer exists), so one run checks everything built so far.
 */

/** What the store holds, read in one go (state.ts reads it from SQLite or DynamoDB). */
export interface StoredState {
  /** When the state was read (the control plane's clock). */
  readAt: number;
  jobs: JobRecord[];
  tasks: TaskRecord[];
  nodes: NodeRecord[];
  /** Index keys each task item carries (taskId -> index name -> partition), where the reader can see them. */
  taskIndexes?: Map<string, { byPool?: string; byDue?: string }>;
}

/** What the clients saw: the harness's side of the run. */
export interface RunLedger {
  /** Jobs whose submission was acknowledged (2xx), with the task count the client asked for. */
  accepted: Map<string, { tasks: number }>;
  /**
   * Every accepted job has had time to finish: all faults healed and the run waited for the
   * backlog. Mid-run (soak intervals) only the checks that hold at every instant apply.
   */
  quiesced: boolean;
  /**
   * How long past its expiry a lease may still stand before the reaper must have taken it back:
   * the reaper's interval, its start-up hold after a restart, and scheduling slack under load.
   */
  leaseSlackMs: number;
}

export interface InvariantCheck {
  name: string;
  /** The guarantee in one line, for reports and docs/reliability.md. */
  guarantee: string;
  check(state: StoredState, ledger: RunLedger): string[];
}

export interface InvariantResult {
  name: string;
  passed: boolean;
  /** At most a few examples; `violations` counts them all. */
  examples: string[];
  violations: number;
}

/**
 * How many attempts a task may record: every attempt that counts against the budget
 * (`maxAttempts` of them), releases (a node shutting down or failing to start the run; they count
 * against the budget past twice the budget, task-machine.ts), and the one that completes.
 */
export const attemptsBound = (maxAttempts: number): number => maxAttempts + 2 * maxAttempts + 1;

const completions = (task: TaskRecord) => task.attempts.filter((a) => a.outcome === 'completed').length;

/** Tasks reported completed more than once: the figure `completedTwice` (must be 0). */
export function completedTwice(state: StoredState): TaskRecord[] {
  return state.tasks.filter((t) => completions(t) > 1);
}

/** Accepted jobs or tasks missing, or not ended once the run quiesced: the figure `lost` (must be 0). */
export function lostTasks(state: StoredState, ledger: RunLedger): string[] {
  const byJob = groupTasks(state);
  const lost: string[] = [];
  for (const [jobId, { tasks }] of ledger.accepted) {
    const stored = byJob.get(jobId) ?? [];
    if (stored.length < tasks) lost.push(`${jobId}: ${tasks - stored.length} of ${tasks} task(s) missing`);
    if (ledger.quiesced) {
      for (const task of stored) if (!isTerminal(task.state)) lost.push(`${task.id}: still ${task.state}`);
    }
  }
  return lost;
}

export const schedulingChecks: InvariantCheck[] = [
  {
    name: 'accepted-tasks-end',
    guarantee: 'every accepted task is stored and ends completed, failed or cancelled',
    check: (state, ledger) => lostTasks(state, ledger),
  },
  {
    name: 'ends-exactly-once',
    guarantee: 'a task completes at most once; a verified task has exactly one completed attempt',
    check: (state) =>
      state.tasks.flatMap((task) => {
        const n = completions(task);
        if (n > 1) return [`${task.id}: ${n} completed attempts`];
        if (task.state === 'verified' && n !== 1) return [`${task.id}: verified with ${n} completed attempts`];
        if (task.state === 'failed' && task.error === undefined) return [`${task.id}: failed without an error`];
        return [];
      }),
  },
  {
    name: 'attempts-bounded',
    guarantee: 'attempts are numbered 1..n, n bounded by the retry budget; failures never pass the budget',
    check: (state) =>
      state.tasks.flatMap((task) => {
        const problems: string[] = [];
        const bound = attemptsBound(task.maxAttempts);
        if (task.attempts.length > bound) problems.push(`${task.id}: ${task.attempts.length} attempts > ${bound}`);
        if (task.failedAttempts > task.maxAttempts) {
          problems.push(`${task.id}: ${task.failedAttempts} failed attempts > budget ${task.maxAttempts}`);
        }
        const numbers = task.attempts.map((a) => a.number);
        // A capped history keeps the first and the last attempts: numbers rise, and the last is the current one.
        if (numbers.some((n, i) => i > 0 && n <= (numbers[i - 1] ?? 0))) {
          problems.push(`${task.id}: attempt numbers ${numbers.join(',')}`);
        }
        if (numbers.length > 0 && numbers[numbers.length - 1] !== task.attempt) {
          problems.push(`${task.id}: current attempt ${task.attempt}, last recorded ${numbers.at(-1)}`);
        }
        if (isTerminal(task.state) && task.attempts.some((a) => a.outcome === undefined)) {
          problems.push(`${task.id}: ${task.state} with an attempt never closed`);
        }
        return problems;
      }),
  },
  {
    name: 'no-lease-past-expiry',
    guarantee: 'no lease is held past its expiry (plus the reaper slack); only leased tasks hold one',
    check: (state, ledger) =>
      state.tasks.flatMap((task) => {
        const leased = task.state === 'assigned' || task.state === 'running';
        if (!leased) {
          // A reported or verified task keeps the node that ran it, but no lease.
          const stray = task.leaseExpiresAt !== undefined || (task.state === 'queued' && task.nodeId !== undefined);
          return stray ? [`${task.id}: ${task.state} but holds a lease (${task.nodeId}, ${task.leaseExpiresAt})`] : [];
        }
        if (task.leaseExpiresAt === undefined || task.nodeId === undefined)
          return [`${task.id}: leased without a lease`];
        if (ledger.quiesced) return [`${task.id}: still leased to ${task.nodeId} after the run`];
        const overdue = state.readAt - task.leaseExpiresAt;
        return overdue > ledger.leaseSlackMs ? [`${task.id}: lease of ${task.nodeId} ${overdue} ms past expiry`] : [];
      }),
  },
  {
    name: 'verified-as-asked',
    guarantee: "no result is accepted without the verification its job asked for; its hash is the outputs' hash",
    check: (state) => {
      const jobs = new Map(state.jobs.map((j) => [j.id, j]));
      return state.tasks.flatMap((task) => {
        if (task.state !== 'verified') return [];
        const result = task.result;
        if (result === undefined) return [`${task.id}: verified without a result`];
        const problems: string[] = [];
        if (result.exitCode !== 0) problems.push(`${task.id}: verified with exit code ${result.exitCode}`);
        if (resultHash(result.outputs) !== result.resultHash)
          problems.push(`${task.id}: result hash is not its outputs'`);
        const policy = jobs.get(task.jobId)?.spec.verification;
        if (policy === undefined) problems.push(`${task.id}: verified but its job is gone`);
        else if (policy.mode === 'expected-hash' && result.resultHash !== policy.sha256) {
          problems.push(`${task.id}: verified ${result.resultHash} but the job expects ${policy.sha256}`);
        }
        return problems;
      });
    },
  },
  {
    name: 'index-follows-state',
    guarantee:
      'a task is in exactly the index its state needs (queued: its pool; leased: leases due; reported: verify due; ended: none)',
    check: (state) => {
      if (state.taskIndexes === undefined) return [];
      return state.tasks.flatMap((task) => {
        const index = state.taskIndexes?.get(task.id) ?? {};
        const want = expectedIndex(task);
        const got = { byPool: index.byPool, byDue: index.byDue };
        return got.byPool === want.byPool && got.byDue === want.byDue
          ? []
          : [`${task.id}: ${task.state} in ${JSON.stringify(got)}, expected ${JSON.stringify(want)}`];
      });
    },
  },
  {
    name: 'job-matches-spec',
    guarantee: "a job's stored tasks are exactly the ones its spec asked for, no more",
    check: (state) => {
      const byJob = groupTasks(state);
      return state.jobs.flatMap((job) => {
        const n = byJob.get(job.id)?.length ?? 0;
        return n === job.spec.tasks ? [] : [`${job.id}: ${n} tasks stored, spec asks ${job.spec.tasks}`];
      });
    },
  },
];

/** Every layer's checks; a new layer appends its list here. */
export const invariantChecks: InvariantCheck[] = [...schedulingChecks];

export function checkInvariants(
  state: StoredState,
  ledger: RunLedger,
  checks: readonly InvariantCheck[] = invariantChecks,
): InvariantResult[] {
  return checks.map((c) => {
    let violations: string[];
    try {
      violations = c.check(state, ledger);
    } catch (error) {
      violations = [`the check threw: ${String(error)}`];
    }
    return {
      name: c.name,
      passed: violations.length === 0,
      examples: violations.slice(0, 5),
      violations: violations.length,
    };
  });
}

/** A readable summary of failed checks, for test failure messages. */
export function describeFailures(results: readonly InvariantResult[]): string {
  return results
    .filter((r) => !r.passed)
    .map((r) => `${r.name}: ${r.violations} violation(s), e.g.\n  ${r.examples.join('\n  ')}`)
    .join('\n');
}

function expectedIndex(task: TaskRecord): { byPool?: string; byDue?: string } {
  switch (task.state) {
    case 'queued':
      return { byPool: `POOL#${task.pool ?? 'unrouted'}` };
    case 'assigned':
    case 'running':
      return { byDue: leaseDueShard(task.id) };
    case 'reported':
      return { byDue: verifyDueShard(task.id) };
    default:
      return {};
  }
}

function groupTasks(state: StoredState): Map<string, TaskRecord[]> {
  const byJob = new Map<string, TaskRecord[]>();
  for (const task of state.tasks) byJob.set(task.jobId, [...(byJob.get(task.jobId) ?? []), task]);
  return byJob;
}
