/**
 * Queue: SQS semantics. A received message is invisible for its visibility timeout, then is
 * delivered again unless deleted; each delivery increments its receive count; a message received
 * `maxReceives` times goes to the dead-letter queue instead of being delivered again.
 * Delivery is at least once and unordered: consumers must be idempotent.
 */
export interface QueueMessage {
  id: string;
  body: string;
  /** Valid for this delivery only: a redelivered message has a new handle. */
  receiptHandle: string;
  receiveCount: number;
  sentAt: number;
}

export interface ReceiveOptions {
  maxMessages?: number;
  /** Seconds a received message stays invisible; the queue's default when absent. */
  visibilityTimeoutSeconds?: number;
  /** Long polling: seconds to wait for a message when none is ready (at most 20). */
  waitSeconds?: number;
}

export interface QueueDefinition {
  name: string;
  visibilityTimeoutSeconds: number;
  /** Deliveries before a message moves to `deadLetterQueue`. */
  maxReceives?: number;
  deadLetterQueue?: string;
}

export interface Queue {
  send(queue: string, body: string, options?: { delaySeconds?: number }): Promise<string>;
  receive(queue: string, options?: ReceiveOptions): Promise<QueueMessage[]>;
  /**
   * Deletes a message. With a stale handle (the message was redelivered or deleted since) the
   * message may or may not be deleted: SQS documents both and answers success either way, so
   * callers must neither rely on the result nor use a stale handle on purpose. Adapters return
   * false where they can tell the handle is stale.
   */
  delete(queue: string, receiptHandle: string): Promise<boolean>;
  /** Extends or ends (0) the invisibility of a received message. Returns false when the handle is known stale. */
  changeVisibility(queue: string, receiptHandle: string, seconds: number): Promise<boolean>;
  /** Approximate number of visible messages. */
  depth(queue: string): Promise<number>;
  close(): Promise<void>;
}

export class QueueNotFoundError extends Error {
  override name = 'QueueNotFoundError';
}
