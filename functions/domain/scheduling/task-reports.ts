import type {
  AttemptOutcome,
  EndingReport,
  FailureReport,
  HeartbeatRequest,
  HeartbeatResponse,
  ProgressReport,
  ResultReport,
  TaskView,
} from '../../../protocol/index.js';
import { parseTaskId } from '../../../protocol/index.js';
import type { Clock } from '../../ports/clock.js';
import type { Queue } from '../../ports/queue.js';
import { ConditionFailedError, type Store, type StoredItem } from '../../ports/store.js';
import { ContentionError, NotFoundError, UnauthenticatedError } from '../errors.js';
import { updateWithRetry } from '../records.js';
import type { NodeRegistry } from '../resource/node-registry.js';
import { LeaseLostError, ReportConflictError } from './errors.js';
import { queueNames, requestScheduling } from './messages.js';
import type { StoredPerformance } from './performance-record.js';
import {
  assertLease,
  extendLease,
  type LeaseSettings,
  recordFailure,
  recordProgress,
  recordResult,
  sameEndingReport,
  timedOut,
} from './task-machine.js';
import { putTask, type TaskRecord, taskKey, toTaskView } from './task-record.js';

export interface HeartbeatSettings extends LeaseSettings {
  /** The next beat of a node that listed no task. */
  heartbeatIdleMs: number;
  /** The next beat of a node that listed tasks: its beats keep their leases. */
  heartbeatBusyMs: number;
  /** How often a task's progress is worth a report, told to the agent with every heartbeat. */
  progressIntervalMs: number;
}

/**
 * A task as the progress route stores it: with the signed date of the latest progress report of
 * its current attempt. Each attempt's reports are a stream whose dates must increase, so a
 * replayed or reordered report is refused without a nonce item (protocol/signing.ts).
 */
interface ReportedTask extends TaskRecord {
  progressDate?: { attempt: number; date: number };
}

/**
 * What nodes tell the control plane about their tasks: progress and heartbeats extend the lease,
 * results and failures end the attempt. Every report names its attempt (the lease token), so a
 * report from a node whose lease moved on changes nothing.
 */
export class TaskReports {
  constructor(
    private readonly store: Store,
    private readonly queue: Queue,
    private readonly registry: NodeRegistry,
    private readonly clock: Clock,
    private readonly settings: HeartbeatSettings,
    /** Where ended attempts are learned from (performance-record.ts); none: nothing is learned here. */
    private readonly performance?: StoredPerformance,
  ) {}

  /**
   * Records a progress report. `signedDate` (the request's signed `x-gpuai-date`, where the route
   * checks no nonce) must be later than that of the attempt's last report taken.
   *
   * @throws UnauthenticatedError `replayed_request` when it is not.
   */
  async progress(
    nodeId: string,
    taskId: string,
    report: ProgressReport,
    signedDate?: number,
  ): Promise<{ leaseExpiresAt: number }> {
    const task = await this.transition(nodeId, taskId, report.attempt, (t: ReportedTask, now) => {
      const last = t.progressDate;
      if (signedDate === undefined) return recordProgress(t, report, now, this.settings.leaseMs);
      if (last?.attempt === report.attempt && signedDate <= last.date) {
        throw new UnauthenticatedError(
          'replayed_request',
          `progress date ${signedDate} is not later than the last report's (${last.date}): replayed or reordered`,
          { lastDate: last.date },
        );
      }
      const next: ReportedTask = recordProgress(t, report, now, this.settings.leaseMs);
      return { ...next, progressDate: { attempt: report.attempt, date: signedDate } };
    });
    return { leaseExpiresAt: task.leaseExpiresAt ?? this.clock.now() };
  }

  async result(nodeId: string, taskId: string, report: ResultReport): Promise<TaskView> {
    const ending: EndingReport = { kind: 'result', exitCode: report.exitCode, resultHash: report.resultHash };
    return this.endAttempt(nodeId, taskId, report.attempt, ending, ['completed', 'failed', 'rejected'], (t, now) =>
      recordResult(t, report, now),
    );
  }

  async fail(nodeId: string, taskId: string, report: FailureReport): Promise<TaskView> {
    const ending: EndingReport = { kind: 'fail', reason: report.reason };
    return this.endAttempt(nodeId, taskId, report.attempt, ending, ['failed', 'released'], (t, now) =>
      recordFailure(t, report.reason, report.message, now),
    );
  }

  /**
   * Ends an attempt. A report that repeats the one already applied (the node retried because the
   * first answer was lost) is answered with the task as it stands; one that differs from it is
   * refused with {@link ReportConflictError}, so the node knows it was not taken. Attempts written
   * before reports were recorded on them (no `report`) are matched by their outcome alone.
   */
  private async endAttempt(
    nodeId: string,
    taskId: string,
    attempt: number,
    ending: EndingReport,
    endedAs: readonly AttemptOutcome[],
    next: (task: TaskRecord, now: number) => TaskRecord,
  ): Promise<TaskView> {
    let task: TaskRecord;
    try {
      task = await this.transition(nodeId, taskId, attempt, next);
    } catch (error) {
      if (!(error instanceof LeaseLostError)) throw error;
      const { jobId, index } = parseTaskId(taskId);
      const current = (await this.store.get<TaskRecord>(taskKey(jobId, index)))?.data;
      const ended = current?.attempts.find((a) => a.number === attempt && a.nodeId === nodeId);
      if (current === undefined || ended?.outcome === undefined) throw error;
      if (ended.report !== undefined) {
        if (!sameEndingReport(ended.report, ending)) throw new ReportConflictError(taskId, attempt, ended.report);
        return toTaskView(current);
      }
      if (!endedAs.includes(ended.outcome)) throw error;
      return toTaskView(current);
    }
    await this.afterAttempt(nodeId, task);
    return toTaskView(task);
  }

  /**
   * Records that the node is alive (one presence write) and extends the leases of the tasks it
   * still holds: heartbeats alone keep leases, so the answer sets the next beat at the busy interval
   * when the node listed tasks, at the idle one when it did not. Tasks it no longer holds come back
   * in `abort`, so the node stops work nobody will accept; so do tasks that outran their timeout
   * by a busy interval (time for the node to report its own timeout),
   * whose lease runs out at the end of the grace whatever the node says. A beat that carries the
   * node's measured round trip (`latencyMs`, now and then) feeds its latency estimate once the beat
   * is accepted: one more read and write at most once per node per period, whatever the node
   * sends (performance-record.ts recordLatency). A refused beat writes nothing: neither presence,
   * nor lease, nor estimate. `signedDate` (the request's
   * signed date, where the route checks no nonce) must be later than the last heartbeat's.
   *
   * @throws UnauthenticatedError `replayed_request` when it is not; nothing is extended then.
   */
  async heartbeat(nodeId: string, request: HeartbeatRequest, signedDate?: number): Promise<HeartbeatResponse> {
    // Every listed task is read and checked before the presence write, so a heartbeat refused for a
    // task never given to this node (403) moves neither the replay watermark nor any lease; the
    // extension below writes against the version read here (read again only on a conflict).
    const listed: ({ taskId: string; attempt: number } & ({ read: StoredItem<TaskRecord> } | { lost: string }))[] = [];
    for (const { taskId, attempt } of request.tasks) {
      const { jobId, index } = parseTaskId(taskId);
      const read = await this.store.get<TaskRecord>(taskKey(jobId, index));
      try {
        if (read === undefined) throw new NotFoundError('task_not_found', `no task ${taskId}`);
        assertLease(read.data, nodeId, attempt);
        listed.push({ taskId, attempt, read });
      } catch (error) {
        if (!(error instanceof LeaseLostError) && !(error instanceof NotFoundError)) throw error;
        listed.push({ taskId, attempt, lost: error.message });
      }
    }
    try {
      await this.registry.touch(nodeId, signedDate === undefined ? {} : { hbDate: signedDate });
    } catch (error) {
      // Lost to the node's own concurrent polls: it was seen anyway, and the leases still need extending.
      if (!(error instanceof ContentionError)) throw error;
    }
    const abort: HeartbeatResponse['abort'] = [];
    for (const entry of listed) {
      const { taskId, attempt } = entry;
      if ('lost' in entry) {
        abort.push({ taskId, attempt, reason: entry.lost });
        continue;
      }
      try {
        const task = await this.extendRead(nodeId, entry.read, attempt);
        // One busy beat of slack: the node's own timeout runs from its process start, just after the
        // claim the server's runs from, and its `timeout` report is worth more than a silent stop.
        if (timedOut(task, this.clock.now() - this.settings.heartbeatBusyMs)) {
          abort.push({ taskId, attempt, reason: `timed out after ${task.timeoutSeconds} s` });
        }
      } catch (error) {
        if (!(error instanceof LeaseLostError) && !(error instanceof NotFoundError)) throw error;
        abort.push({ taskId, attempt, reason: error.message });
      }
    }
    if (request.latencyMs !== undefined) await this.learnLatency(nodeId, request.latencyMs);
    return {
      abort,
      heartbeatIntervalMs: request.tasks.length > 0 ? this.settings.heartbeatBusyMs : this.settings.heartbeatIdleMs,
      progressIntervalMs: this.settings.progressIntervalMs,
    };
  }

  /**
   * Learns the round trip the node measured (the protocol bounds it; the estimate takes one sample
   * per node per period and bounds its effect, performance.ts latencyLimits). Advice, like every
   * estimate: an estimate item contended past its retries drops the sample, never the heartbeat.
   */
  private async learnLatency(nodeId: string, ms: number): Promise<void> {
    try {
      await this.performance?.recordLatency(nodeId, ms);
    } catch (error) {
      if (!(error instanceof ContentionError)) throw error;
    }
  }

  /** Extends the lease of a task read (and checked) just before; on a conflict, reads it again. */
  private async extendRead(nodeId: string, read: StoredItem<TaskRecord>, attempt: number): Promise<TaskRecord> {
    const task = extendLease(read.data, this.clock.now(), this.settings.leaseMs);
    try {
      await this.store.transact(putTask(task, read.version));
      return task;
    } catch (error) {
      if (!(error instanceof ConditionFailedError)) throw error;
      return this.transition(nodeId, read.data.id, attempt, (t, now) => extendLease(t, now, this.settings.leaseMs));
    }
  }

  private async transition(
    nodeId: string,
    taskId: string,
    attempt: number,
    next: (task: TaskRecord, now: number) => TaskRecord,
  ): Promise<TaskRecord> {
    const { jobId, index } = parseTaskId(taskId);
    const updated = await updateWithRetry<TaskRecord, TaskRecord>(this.store, taskKey(jobId, index), (current) => {
      if (current === undefined) throw new NotFoundError('task_not_found', `no task ${taskId}`);
      assertLease(current.data, nodeId, attempt);
      const task = next(current.data, this.clock.now());
      return { writes: putTask(task, current.version), result: task };
    });
    return updated as TaskRecord;
  }

  /** Follow-ups once an attempt ended: verify a report, re-route a retry, count the node's record. */
  private async afterAttempt(nodeId: string, task: TaskRecord): Promise<void> {
    if (task.state === 'reported') {
      await this.queue.send(queueNames.verify, JSON.stringify({ taskId: task.id, attempt: task.attempt }));
      return;
    }
    const ended = task.attempts.at(-1);
    if (ended?.outcome === 'failed') await this.registry.bumpStats(nodeId, 'tasksFailed');
    if (ended !== undefined) await this.performance?.recordAttempt(task, ended.number);
    if (task.state === 'queued') await requestScheduling(this.queue, task.jobId);
  }
}
