import type { ControlPlane } from '../control-plane.js';
import { DomainError } from '../domain/errors.js';
import { queueNames, ScheduleMessage, VerifyMessage } from '../domain/scheduling/messages.js';

/** A message that no redelivery can fix (malformed, unknown queue): record it, do not loop on it. */
export class PoisonMessageError extends DomainError {
  override name = 'PoisonMessageError';
  constructor(queue: string, reason: string, options?: ErrorOptions) {
    super('invalid', 'poison_message', `message on ${queue} cannot be handled: ${reason}`, undefined, {
      ...options,
      retryable: false,
    });
  }
}

/**
 * Handles one message body from one of the control plane's queues. Shared by the embedded queue
 * workers and the cloud's SQS handlers. Throws {@link PoisonMessageError} for bodies that will
 * never succeed; any other error is worth a redelivery.
 */
export async function handleMessage(cp: ControlPlane, queue: string, body: string): Promise<void> {
  let json: unknown;
  try {
    json = JSON.parse(body);
  } catch (cause) {
    throw new PoisonMessageError(queue, 'body is not JSON', { cause });
  }
  switch (queue) {
    case queueNames.schedule: {
      const message = ScheduleMessage.safeParse(json);
      if (!message.success) throw new PoisonMessageError(queue, message.error.message);
      await cp.scheduler.schedule(message.data);
      return;
    }
    case queueNames.verify: {
      const message = VerifyMessage.safeParse(json);
      if (!message.success) throw new PoisonMessageError(queue, message.error.message);
      await cp.verifier.verify(message.data);
      return;
    }
    default:
      throw new PoisonMessageError(queue, 'no handler for this queue');
  }
}
