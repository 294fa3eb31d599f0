import type { InvariantResult } from './invariants.js';

/** The figures of one chaos run: the table `npm run chaos` prints and its one JSON line. */
export interface ChaosReport {
  mode: 'embedded' | 'cloud';
  /** Jobs accepted (acknowledged 2xx). */
  jobs: number;
  tasks: number;
  /** Jobs by outcome: every task verified / some task failed / cancelled. */
  completed: number;
  failed: number;
  cancelled: number;
  /** Accepted jobs or tasks missing or unfinished once the run quiesced (must be 0). */
  lost: number;
  /** Tasks with more than one completed attempt (must be 0). */
  completedTwice: number;
  faults: Record<string, number>;
  invariantsPassed: number;
  invariantsFailed: number;
  invariants: InvariantResult[];
  /** 5xx answers the harness, the rogue node or the agents' clients got from a live control plane. */
  serverErrors: string[];
  /** 503s with Retry-After (a dependency throttled past its retries): retried, not defects. */
  unavailable: number;
  durationMs: number;
  tasksPerSecond: number;
  /** Submission to the last task's end, per job. */
  latencyMs: { p50: number; p95: number; max: number };
  /** Outcomes per kind of job (workload.ts), e.g. `quick: 120 completed, 1 failed`. */
  byKind: Record<string, Record<string, number>>;
  notes: string[];
  /** Agents that exited on their own (not killed by the run): each is a defect. */
  agentExits: string[];
  /** Stopped by Ctrl-C or SIGTERM before its planned end (a soak's Ctrl-C is its planned end). */
  interrupted?: boolean;
}

/** The figures as one JSON line (the last line `npm run chaos` prints). */
export function jsonLine(r: ChaosReport): string {
  return JSON.stringify({
    mode: r.mode,
    jobs: r.jobs,
    tasks: r.tasks,
    completed: r.completed,
    failed: r.failed,
    cancelled: r.cancelled,
    faults: r.faults,
    lost: r.lost,
    completedTwice: r.completedTwice,
    invariantsPassed: r.invariantsPassed,
    invariantsFailed: r.invariantsFailed,
    serverErrors: r.serverErrors.length,
    unavailable: r.unavailable,
    agentExits: r.agentExits.length,
    durationMs: r.durationMs,
    tasksPerSecond: r.tasksPerSecond,
    latencyMs: r.latencyMs,
    ...(r.interrupted ? { interrupted: true } : {}),
  });
}

/** A table for people: faults by kind, the job figures, each invariant. */
export function table(r: ChaosReport): string {
  const rows: [string, string][] = [
    ['mode', r.interrupted ? `${r.mode} (interrupted: healed and drained early)` : r.mode],
    ...Object.entries(r.faults).map(([k, n]): [string, string] => [`fault: ${k}`, String(n)]),
    ['faults injected', String(Object.values(r.faults).reduce((a, b) => a + b, 0))],
    ['jobs accepted', String(r.jobs)],
    ['tasks', String(r.tasks)],
    ['jobs completed', String(r.completed)],
    ['jobs failed', String(r.failed)],
    ['jobs cancelled', String(r.cancelled)],
    ['lost (must be 0)', String(r.lost)],
    ['completed twice (must be 0)', String(r.completedTwice)],
    ...r.invariants.map((i): [string, string] => [
      `invariant: ${i.name}`,
      i.passed ? 'passed' : `FAILED (${i.violations})`,
    ]),
    ['invariant checks passed', `${r.invariantsPassed} of ${r.invariantsPassed + r.invariantsFailed}`],
    ['5xx answers (defects)', String(r.serverErrors.length)],
    ['503 + Retry-After (throttled, retried)', String(r.unavailable)],
    ['agents that gave up', String(r.agentExits.length)],
    ['duration', `${(r.durationMs / 1000).toFixed(1)} s`],
    ['tasks per second', r.tasksPerSecond.toFixed(2)],
    ['job latency p50 / p95 / max', `${r.latencyMs.p50} / ${r.latencyMs.p95} / ${r.latencyMs.max} ms`],
    ...Object.entries(r.byKind).map(([k, o]): [string, string] => [
      `jobs: ${k}`,
      Object.entries(o)
        .map(([outcome, n]) => `${n} ${outcome}`)
        .join(', '),
    ]),
  ];
  const width = Math.max(...rows.map(([k]) => k.length));
  const lines = rows.map(([k, v]) => `${k.padEnd(width)}  ${v}`);
  for (const i of r.invariants.filter((x) => !x.passed)) lines.push(`  ${i.name}: ${i.examples.join('; ')}`);
  for (const e of r.serverErrors.slice(0, 5)) lines.push(`  5xx: ${e}`);
  for (const e of r.agentExits.slice(0, 3)) lines.push(`  agent exit: ${e.slice(-1500)}`);
  for (const n of r.notes) lines.push(`note: ${n}`);
  return `${lines.join('\n')}\n`;
}
