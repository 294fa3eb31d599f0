import type { ControlPlane } from '../functions/control-plane.js';
import type { Queue } from '../functions/ports/queue.js';
import { fateOfFailedMessage } from '../functions/workers/failed-messages.js';
import { handleMessage } from '../functions/workers/messages.js';
import { deadLetterQueueOf } from '../functions/workers/queues.js';
import type { Log } from './log.js';

/**
 * The embedded stand-in for SQS event sources: one long-polling loop per queue. A handled message
 * is deleted; a failed one is dead-lettered at once or left to be redelivered after its visibility
 * timeout (and dead-lettered after too many receives), by the rule the cloud's consumer follows
 * too ({@link fateOfFailedMessage}).
 */
export function startQueueWorkers(
  cp: ControlPlane,
  queue: Queue,
  queues: readonly string[],
  log: Log,
): () => Promise<void> {
  let running = true;
  const loops = queues.map(async (name) => {
    while (running) {
      try {
        const messages = await queue.receive(name, { maxMessages: 10, waitSeconds: 1 });
        for (const message of messages) {
          try {
            await handleMessage(cp, name, message.body);
            await queue.delete(name, message.receiptHandle);
          } catch (error) {
            if (fateOfFailedMessage(error) === 'dead-letter') {
              log({
                level: 'warn',
                msg: 'message cannot be handled; dead-lettered',
                queue: name,
                error: String(error),
              });
              await queue.send(deadLetterQueueOf(name), message.body);
              await queue.delete(name, message.receiptHandle);
            } else {
              log({ level: 'warn', msg: 'message failed; will be redelivered', queue: name, error: String(error) });
            }
          }
        }
      } catch (error) {
        if (!running) break;
        log({ level: 'error', msg: 'queue worker error', queue: name, error: String(error) });
        await new Promise((resolve) => setTimeout(resolve, 500));
      }
    }
  });
  return async () => {
    running = false;
    await Promise.all(loops);
  };
}
