import type {
  Attempt,
  AttemptOutcome,
  EndingReport,
  ProgressReport,
  ResultReport,
  TaskResult,
} from '../../../protocol/index.js';
import { resultHash } from '../../../protocol/index.js';
import { isoTime } from '../records.js';
import { InvalidTransitionError, LeaseLostError, ResultHashMismatchError, TaskNotAssignedError } from './errors.js';
import { isTerminal, type TaskRecord } from './task-record.js';

/**
 * The task state machine. Every function is pure: it takes a record and returns the next one,
 * or throws when the transition is not allowed; callers write the result with a conditional put
 * on the version they read, so two racing transitions cannot both land.
 *
 *              claim            first progress       result (exit 0)       verify ok
 *   queued ───────────► assigned ─────────► running ─────────► reported ─────────► verified
 *     ▲                    │                   │                  │
 *     │  lease expired,    │                   │                  │ verify rejects
 *     │  failure, exit≠0,  │                   │                  │
 *     └──── released ──────┴───────────────────┴──────────────────┘
 *           (while the retry budget lasts; then ───► failed)
 *
 *   any non-terminal state ──cancel──► cancelled      ──deadline──► failed
 *
 * A transition the state does not allow throws {@link InvalidTransitionError} (409): the caller
 * read a state that has moved on. Released attempts are free only up to {@link releaseAllowance},
 * and the history keeps {@link attemptsKept}, so no path grows a task without bound.
 *
 * A lease's timeline: claim grants `leaseMs`; every progress report and heartbeat extends it to
 * now + leaseMs; if neither arrives before it runs out, the reaper calls {@link expireLease}.
 * No extension reaches past the attempt's timeout plus a grace, so an attempt that outruns
 * `timeoutSeconds` ends even while its node keeps heartbeating:
 *
 *   claim        heartbeats extend the lease          timeoutAt         timeoutAt + grace
 *     │──lease──►──lease──►──lease──►  ...  ──lease──►    │ heartbeats: abort │ reaper: "timed out after N s"
 *     ▼                                                   ▼                   ▼
 *     ├───────────────────── timeoutSeconds ──────────────┼───── grace ───────┤
 */

export interface LeaseSettings {
  leaseMs: number;
}

/**
 * How long past its timeout an attempt keeps its lease: time for the node to stop the run (its
 * kill grace) and report how it ended, which is then accepted as usual.
 */
export const timeoutGraceMs = 60_000;

/**
 * Releases a task may have for free: a node shutting down hands its work back, which should not
 * cost the job a retry. Past twice the retry budget, handing back is what this task's nodes do
 * instead of running it (a node that claims and releases in a loop, a job whose key the
 * dispatcher cannot open for a while), so each further release counts as a failed attempt and
 * the task ends as any failing task does. With it a task has at most 3 × maxAttempts attempts.
 */
export const releaseAllowance = (maxAttempts: number): number => 2 * maxAttempts;

/** The most attempts a task can start: its budget of counted ones plus the free releases. */
export const maxAttemptsStarted = (maxAttempts: number): number => maxAttempts + releaseAllowance(maxAttempts);

/**
 * The attempt history a task keeps: the first attempt (when and where it first ran) and the
 * latest. Whatever path adds attempts, the item stays far below DynamoDB's 400 KB limit (each
 * attempt may carry a failure message of 2 KB); those dropped between are counted.
 */
export const attemptsKept = { first: 1, last: 16 } as const;

/** The invariant the cap gives: `attempts.length <= maxAttemptsKept` for every stored task. */
export const maxAttemptsKept = attemptsKept.first + attemptsKept.last;

/** The attempt has outrun its `timeoutSeconds`: its node must stop it. */
export const timedOut = (task: TaskRecord, now: number): boolean =>
  task.timeoutAt !== undefined && now >= task.timeoutAt;

/** A lease from now, never past the attempt's timeout and grace. */
function leaseUntil(task: TaskRecord, now: number, leaseMs: number): number {
  return Math.min(now + leaseMs, (task.timeoutAt ?? Number.POSITIVE_INFINITY) + timeoutGraceMs);
}

export function claim(
  task: TaskRecord,
  nodeId: string,
  gpuIndices: number[],
  gpuUuids: string[],
  now: number,
  leaseMs: number,
): TaskRecord {
  if (task.state !== 'queued') throw new InvalidTransitionError(task.id, 'claim', task.state);
  const number = task.attempt + 1;
  const { progress: _dropped, ...rest } = task;
  const timeoutAt = now + task.timeoutSeconds * 1000;
  return {
    ...rest,
    state: 'assigned',
    attempt: number,
    nodeId,
    gpuIndices,
    timeoutAt,
    leaseExpiresAt: Math.min(now + leaseMs, timeoutAt + timeoutGraceMs),
    ...withAttempt(task, {
      number,
      nodeId,
      assignedAt: isoTime(now),
      ...(gpuUuids.length > 0 ? { gpus: gpuUuids } : {}),
    }),
    updatedAt: now,
  };
}

/**
 * Checks that `nodeId` holds the lease of `attempt` now. A node that never held any attempt of
 * the task is refused outright; one whose lease moved on learns that it lost it.
 */
export function assertLease(task: TaskRecord, nodeId: string, attempt: number): void {
  if (!task.attempts.some((a) => a.nodeId === nodeId) && !wasDropped(task, attempt)) {
    throw new TaskNotAssignedError(task.id, nodeId);
  }
  if (task.state !== 'assigned' && task.state !== 'running') {
    throw new LeaseLostError(task.id, attempt, `the task is ${task.state}`);
  }
  if (task.nodeId !== nodeId || task.attempt !== attempt) {
    throw new LeaseLostError(task.id, attempt, `the task is on attempt ${task.attempt}`);
  }
}

export function recordProgress(task: TaskRecord, report: ProgressReport, now: number, leaseMs: number): TaskRecord {
  return {
    ...task,
    state: 'running',
    leaseExpiresAt: leaseUntil(task, now, leaseMs),
    progress: {
      ...(report.percent === undefined ? {} : { percent: report.percent }),
      ...(report.message === undefined ? {} : { message: report.message }),
      ...(report.logTail === undefined ? {} : { logTail: report.logTail }),
      updatedAt: now,
    },
    updatedAt: now,
  };
}

export function extendLease(task: TaskRecord, now: number, leaseMs: number): TaskRecord {
  return { ...task, leaseExpiresAt: leaseUntil(task, now, leaseMs), updatedAt: now };
}

/**
 * A finished run: exit code 0 waits for verification; any other code is a failed attempt. The
 * reported hash must be the one its outputs give, recomputed here, or nothing is recorded.
 */
export function recordResult(task: TaskRecord, report: ResultReport, now: number): TaskRecord {
  const computed = resultHash(report.outputs);
  if (computed !== report.resultHash) throw new ResultHashMismatchError(task.id, report.resultHash, computed);
  const result: TaskResult = {
    exitCode: report.exitCode,
    resultHash: report.resultHash,
    outputs: report.outputs,
    metrics: report.metrics,
    ...(report.logTail === undefined ? {} : { logTail: report.logTail }),
    reportedAt: isoTime(now),
  };
  const ending: EndingReport = { kind: 'result', exitCode: report.exitCode, resultHash: report.resultHash };
  if (report.exitCode !== 0) {
    return endAttempt({ ...task, result }, now, 'failed', `exit code ${report.exitCode}`, true, ending);
  }
  const { leaseExpiresAt: _lease, timeoutAt: _timeout, ...rest } = task;
  return {
    ...rest,
    state: 'reported',
    result,
    attempts: closeCurrentAttempt(task, now, 'completed', undefined, ending),
    updatedAt: now,
  };
}

export function recordFailure(
  task: TaskRecord,
  reason: 'error' | 'timeout' | 'released',
  message: string,
  now: number,
): TaskRecord {
  const ending: EndingReport = { kind: 'fail', reason };
  if (reason === 'released') {
    const releases = (task.releases ?? 0) + 1;
    const allowance = releaseAllowance(task.maxAttempts);
    const counts = releases > allowance;
    const detail = counts ? `released ${releases} times, ${allowance} of them free: ${message}` : message;
    return endAttempt({ ...task, releases }, now, 'released', detail, counts, ending);
  }
  return endAttempt(task, now, 'failed', `${reason}: ${message}`, true, ending);
}

/** The lease ran out: the node went silent, or the attempt outran its timeout (and grace). */
export function expireLease(task: TaskRecord, now: number): TaskRecord {
  const detail = timedOut(task, now)
    ? `timed out after ${task.timeoutSeconds} s`
    : `no heartbeat from ${task.nodeId ?? 'its node'}`;
  return endAttempt(task, now, 'lease-expired', detail, true);
}

export function markVerified(task: TaskRecord, now: number): TaskRecord {
  if (task.state !== 'reported') throw new InvalidTransitionError(task.id, 'verify', task.state);
  return { ...task, state: 'verified', updatedAt: now };
}

/** Verification refused the reported result: the attempt counts as failed and the task runs again. */
export function markRejected(task: TaskRecord, detail: string, now: number): TaskRecord {
  if (task.state !== 'reported') throw new InvalidTransitionError(task.id, 'reject', task.state);
  const attempts = task.attempts.map((a) =>
    a.number === task.attempt ? { ...a, outcome: 'rejected' as const, detail } : a,
  );
  return requeueOrFail({ ...task, attempts }, now, `verification rejected the result: ${detail}`, true);
}

/** Cancellation (by the owner) or the job's deadline ends a task that has not finished. */
export function stop(
  task: TaskRecord,
  now: number,
  state: 'cancelled' | 'failed',
  code: string,
  message: string,
): TaskRecord {
  if (isTerminal(task.state)) return task;
  const { leaseExpiresAt: _lease, timeoutAt: _timeout, ...rest } = task;
  return {
    ...rest,
    state,
    error: { code, message },
    attempts:
      task.state === 'assigned' || task.state === 'running'
        ? closeCurrentAttempt(task, now, 'cancelled', message)
        : task.attempts,
    updatedAt: now,
  };
}

function endAttempt(
  task: TaskRecord,
  now: number,
  outcome: AttemptOutcome,
  detail: string,
  countsAgainstBudget: boolean,
  report?: EndingReport,
): TaskRecord {
  return requeueOrFail(
    { ...task, attempts: closeCurrentAttempt(task, now, outcome, detail, report) },
    now,
    detail,
    countsAgainstBudget,
  );
}

/** The nodes a task's retries avoid, at most: the latest failures are the ones that say most. */
export const maxAvoidNodes = 8;

/** `avoidNodes` with `nodeId` added as the latest (moved there when listed already), cut to {@link maxAvoidNodes}. */
function avoiding(task: TaskRecord, nodeId: string | undefined): Pick<TaskRecord, 'avoidNodes'> {
  if (nodeId === undefined) return task.avoidNodes === undefined ? {} : { avoidNodes: task.avoidNodes };
  return { avoidNodes: [...(task.avoidNodes ?? []).filter((n) => n !== nodeId), nodeId].slice(-maxAvoidNodes) };
}

function requeueOrFail(ended: TaskRecord, now: number, detail: string, countsAgainstBudget: boolean): TaskRecord {
  // A counted failure marks its node: the retry goes to another node first (a release does not).
  const task = { ...ended, ...avoiding(ended, countsAgainstBudget ? ended.nodeId : undefined) };
  const failedAttempts = task.failedAttempts + (countsAgainstBudget ? 1 : 0);
  const {
    leaseExpiresAt: _lease,
    timeoutAt: _timeout,
    nodeId: _node,
    gpuIndices: _gpus,
    pool: _pool,
    progress: _progress,
    ...rest
  } = task;
  if (failedAttempts >= task.maxAttempts) {
    return {
      ...rest,
      state: 'failed',
      failedAttempts,
      error: {
        code: 'retries_exhausted',
        message: `${failedAttempts} of ${task.maxAttempts} attempts failed; last: ${detail}`,
      },
      updatedAt: now,
    };
  }
  // A queued task shows no result or error: those of failed attempts stay in their attempt's detail.
  const { result: _result, error: _error, ...queued } = rest;
  return { ...queued, state: 'queued', failedAttempts, queuedAt: now, updatedAt: now };
}

function closeCurrentAttempt(
  task: TaskRecord,
  now: number,
  outcome: AttemptOutcome,
  detail?: string,
  report?: EndingReport,
) {
  return task.attempts.map((a) =>
    a.number === task.attempt && a.outcome === undefined
      ? {
          ...a,
          endedAt: isoTime(now),
          outcome,
          ...(detail === undefined ? {} : { detail }),
          ...(report === undefined ? {} : { report }),
        }
      : a,
  );
}

/**
 * Whether a report repeats the one that ended its attempt (`recorded`): the same kind with the
 * same exit code and result hash, or the same failure reason. Messages and metrics may differ.
 */
export function sameEndingReport(recorded: EndingReport, report: EndingReport): boolean {
  if (recorded.kind === 'result' && report.kind === 'result') {
    return recorded.exitCode === report.exitCode && recorded.resultHash === report.resultHash;
  }
  return recorded.kind === 'fail' && report.kind === 'fail' && recorded.reason === report.reason;
}

/** The history with `attempt` added, cut to {@link attemptsKept}. */
function withAttempt(task: TaskRecord, attempt: Attempt): Pick<TaskRecord, 'attempts' | 'attemptsDropped'> {
  const all = [...task.attempts, attempt];
  const over = all.length - (attemptsKept.first + attemptsKept.last);
  if (over <= 0) return { attempts: all };
  return {
    attempts: [...all.slice(0, attemptsKept.first), ...all.slice(attemptsKept.first + over)],
    attemptsDropped: (task.attemptsDropped ?? 0) + over,
  };
}

/**
 * Whether `attempt` was cut from the history: it was some node's lease once, so a late report for
 * it is told the lease moved on (409), as it would be had the attempt been kept.
 */
function wasDropped(task: TaskRecord, attempt: number): boolean {
  const kept = task.attempts.map((a) => a.number);
  return (
    (task.attemptsDropped ?? 0) > 0 &&
    !kept.includes(attempt) &&
    attempt > (kept[0] ?? Number.POSITIVE_INFINITY) &&
    attempt < (kept.at(-1) ?? 0)
  );
}
