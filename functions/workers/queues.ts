import { queueNames } from '../domain/scheduling/messages.js';
import type { QueueDefinition } from '../ports/queue.js';

/** Deliveries of one message before it is parked in its dead-letter queue. */
export const maxReceives = 5;

export const deadLetterQueueOf = (queue: string): string => `${queue}-dlq`;

/** The control plane's queues and their dead-letter queues, as every deployment creates them. */
export const queueDefinitions: QueueDefinition[] = Object.values(queueNames).flatMap((name) => [
  { name, visibilityTimeoutSeconds: 30, maxReceives, deadLetterQueue: deadLetterQueueOf(name) },
  { name: deadLetterQueueOf(name), visibilityTimeoutSeconds: 30 },
]);
