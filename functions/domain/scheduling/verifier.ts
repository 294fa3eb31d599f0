import { parseTaskId } from '../../../protocol/index.js';
import type { Clock } from '../../ports/clock.js';
import type { Queue } from '../../ports/queue.js';
import type { Store } from '../../ports/store.js';
import { updateWithRetry } from '../records.js';
import type { NodeRegistry } from '../resource/node-registry.js';
import { verifyResult } from '../security/verify-result.js';
import { type JobRecord, jobKey } from './job-record.js';
import { requestScheduling, type VerifyMessage } from './messages.js';
import { workloadOf } from './performance.js';
import { attemptOutcome, StoredPerformance } from './performance-record.js';
import { markRejected, markVerified } from './task-machine.js';
import { putTask, type TaskRecord, taskKey } from './task-record.js';

export type VerifyOutcome = 'verified' | 'rejected' | 'stale';

/**
 * Applies the job's verification policy to a reported attempt. Idempotent: a duplicate or late
 * message for an attempt that is no longer `reported` is acknowledged as stale and changes nothing.
 * Each verdict is also an outcome the performance estimates learn from (a verified run's time, a
 * rejected result against its node): only the message that made the transition records it.
 */
export class Verifier {
  constructor(
    private readonly store: Store,
    private readonly queue: Queue,
    private readonly registry: NodeRegistry,
    private readonly clock: Clock,
    /** Where outcomes are learned; by default estimates of its own over the same store. */
    readonly performance: StoredPerformance = new StoredPerformance(store, clock),
  ) {}

  async verify(message: VerifyMessage): Promise<VerifyOutcome> {
    const { jobId, index } = parseTaskId(message.taskId);
    const job = await this.store.get<JobRecord>(jobKey(jobId));
    if (job === undefined) return 'stale';
    const outcome = await updateWithRetry<TaskRecord, { task: TaskRecord; outcome: VerifyOutcome }>(
      this.store,
      taskKey(jobId, index),
      (current) => {
        if (current === undefined) return undefined;
        const task = current.data;
        if (task.state !== 'reported' || task.attempt !== message.attempt || task.result === undefined)
          return undefined;
        const now = this.clock.now();
        const check = verifyResult(job.data.spec.verification, task.result);
        const next = check.accepted ? markVerified(task, now) : markRejected(task, check.reason, now);
        return {
          writes: putTask(next, current.version),
          result: { task: next, outcome: check.accepted ? 'verified' : 'rejected' },
        };
      },
    );
    if (outcome === undefined) return 'stale';
    const nodeId = outcome.task.attempts.find((a) => a.number === message.attempt)?.nodeId;
    if (nodeId !== undefined) {
      await this.registry.bumpStats(nodeId, outcome.outcome === 'verified' ? 'tasksCompleted' : 'tasksFailed');
    }
    const learned = attemptOutcome(outcome.task, message.attempt, workloadOf(job.data.spec));
    if (learned !== undefined) await this.performance.recordOutcome(learned);
    if (outcome.task.state === 'queued') {
      await requestScheduling(this.queue, jobId);
    }
    return outcome.outcome;
  }
}
