import { ConflictError, ForbiddenError } from '../errors.js';

/**
 * The report names a lease the node no longer holds: the lease expired and the task moved on,
 * the task was cancelled, or the attempt is stale. The node must stop the task and drop it.
 */
export class LeaseLostError extends ConflictError {
  override name = 'LeaseLostError';
  constructor(taskId: string, attempt: number, why: string) {
    super('lease_lost', `task ${taskId} attempt ${attempt} is no longer leased to this node: ${why}`, {
      taskId,
      attempt,
    });
  }
}

/** The node reports on a task it was never assigned. */
export class TaskNotAssignedError extends ForbiddenError {
  override name = 'TaskNotAssignedError';
  constructor(taskId: string, nodeId: string) {
    super('task_not_assigned', `task ${taskId} was never assigned to node ${nodeId}`);
  }
}
