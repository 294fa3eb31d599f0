import type { EndingReport } from '../../../protocol/index.js';
import { ConflictError, DomainError, ForbiddenError, InvalidRequestError } from '../errors.js';

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

/**
 * A report for an attempt that already ended with a different report from the same node (a result
 * after a failure, a result with other outputs): nothing changes, and the node learns that its
 * report was not taken, and what was. It must not retry it.
 */
export class ReportConflictError extends ConflictError {
  override name = 'ReportConflictError';
  constructor(taskId: string, attempt: number, recorded: EndingReport) {
    super(
      'report_conflict',
      `task ${taskId} attempt ${attempt} already ended with ${describeReport(recorded)}; this report differs and was not applied`,
      { taskId, attempt, recorded },
    );
  }
}

function describeReport(report: EndingReport): string {
  return report.kind === 'result'
    ? `a result (exit code ${report.exitCode}, result hash ${report.resultHash})`
    : `a fail report (reason ${report.reason})`;
}

/** The node reports on a task it was never assigned. */
export class TaskNotAssignedError extends ForbiddenError {
  override name = 'TaskNotAssignedError';
  constructor(taskId: string, nodeId: string) {
    super('task_not_assigned', `task ${taskId} was never assigned to node ${nodeId}`);
  }
}

/**
 * The result's hash is not the one its outputs give (protocol/result-hash.ts): the control plane
 * recomputes it, so a node cannot report one result and claim the hash of another.
 */
export class ResultHashMismatchError extends InvalidRequestError {
  override name = 'ResultHashMismatchError';
  constructor(taskId: string, reported: string, computed: string) {
    super(
      'result_hash_mismatch',
      `the result hash ${reported} of task ${taskId} is not the hash of its reported outputs (${computed})`,
      { taskId, reported, computed },
    );
  }
}

/**
 * A transition the task's state does not allow: the caller acted on a state that moved on (a racing
 * claim, a verify message for a task that is no longer reported). Nothing was written; re-read.
 */
export class InvalidTransitionError extends ConflictError {
  override name = 'InvalidTransitionError';
  constructor(taskId: string, transition: string, state: string) {
    super('invalid_transition', `cannot ${transition} task ${taskId} in state ${state}`, {
      taskId,
      transition,
      state,
    });
  }
}

/**
 * A poll or claim found work but could not hand it out for a reason that passes (a KMS throttle,
 * an unreachable key service, a store fault on one candidate). Whatever it had claimed was given
 * back; the node should retry after a short wait.
 */
export class DispatchUnavailableError extends DomainError {
  override name = 'DispatchUnavailableError';
  constructor(message: string, options?: ErrorOptions) {
    super('unavailable', 'dispatch_unavailable', message, undefined, { ...options, retryable: true });
  }
}
