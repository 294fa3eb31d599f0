import { isTerminal } from '../../functions/domain/scheduling/task-record.js';
import { checkInvariants, completedTwice, lostTasks, type RunLedger, type StoredState } from './invariants.js';
import type { ChaosReport } from './report.js';
import { type JobKind, planJob } from './workload.js';

/** Every kind of fault a run can inject (some in one mode only). */
export const faultKinds = [
  'agent-sigkill',
  'control-plane-kill',
  'duplicate-messages',
  'network-cut',
  'garbled-answers',
  'clock-skew',
  'disk-full',
  'rogue-node',
  'kms-throttle',
  'dynamodb-throttle',
] as const;

export type FaultKind = (typeof faultKinds)[number];

export interface RunOptions {
  jobs: number;
  seed: number;
  agents: number;
  slots: number;
  /** Submissions in flight at once. */
  concurrency: number;
  /** Only these kinds of fault (default: all the mode has). */
  faultKinds?: FaultKind[];
  /** Mean pause between two faults. */
  faultEveryMs: number;
  /** At least this long between two control plane restarts. */
  controlPlaneRestartEveryMs: number;
  /** How long the backlog may take to drain once faults stop, before what is left counts as lost. */
  drainTimeoutMs: number;
  /**
   * The longest the fault phase may run (not in a soak) before the run heals and drains anyway, so
   * a run whose tasks are stuck ends with a report of them instead of hanging. Default: {@link
   * defaultFaultPhaseLimitMs}.
   */
  faultPhaseLimitMs?: number;
  progressEveryMs: number;
  /** Soak: submit (at `soakRatePerSecond`) and inject until `stop` aborts. */
  soak?: boolean;
  soakRatePerSecond?: number;
  stop?: AbortSignal;
  keepData?: boolean;
  onProgress?: (line: string) => void;
  log?: (line: string) => void;
}

/**
 * Generous: 100 jobs under constant faults took 484 s on a loaded 2-core machine
 * (docs/reliability.md). The limit catches a run that cannot end, not a slow one.
 */
export function defaultFaultPhaseLimitMs(jobs: number): number {
  return 120_000 + jobs * 5_000;
}

const abruptExitCleanups: (() => void)[] = [];
let exitHookInstalled = false;

/**
 * Registers a synchronous clean-up (kill a process group, unmount, remove a dir) for when the
 * harness exits without unwinding: a second Ctrl-C, SIGTERM, a crash. They run last-registered
 * first on the process's 'exit'. Returns the function that unregisters it, for the orderly path.
 */
export function onAbruptExit(cleanup: () => void): () => void {
  if (!exitHookInstalled) process.on('exit', runAbruptExitCleanups);
  exitHookInstalled = true;
  abruptExitCleanups.push(cleanup);
  return () => {
    const i = abruptExitCleanups.indexOf(cleanup);
    if (i >= 0) abruptExitCleanups.splice(i, 1);
  };
}

function runAbruptExitCleanups(): void {
  for (const cleanup of abruptExitCleanups.splice(0).reverse()) {
    try {
      cleanup();
    } catch {
      // the rest must still run
    }
  }
}

/** mulberry32: a small seeded generator, so a failing run can be replayed with its seed. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export class FaultCounter {
  readonly counts: Record<string, number> = {};
  add(kind: FaultKind, n = 1): void {
    if (n > 0) this.counts[kind] = (this.counts[kind] ?? 0) + n;
  }
  get total(): number {
    return Object.values(this.counts).reduce((a, b) => a + b, 0);
  }
  describe(): string {
    return Object.entries(this.counts)
      .map(([k, n]) => `${k} ${n}`)
      .join(', ');
  }
}

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Whether a 5xx answer is a defect. A 503 with Retry-After is the documented answer when a
 * dependency is throttling or unavailable past its retries (DependencyUnavailableError,
 * ContentionError): retryable, nothing changed, allowed while the run throttles DynamoDB or KMS.
 * Any other 5xx (a 500 above all) is a defect.
 */
export function isServerDefect(status: number, retryAfter: string | null): boolean {
  return status >= 500 && !(status === 503 && retryAfter !== null);
}

/**
 * The application side of a run: submits the planned jobs with idempotency keys, retrying each
 * (same key) through outages until the control plane acknowledges it, and cancels the jobs meant
 * to be cancelled. What it got acknowledged is the ledger the invariant checker holds the state to.
 */
export class Submitter {
  readonly accepted = new Map<string, { tasks: number }>();
  readonly kinds = new Map<string, JobKind>();
  /** 5xx answers that are defects ({@link isServerDefect}). */
  readonly serverErrors: string[] = [];
  /** 503 answers with Retry-After: a dependency throttled past its retries; retried, not a defect. */
  unavailable = 0;
  private next = 0;
  private stopped = false;
  private readonly runId = Math.random().toString(36).slice(2, 8);
  private readonly cancels = new Set<Promise<void>>();

  constructor(
    private readonly url: () => string,
    private readonly apiKey: () => string,
    private readonly options: RunOptions,
    private readonly random: () => number,
  ) {}

  get acceptedCount(): number {
    return this.accepted.size;
  }

  acceptedIds(): string[] {
    return [...this.accepted.keys()];
  }

  ledger(leaseMs: number): RunLedger {
    // A lease may stand past its expiry for the reaper's hold after a restart (one lease), the
    // restart itself, and a loaded machine's scheduling delays.
    return { accepted: this.accepted, quiesced: false, leaseSlackMs: 2 * leaseMs + 10_000 };
  }

  stop(): void {
    this.stopped = true;
  }

  async run(): Promise<void> {
    const started = Date.now();
    const worker = async () => {
      for (;;) {
        if (this.stopped) return;
        if (!this.options.soak && this.next >= this.options.jobs) return;
        if (this.options.soak) {
          // Paced: the soak measures a steady state, not a backlog that grows without end.
          const due = started + (this.next / (this.options.soakRatePerSecond ?? 5)) * 1000;
          if (due > Date.now()) await pause(due - Date.now());
        }
        const i = this.next++;
        await this.submit(i);
      }
    };
    await Promise.all(Array.from({ length: this.options.concurrency }, worker));
    await Promise.all(this.cancels);
  }

  private async submit(i: number): Promise<void> {
    const planned = planJob(this.runId, i);
    for (let tries = 0; ; tries++) {
      try {
        const r = await fetch(`${this.url()}/v1/jobs`, {
          method: 'POST',
          headers: {
            authorization: `Bearer ${this.apiKey()}`,
            'content-type': 'application/json',
            'idempotency-key': planned.idempotencyKey,
          },
          body: JSON.stringify(planned.spec),
          signal: AbortSignal.timeout(30_000),
        });
        const text = await r.text();
        if (r.ok) {
          const job = JSON.parse(text) as { id: string; tasks: unknown[] };
          this.accepted.set(job.id, { tasks: job.tasks.length });
          this.kinds.set(job.id, planned.kind);
          if (planned.kind === 'cancelled') this.track(this.cancel(job.id));
          return;
        }
        if (isServerDefect(r.status, r.headers.get('retry-after')))
          this.serverErrors.push(`POST /v1/jobs: ${r.status} ${text.slice(0, 300)}`);
        else if (r.status === 503) this.unavailable++;
        else if (r.status !== 429) throw new Error(`job ${i} refused: ${r.status} ${text}`);
      } catch (error) {
        if (error instanceof Error && error.message.startsWith(`job ${i} refused`)) throw error;
        // The control plane is down or the answer was lost: the same key again finds the same job.
      }
      if (this.stopped && tries > 200) return;
      await pause(200 + this.random() * 300);
    }
  }

  private track(p: Promise<void>): void {
    this.cancels.add(p);
    void p.finally(() => this.cancels.delete(p));
  }

  private async cancel(jobId: string): Promise<void> {
    await pause(300 + this.random() * 2000);
    for (let tries = 0; tries < 200; tries++) {
      try {
        const r = await fetch(`${this.url()}/v1/jobs/${jobId}/cancel`, {
          method: 'POST',
          headers: { authorization: `Bearer ${this.apiKey()}` },
          signal: AbortSignal.timeout(30_000),
        });
        const text = await r.text();
        if (r.ok || r.status === 409) return;
        if (isServerDefect(r.status, r.headers.get('retry-after')))
          this.serverErrors.push(`POST cancel: ${r.status} ${text.slice(0, 300)}`);
        else if (r.status === 503) this.unavailable++;
      } catch {
        // down: again
      }
      await pause(300);
    }
  }
}

/** Waits until no task is open (or the drain timeout); returns how long that took. */
export async function untilQuiet(
  openTasks: () => number | Promise<number>,
  options: RunOptions,
  onTick: () => void,
): Promise<number> {
  const started = Date.now();
  let tickAt = Date.now();
  for (;;) {
    let open = 1;
    try {
      open = await openTasks();
    } catch {
      // being written: again
    }
    if (open === 0) return Date.now() - started;
    if (Date.now() - started > options.drainTimeoutMs) return Date.now() - started;
    if (Date.now() - tickAt > options.progressEveryMs) {
      tickAt = Date.now();
      onTick();
    }
    await pause(250);
  }
}

export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;
}

/** The report of a finished run, from the stored state and what the clients saw. */
export function summarise(input: {
  mode: ChaosReport['mode'];
  state: StoredState;
  ledger: RunLedger;
  faults: Record<string, number>;
  startedAt: number;
  serverErrors: string[];
  /** 503s with Retry-After the clients got (allowed: a throttled dependency). */
  unavailable?: number;
  notes: string[];
  kinds: Map<string, JobKind>;
  agentExits?: string[];
}): ChaosReport {
  const { state, ledger } = input;
  const invariants = checkInvariants(state, ledger);
  const tasksByJob = new Map<string, typeof state.tasks>();
  for (const t of state.tasks) tasksByJob.set(t.jobId, [...(tasksByJob.get(t.jobId) ?? []), t]);
  const outcomes = { completed: 0, failed: 0, cancelled: 0 };
  const byKind: Record<string, Record<string, number>> = {};
  const latencies: number[] = [];
  for (const job of state.jobs) {
    if (!ledger.accepted.has(job.id)) continue;
    const tasks = tasksByJob.get(job.id) ?? [];
    if (!tasks.every((t) => isTerminal(t.state))) continue;
    const outcome = tasks.some((t) => t.state === 'failed')
      ? 'failed'
      : tasks.some((t) => t.state === 'cancelled')
        ? 'cancelled'
        : 'completed';
    outcomes[outcome]++;
    const kind = input.kinds.get(job.id) ?? 'other';
    byKind[kind] = { ...byKind[kind], [outcome]: (byKind[kind]?.[outcome] ?? 0) + 1 };
    latencies.push(Math.max(...tasks.map((t) => t.updatedAt)) - job.createdAt);
  }
  latencies.sort((a, b) => a - b);
  const durationMs = Date.now() - input.startedAt;
  const ended = state.tasks.filter((t) => ledger.accepted.has(t.jobId) && isTerminal(t.state)).length;
  return {
    mode: input.mode,
    jobs: ledger.accepted.size,
    tasks: [...ledger.accepted.values()].reduce((n, j) => n + j.tasks, 0),
    ...outcomes,
    lost: lostTasks(state, ledger).length,
    completedTwice: completedTwice(state).length,
    faults: input.faults,
    invariantsPassed: invariants.filter((i) => i.passed).length,
    invariantsFailed: invariants.filter((i) => !i.passed).length,
    invariants,
    serverErrors: input.serverErrors,
    unavailable: input.unavailable ?? 0,
    durationMs,
    tasksPerSecond: Math.round((ended / (durationMs / 1000)) * 100) / 100,
    latencyMs: { p50: percentile(latencies, 50), p95: percentile(latencies, 95), max: latencies.at(-1) ?? 0 },
    byKind,
    notes: input.notes,
    agentExits: input.agentExits ?? [],
  };
}
