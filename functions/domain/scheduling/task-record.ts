import type { Attempt, TaskResult, TaskView } from '../../../protocol/index.js';
import { TaskState, taskIdOf, terminalTaskStates } from '../../../protocol/index.js';
import type { IndexKey, IndexName, ItemKey, Write } from '../../ports/store.js';
import { isoTime, sortableTime } from '../records.js';
import type { TaskRequirements } from '../resource/fit.js';
import { taskPoolDelta } from '../resource/pool-summary.js';
import { shardedPk } from '../shards.js';
import { jobCounterKey, jobPk } from './job-record.js';

/**
 * A task as stored: `JOB#<jobId>` / `TASK#<index, 4 digits>`. Its index keys follow its state, so
 * each index holds exactly the tasks some worker must act on:
 *
 *   queued            byPool  POOL#<pool or "unrouted"> / <9 - priority>#<queuedAt>#<taskId>   dispatch, routing
 *   assigned|running  byDue   DUE#lease#<nn>  / <leaseExpiresAt>#<taskId>                      reaper: lost leases
 *   reported          byDue   DUE#verify#<nn> / <reportedAt + grace>#<taskId>                  reaper: lost verify messages
 *   terminal          (none)
 *
 * A pool's queue reads highest priority first, oldest first within a priority. The due keys are
 * sharded by task id (`<nn>`, see shards.ts): at 100,000 nodes every lease extension writes one,
 * far beyond what one DynamoDB partition takes; the reaper sweeps every shard.
 */
export interface TaskRecord {
  id: string;
  jobId: string;
  index: number;
  taskCount: number;
  state: TaskState;
  /** Attempts started so far; the current attempt number is the lease token. */
  attempt: number;
  /** Attempts that count against the retry budget (released attempts only past their allowance). */
  failedAttempts: number;
  /** Attempts handed back by their node (or by the dispatcher); absent on records written before it was counted. */
  releases?: number;
  maxAttempts: number;
  requirements: TaskRequirements;
  timeoutSeconds: number;
  deadline?: number;
  pool?: string;
  nodeId?: string;
  gpuIndices?: number[];
  leaseExpiresAt?: number;
  /** When the current attempt outruns `timeoutSeconds` (its claim + the timeout): no lease reaches past it and a grace. */
  timeoutAt?: number;
  progress?: { percent?: number; message?: string; logTail?: string; updatedAt: number };
  result?: TaskResult;
  error?: { code: string; message: string };
  /** The first and the latest attempts; those between them are dropped and counted in `attemptsDropped`. */
  attempts: Attempt[];
  attemptsDropped?: number;
  queuedAt: number;
  /** When the reaper last re-published this queued task's work hint (see `hintRedriveMs`). */
  hintedAt?: number;
  /**
   * Nodes on which an attempt of this task failed (counted failures: errors, lost leases,
   * rejected results), the latest last and at most `maxAvoidNodes` (task-machine.ts): dispatch
   * offers the retry to other nodes first (dispatcher.ts).
   */
  avoidNodes?: string[];
  updatedAt: number;
  /** 0-9, higher runs first within a pool; absent: {@link defaultPriority}. */
  priority?: number;
  /** Who submitted the job (its owner), for fair share between tenants. */
  tenant?: string;
  /** Set on the tasks of a gang job (`JobSpec.gang`): how many start together (gang.ts). */
  gangSize?: number;
  /** The job's workload class (performance.ts `workloadOf`): routing predicts its run time per pool. */
  workload?: string;
  /**
   * The pool whose summary counts this task as queued (see pool-summary.ts); written only by
   * {@link putTask}, which moves the count when the task leaves the queue or changes pool.
   */
  countedIn?: string;
  /**
   * The state its job's counters ({@link JobTaskCounters}) count it in, and whether they count it
   * as started; written only by {@link putTask}. Absent on tasks stored before the counters, whose
   * jobs are listed the old way.
   */
  countedState?: TaskState;
  countedStarted?: boolean;
}

export const unroutedPool = 'unrouted';
/** The prefix of the lease due keys' shards: `DUE#lease#<nn>` (see {@link leaseDueShard}). */
export const leaseDuePk = 'DUE#lease';
/** The prefix of the verify due keys' shards: `DUE#verify#<nn>`. */
export const verifyDuePk = 'DUE#verify';
export const defaultPriority = 5;
export const maxPriority = 9;
/** The shard of the lease due list holding task `taskId`. */
export const leaseDueShard = (taskId: string): string => shardedPk(leaseDuePk, taskId);
/** The shard of the verify due list holding task `taskId`. */
export const verifyDueShard = (taskId: string): string => shardedPk(verifyDuePk, taskId);

/** A task's priority as its queue orders it: an integer 0-9, {@link defaultPriority} when absent. */
export function priorityOf(task: Pick<TaskRecord, 'priority'>): number {
  const priority = Math.trunc(task.priority ?? defaultPriority);
  return Number.isFinite(priority) ? Math.min(maxPriority, Math.max(0, priority)) : defaultPriority;
}

/** A queued task's byPool sort key: `<9 - priority>#<queuedAt>#<taskId>`, so the highest priority, then the oldest, comes first. */
export const poolQueueSk = (task: Pick<TaskRecord, 'priority' | 'queuedAt' | 'id'>): string =>
  `${maxPriority - priorityOf(task)}#${sortableTime(task.queuedAt)}#${task.id}`;
/** How long a reported task waits for its verify message before the reaper verifies it. */
export const verifyGraceMs = 10_000;

export const poolPk = (pool: string): string => `POOL#${pool}`;
export const taskKey = (jobId: string, index: number): ItemKey => ({
  pk: jobPk(jobId),
  sk: `TASK#${String(index).padStart(4, '0')}`,
});

export function taskIndexes(task: TaskRecord): Partial<Record<IndexName, IndexKey>> {
  switch (task.state) {
    case 'queued':
      return { byPool: { pk: poolPk(task.pool ?? unroutedPool), sk: poolQueueSk(task) } };
    case 'assigned':
    case 'running':
      return { byDue: { pk: leaseDueShard(task.id), sk: `${sortableTime(task.leaseExpiresAt ?? 0)}#${task.id}` } };
    case 'reported':
      return {
        byDue: { pk: verifyDueShard(task.id), sk: `${sortableTime(task.updatedAt + verifyGraceMs)}#${task.id}` },
      };
    default:
      return {};
  }
}

/** The pool whose summary should count the task as queued: its pool while it is queued and routed. */
export function countingPool(task: TaskRecord): string | undefined {
  return task.state === 'queued' ? task.pool : undefined;
}

/**
 * The writes that store `task`: its put, plus the `add`s that keep the pool summaries' `queued`
 * counters true. `countedIn` says which pool counts the task now; when another pool (or none)
 * should, the old one gets -1, the new one +1, and the stored record names the new one. The
 * deltas go to a counter shard chosen by the task's id (round-robin over a job's tasks, see
 * `taskPoolDelta`), never one per job: the claims of one big job's tasks by many nodes at once
 * then write different items (DynamoDB cancels concurrent
 * transactions that touch one item), and a transaction moving many tasks (cancel, a deadline)
 * writes at most one add per shard and pool. It sets `task.countedIn` to the pool now counting it.
 */
export function putTask(task: TaskRecord, expectVersion: number): Write[] {
  const target = countingPool(task);
  const writes: Write[] = [
    { kind: 'put', key: taskKey(task.jobId, task.index), data: task, indexes: taskIndexes(task), expectVersion },
  ];
  // The counters are set on the record itself, so a caller that keeps it holds what was stored
  // and a later putTask from it does not count the task twice.
  if (target !== task.countedIn) {
    if (task.countedIn !== undefined) writes.push(taskPoolDelta(task.countedIn, task, { queued: -1 }));
    if (target !== undefined) writes.push(taskPoolDelta(target, task, { queued: 1 }));
    if (target === undefined) delete task.countedIn;
    else task.countedIn = target;
  }
  const jobCounts = jobCountersDelta(task, expectVersion);
  if (jobCounts !== undefined) writes.push(jobCounts);
  return writes;
}

/**
 * What a job's counter items (job-record.ts `jobCounterKey`) count of its tasks, summed by `add`
 * writes beside every task transition so that listing jobs reads nothing but the job's own index
 * entries: `tasks.<state>` tasks in each state, `tasks.started` tasks ever claimed,
 * `tasks.changedAt` when a task last changed state. Each item counts only its share of the tasks.
 */
export interface JobTaskCounters {
  counts: Record<TaskState, number>;
  started: number;
  changedAt: number | undefined;
}

const countField = (state: TaskState): string => `tasks.${state}`;

/**
 * The job's task counters summed over its counter items, or undefined when they do not count
 * every task (a job stored before them, or items missing).
 */
export function jobTaskCounters(
  items: readonly { readonly [field: string]: unknown }[],
  taskCount: number,
): JobTaskCounters | undefined {
  const sum = (field: string) =>
    items.reduce((total, item) => total + (typeof item[field] === 'number' ? (item[field] as number) : 0), 0);
  const counts = Object.fromEntries(TaskState.options.map((state) => [state, sum(countField(state))])) as Record<
    TaskState,
    number
  >;
  const counted = Object.values(counts).reduce((total, n) => total + n, 0);
  if (counted !== taskCount || Object.values(counts).some((n) => n < 0)) return undefined;
  const changes = items.map((item) => item['tasks.changedAt']).filter((at): at is number => typeof at === 'number');
  return { counts, started: sum('tasks.started'), changedAt: changes.length === 0 ? undefined : Math.max(...changes) };
}

/** The add that moves the task's job counters to what `task` is now; undefined when nothing moved. */
function jobCountersDelta(task: TaskRecord, expectVersion: number): Write | undefined {
  // A task stored before the counters was never counted: counting it now would count it half.
  if (task.countedState === undefined && expectVersion > 0) return undefined;
  const fields: Record<string, number> = {};
  if (task.countedState !== task.state) {
    if (task.countedState !== undefined) fields[countField(task.countedState)] = -1;
    fields[countField(task.state)] = 1;
    task.countedState = task.state;
  }
  const started = task.attempt > 0;
  if (started !== (task.countedStarted ?? false)) {
    fields['tasks.started'] = started ? 1 : -1;
    task.countedStarted = started;
  }
  if (Object.keys(fields).length === 0) return undefined;
  return {
    kind: 'add',
    key: jobCounterKey(task.jobId, task.taskCount, task.index),
    fields,
    set: { 'tasks.changedAt': task.updatedAt },
  };
}

export function newTaskRecord(
  jobId: string,
  index: number,
  taskCount: number,
  maxAttempts: number,
  requirements: TaskRequirements,
  timeoutSeconds: number,
  deadline: number | undefined,
  now: number,
): TaskRecord {
  return {
    id: taskIdOf(jobId, index),
    jobId,
    index,
    taskCount,
    state: 'queued',
    attempt: 0,
    failedAttempts: 0,
    maxAttempts,
    requirements,
    timeoutSeconds,
    ...(deadline === undefined ? {} : { deadline }),
    attempts: [],
    queuedAt: now,
    updatedAt: now,
  };
}

export const isTerminal = (state: TaskState): boolean => terminalTaskStates.includes(state);

export function toTaskView(task: TaskRecord): TaskView {
  return {
    id: task.id,
    jobId: task.jobId,
    index: task.index,
    state: task.state,
    attempt: task.attempt,
    maxAttempts: task.maxAttempts,
    ...(task.pool === undefined ? {} : { pool: task.pool }),
    ...(task.nodeId === undefined ? {} : { nodeId: task.nodeId }),
    ...(task.leaseExpiresAt === undefined ? {} : { leaseExpiresAt: isoTime(task.leaseExpiresAt) }),
    ...(task.progress === undefined
      ? {}
      : { progress: { ...task.progress, updatedAt: isoTime(task.progress.updatedAt) } }),
    ...(task.result === undefined ? {} : { result: task.result }),
    ...(task.error === undefined ? {} : { error: task.error }),
    attempts: task.attempts,
    ...(task.attemptsDropped === undefined ? {} : { attemptsDropped: task.attemptsDropped }),
    queuedAt: isoTime(task.queuedAt),
    updatedAt: isoTime(task.updatedAt),
  };
}
