import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, it } from 'vitest';
import {
  type Queue,
  type QueueDefinition,
  type QueueMessage,
  QueueNotFoundError,
} from '../../functions/ports/queue.js';

/** What a {@link queueContract} factory hands the suite for one test. */
export interface QueueFixture {
  queue: Queue;
  /**
   * Opens the same queues again, after the suite has closed `queue`. Only for adapters whose
   * messages outlive a connection; the persistence test is skipped without it.
   */
  reopen?: () => Promise<Queue>;
  /** Releases everything the fixture made, queues returned by `reopen` included. */
  cleanup(): Promise<void>;
}

/** What an adapter promises beyond the port's at-least-once delivery. */
export interface QueueContractOptions {
  /**
   * Whether a message, while invisible, is never handed to a second concurrent receiver. The port
   * promises only at-least-once delivery; SQS standard queues (and moto, whose receive does not
   * lock the queue) may hand one message to two receivers at once, so only adapters that never do
   * are held to it.
   */
  exclusiveReceive: boolean;
}

/**
 * The behaviour every {@link Queue} adapter must show. Queue names are unique to each test, so
 * adapters may share one account or file between tests. Visibility timeouts and waits run in real
 * time, kept to a second or two.
 */
export function queueContract(
  name: string,
  makeQueue: (definitions: QueueDefinition[]) => Promise<QueueFixture>,
  options: QueueContractOptions,
): void {
  describe(`Queue contract: ${name}`, () => {
    const fixtures: QueueFixture[] = [];

    afterEach(async () => {
      await Promise.all(fixtures.splice(0).map((fixture) => fixture.cleanup()));
    });

    /**
     * Queues for one test: `work` dead-letters to `dead` on its third delivery; `short` has a
     * one-second visibility timeout and no dead-letter queue.
     */
    async function setUp() {
      const id = randomUUID().slice(0, 8);
      const names = { work: `work-${id}`, dead: `dead-${id}`, short: `short-${id}` };
      const fixture = await makeQueue([
        { name: names.work, visibilityTimeoutSeconds: 30, maxReceives: 2, deadLetterQueue: names.dead },
        { name: names.dead, visibilityTimeoutSeconds: 30 },
        { name: names.short, visibilityTimeoutSeconds: 1 },
      ]);
      fixtures.push(fixture);
      return { ...names, fixture, queue: fixture.queue };
    }

    it('delivers a sent message, which is gone once deleted', async () => {
      const { queue, work } = await setUp();
      const before = Date.now();
      const id = await queue.send(work, '{"task":"t1"}');

      const [message, ...others] = await queue.receive(work, { waitSeconds: 2 });
      expect(others).toEqual([]);
      expect(message).toMatchObject({ id, body: '{"task":"t1"}', receiveCount: 1 });
      // Adapters may take the timestamp from a server whose clock is a little off.
      expect(message?.sentAt).toBeGreaterThan(before - 60_000);
      expect(message?.sentAt).toBeLessThan(Date.now() + 60_000);

      expect(await queue.delete(work, receipt(message))).toBe(true);
      expect(await queue.receive(work)).toEqual([]);
    });

    it('hides a received message, then redelivers it with a new handle after its visibility timeout', async () => {
      const { queue, short } = await setUp();
      const id = await queue.send(short, 'job');
      const [first] = await queue.receive(short, { waitSeconds: 2 });
      const receivedAt = Date.now();
      expect(await queue.receive(short)).toEqual([]);

      const [second] = await queue.receive(short, { waitSeconds: 5 });
      expect(Date.now() - receivedAt).toBeGreaterThanOrEqual(800);
      expect(second).toMatchObject({ id, body: 'job', receiveCount: 2 });
      expect(receipt(second)).not.toBe(receipt(first));

      expect(await queue.receive(short)).toEqual([]);
      expect(await queue.changeVisibility(short, receipt(second), 0)).toBe(true);
      const [third] = await queue.receive(short, { waitSeconds: 2 });
      expect(third).toMatchObject({ id, receiveCount: 3 });
      expect(await queue.delete(short, receipt(third))).toBe(true);
      // The first handle is stale. SQS answers a delete with a stale handle with success, and
      // documents that the message "might not" be deleted by it (moto deletes it, for one), so the
      // contract requires only an answer; the embedded queue's own tests pin down its behaviour.
      expect(typeof (await queue.delete(short, receipt(first)))).toBe('boolean');
    });

    it('makes a message visible again at once on changeVisibility(0), and keeps it hidden on an extension', async () => {
      const { queue, work } = await setUp();
      const id = await queue.send(work, 'job');
      const [first] = await queue.receive(work, { waitSeconds: 2, visibilityTimeoutSeconds: 1 });

      expect(await queue.changeVisibility(work, receipt(first), 30)).toBe(true);
      await sleep(1200);
      expect(await queue.receive(work)).toEqual([]);

      expect(await queue.changeVisibility(work, receipt(first), 0)).toBe(true);
      const [second] = await queue.receive(work, { waitSeconds: 2 });
      expect(second).toMatchObject({ id, receiveCount: 2 });
    });

    it('answers a long poll as soon as a message is sent', async () => {
      const { queue, work } = await setUp();
      const started = Date.now();
      const polling = queue.receive(work, { waitSeconds: 10 });
      await sleep(200);
      await queue.send(work, 'wake up');

      const messages = await polling;
      expect(messages.map((m) => m.body)).toEqual(['wake up']);
      expect(Date.now() - started).toBeLessThan(3000);
    });

    it('answers a long poll with no messages when the wait ends', async () => {
      const { queue, work } = await setUp();
      const started = Date.now();

      expect(await queue.receive(work, { waitSeconds: 1 })).toEqual([]);
      const elapsed = Date.now() - started;
      expect(elapsed).toBeGreaterThanOrEqual(900);
      expect(elapsed).toBeLessThan(5000);
    });

    it('moves a message to the dead-letter queue after maxReceives deliveries', async () => {
      const { queue, work, dead } = await setUp();
      await queue.send(work, 'poison');

      for (const receiveCount of [1, 2]) {
        const [delivery] = await queue.receive(work, { waitSeconds: 2 });
        expect(delivery).toMatchObject({ body: 'poison', receiveCount });
        expect(await queue.changeVisibility(work, receipt(delivery), 0)).toBe(true);
      }

      expect(await queue.receive(work)).toEqual([]);
      const [deadLetter] = await queue.receive(dead, { waitSeconds: 2 });
      expect(deadLetter?.body).toBe('poison');
      expect(await queue.delete(dead, receipt(deadLetter))).toBe(true);
    });

    it('holds back a delayed message for its delay', async () => {
      const { queue, work } = await setUp();
      const sent = Date.now();
      await queue.send(work, 'later', { delaySeconds: 1 });

      expect(await queue.receive(work)).toEqual([]);
      const [message] = await queue.receive(work, { waitSeconds: 5 });
      expect(message?.body).toBe('later');
      expect(Date.now() - sent).toBeGreaterThanOrEqual(800);
    });

    it('returns at most maxMessages messages, one by default', async () => {
      const { queue, work } = await setUp();
      const sent = new Set<string>();
      for (let i = 0; i < 5; i++) {
        sent.add(await queue.send(work, `m${i}`));
      }

      expect((await queue.receive(work, { waitSeconds: 2 })).length).toBe(1);
      const received = new Set<string>();
      for (let attempt = 0; attempt < 10 && received.size < 4; attempt++) {
        const batch = await queue.receive(work, { maxMessages: 3, waitSeconds: 1 });
        expect(batch.length).toBeLessThanOrEqual(3);
        for (const message of batch) {
          received.add(message.id);
        }
      }
      expect(received.size).toBe(4);
      expect([...received].every((id) => sent.has(id))).toBe(true);

      await expect(queue.receive(work, { maxMessages: 11 })).rejects.toThrow();
      await expect(queue.receive(work, { maxMessages: 0 })).rejects.toThrow();
    });

    it(`delivers each message to concurrent receivers ${options.exclusiveReceive ? 'exactly once' : 'at least once'} while none times out`, async () => {
      const { queue, work } = await setUp();
      const total = 50;
      const sent = await Promise.all(Array.from({ length: total }, (_, i) => queue.send(work, `m${i}`)));
      const deliveries: QueueMessage[] = [];

      const receiver = async () => {
        while (new Set(deliveries.map((m) => m.id)).size < total) {
          const batch = await queue.receive(work, { maxMessages: 3, waitSeconds: 1, visibilityTimeoutSeconds: 30 });
          if (batch.length === 0) {
            return;
          }
          deliveries.push(...batch);
          await Promise.all(batch.map((message) => queue.delete(work, message.receiptHandle)));
        }
      };
      await Promise.all(Array.from({ length: 10 }, receiver));

      if (options.exclusiveReceive) {
        expect(deliveries.map((m) => m.id).sort()).toEqual([...sent].sort());
        expect(deliveries.every((m) => m.receiveCount === 1)).toBe(true);
      } else {
        expect(new Set(deliveries.map((m) => m.id))).toEqual(new Set(sent));
      }
    });

    it('throws QueueNotFoundError for a queue it does not know', async () => {
      const { queue } = await setUp();
      const unknown = `unknown-${randomUUID().slice(0, 8)}`;

      await expect(queue.send(unknown, 'x')).rejects.toBeInstanceOf(QueueNotFoundError);
      await expect(queue.receive(unknown)).rejects.toBeInstanceOf(QueueNotFoundError);
      await expect(queue.delete(unknown, 'handle')).rejects.toBeInstanceOf(QueueNotFoundError);
      await expect(queue.changeVisibility(unknown, 'handle', 0)).rejects.toBeInstanceOf(QueueNotFoundError);
      await expect(queue.depth(unknown)).rejects.toBeInstanceOf(QueueNotFoundError);
    });

    it('keeps its messages across closing and reopening', async (context) => {
      const { fixture, queue, work } = await setUp();
      const { reopen } = fixture;
      if (reopen === undefined) {
        context.skip('this adapter does not persist');
        return;
      }
      const id = await queue.send(work, 'durable');
      await queue.close();

      const reopened = await reopen();
      const [message] = await reopened.receive(work, { waitSeconds: 2 });
      expect(message).toMatchObject({ id, body: 'durable', receiveCount: 1 });
    });
  });
}

function receipt(message: QueueMessage | undefined): string {
  if (message === undefined) {
    throw new Error('expected a message, got none');
  }
  return message.receiptHandle;
}
