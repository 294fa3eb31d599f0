import { z } from 'zod';
import { JobId, TaskId } from '../../../protocol/index.js';
import type { Queue } from '../../ports/queue.js';

/**
 * The control plane's queues. Messages are triggers only: the store holds the truth, so a
 * duplicated, delayed or lost message changes nothing it should not, and the reaper re-drives
 * from table state what a lost message would have done.
 */
export const queueNames = {
  /** "Route the unrouted tasks of this job." */
  schedule: 'schedule',
  /** "Verify this reported attempt." */
  verify: 'verify',
} as const;

export const ScheduleMessage = z.strictObject({ jobId: JobId });
export type ScheduleMessage = z.infer<typeof ScheduleMessage>;

export const VerifyMessage = z.strictObject({ taskId: TaskId, attempt: z.int().min(1) });
export type VerifyMessage = z.infer<typeof VerifyMessage>;

/** Asks the scheduler to route the unrouted tasks of `jobId` (a new job, or a task queued again). */
export const requestScheduling = (queue: Queue, jobId: string): Promise<string> =>
  queue.send(queueNames.schedule, JSON.stringify({ jobId } satisfies ScheduleMessage));
