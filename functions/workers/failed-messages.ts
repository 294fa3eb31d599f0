import { DomainError } from '../domain/errors.js';

/**
 * What a consumer does with a message whose handling threw: `dead-letter` it now, or leave it to
 * be `redeliver`ed (after its visibility timeout; after `maxReceives` deliveries the queue itself
 * parks it). The one rule of both deployments, read by the cloud's SQS consumer and the embedded
 * queue workers, so the same message meets the same fate in either.
 *
 * A domain error that says no redelivery can fix it (a poison message, a job that does not exist, a
 * transition the task no longer allows) is dead-lettered at once: it raises the dead-letter alarm
 * instead of looping. Anything else (contention, an unreachable service, a bug) may pass next time.
 */
export type FailedMessageFate = 'dead-letter' | 'redeliver';

export function fateOfFailedMessage(error: unknown): FailedMessageFate {
  return error instanceof DomainError && !error.retryable ? 'dead-letter' : 'redeliver';
}
