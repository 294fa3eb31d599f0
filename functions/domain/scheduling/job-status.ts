import type { JobStatus, TaskCounts } from '../../../protocol/index.js';
import { TaskState } from '../../../protocol/index.js';
import type { JobRecord } from './job-record.js';
import { isTerminal, type TaskRecord } from './task-record.js';

export function countTasks(tasks: readonly TaskRecord[]): TaskCounts {
  const counts = Object.fromEntries(TaskState.options.map((s) => [s, 0])) as TaskCounts;
  for (const task of tasks) counts[task.state] += 1;
  return counts;
}

/**
 * A job's status is derived from its tasks, never stored: succeeded when every task verified,
 * failed when all ended and one failed, cancelled when the owner cancelled it, running once any
 * task has been picked up, queued before that.
 */
export function jobStatus(job: JobRecord, tasks: readonly TaskRecord[]): JobStatus {
  if (tasks.every((t) => isTerminal(t.state))) {
    if (tasks.every((t) => t.state === 'verified')) return 'succeeded';
    if (tasks.some((t) => t.state === 'failed')) return 'failed';
    return 'cancelled';
  }
  if (job.cancelledAt !== undefined) return 'cancelled';
  return tasks.some((t) => t.attempt > 0) ? 'running' : 'queued';
}

/** When the last task of a finished job ended; undefined while the job runs. */
export function finishedAt(tasks: readonly TaskRecord[]): number | undefined {
  if (!tasks.every((t) => isTerminal(t.state))) return undefined;
  return Math.max(...tasks.map((t) => t.updatedAt));
}
