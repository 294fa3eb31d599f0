import type { Attempt, TaskResult, TaskState, TaskView } from '../../../protocol/index.js';
import { taskIdOf, terminalTaskStates } from '../../../protocol/index.js';
import type { IndexKey, IndexName, ItemKey, Write } from '../../ports/store.js';
import { isoTime, sortableTime } from '../records.js';
import type { TaskRequirements } from '../resource/fit.js';
import { jobPk } from './job-record.js';

/**
 * A task as stored: `JOB#<jobId>` / `TASK#<index, 4 digits>`. Its index keys follow its state, so
 * each index holds exactly the tasks some worker must act on:
 *
 *   queued            byPool  POOL#<pool or "unrouted"> / <queuedAt>#<taskId>   dispatch, routing
 *   assigned|running  byDue   DUE#lease  / <leaseExpiresAt>#<taskId>             reaper: lost leases
 *   reported          byDue   DUE#verify / <reportedAt + grace>#<taskId>         reaper: lost verify messages
 *   terminal          (none)
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
  updatedAt: number;
}

export const unroutedPool = 'unrouted';
export const leaseDuePk = 'DUE#lease';
export const verifyDuePk = 'DUE#verify';
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
      return { byPool: { pk: poolPk(task.pool ?? unroutedPool), sk: `${sortableTime(task.queuedAt)}#${task.id}` } };
    case 'assigned':
    case 'running':
      return { byDue: { pk: leaseDuePk, sk: `${sortableTime(task.leaseExpiresAt ?? 0)}#${task.id}` } };
    case 'reported':
      return { byDue: { pk: verifyDuePk, sk: `${sortableTime(task.updatedAt + verifyGraceMs)}#${task.id}` } };
    default:
      return {};
  }
}

export function putTask(task: TaskRecord, expectVersion: number): Write {
  return {
    kind: 'put',
    key: taskKey(task.jobId, task.index),
    data: task,
    indexes: taskIndexes(task),
    expectVersion,
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
