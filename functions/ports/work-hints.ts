/**
 * How a node learns of work; the same shape as the protocol's `Dispatch` (ports import nothing
 * outside themselves, so it is restated here and checked against the protocol where it is used).
 */
export type WorkDispatch =
  | { mode: 'long-poll' }
  | {
      mode: 'sqs';
      region: string;
      queues: { pool: string; url: string }[];
      /** Set only against emulators. */
      endpoint?: string;
    };

/** A task was queued in a pool: the protocol's `WorkHint` (`queuedAt` in RFC 3339). */
export interface WorkHintMessage {
  taskId: string;
  pool: string;
  queuedAt: string;
}

/**
 * WorkHints: tells nodes that work may be waiting in a pool, and how they learn of it.
 *
 * Hints are best effort and never grants: a hint only says "task X was queued in pool P"; the node
 * must still claim the task, and the claim's conditional write decides. A hint may be duplicated,
 * arrive after the task was taken, or be lost; a lost hint is re-driven by the reaper for tasks
 * that stay queued longer than `hintRedriveMs`.
 */
export interface WorkHints {
  /** How a node serving `pools` learns of work: the registration response's `dispatch`. */
  dispatchFor(pools: readonly string[]): Promise<WorkDispatch>;
  /** Announces a task queued in `hint.pool`. */
  publish(hint: WorkHintMessage): Promise<void>;
  /**
   * Drops a hint once its claim held. A handle that is stale or invalid (the hint was already
   * deleted, or became visible again and was received anew) is not an error.
   */
  acknowledge(queueUrl: string, receiptHandle: string): Promise<void>;
}
