import { afterEach, describe, expect, it } from 'vitest';
import { openDatabase } from '../functions/adapters/embedded/sqlite.js';
import { SqliteQueue } from '../functions/adapters/embedded/sqlite-queue.js';
import type { ControlPlane } from '../functions/control-plane.js';
import { ContentionError, NotFoundError } from '../functions/domain/errors.js';
import { queueNames } from '../functions/domain/scheduling/messages.js';
import { deadLetterQueueOf, queueDefinitions } from '../functions/workers/queues.js';
import { startQueueWorkers } from './queue-workers.js';

const jobId = (n: number) => `job_01JD7Z5C2Q9W8V6T4R2P0N8M${String(n).padStart(2, '0')}`;
const schedule = queueNames.schedule;
const deadLetters = deadLetterQueueOf(schedule);

let stop: (() => Promise<void>) | undefined;
afterEach(async () => {
  await stop?.();
  stop = undefined;
});

/** Receives from `queue` until `count` messages came, or fails after `timeoutMs`. */
async function receiveAll(queue: SqliteQueue, name: string, count: number, timeoutMs = 10_000): Promise<string[]> {
  const bodies: string[] = [];
  const deadline = Date.now() + timeoutMs;
  while (bodies.length < count && Date.now() < deadline) {
    const messages = await queue.receive(name, { maxMessages: 10, waitSeconds: 1 });
    bodies.push(...messages.map((m) => m.body));
  }
  return bodies;
}

describe('embedded queue workers', () => {
  it('dead-letter at once what no redelivery can fix, as the cloud consumer does, and leave the rest to redelivery', async () => {
    const queue = new SqliteQueue(openDatabase(':memory:'), queueDefinitions);
    const handled: string[] = [];
    // Only the scheduler is reached by messages on the schedule queue.
    const cp = {
      scheduler: {
        schedule: async ({ jobId: id }: { jobId: string }) => {
          handled.push(id);
          if (id === jobId(1)) throw new NotFoundError('job_not_found', 'no such job');
          if (id === jobId(2)) throw new ContentionError('busy');
          return 1;
        },
      },
    } as unknown as ControlPlane;
    const logged: Record<string, unknown>[] = [];
    await queue.send(schedule, JSON.stringify({ jobId: jobId(1) }));
    await queue.send(schedule, JSON.stringify({ jobId: jobId(2) }));
    await queue.send(schedule, 'not json');
    stop = startQueueWorkers(cp, queue, [schedule], (entry) => logged.push(entry));

    expect((await receiveAll(queue, deadLetters, 2)).sort()).toEqual(
      [JSON.stringify({ jobId: jobId(1) }), 'not json'].sort(),
    );
    await stop();
    stop = undefined;
    expect(handled).toContain(jobId(2));
    expect(logged).toContainEqual(
      expect.objectContaining({ level: 'warn', queue: schedule, msg: expect.stringMatching(/redelivered/) }),
    );
  });
});
