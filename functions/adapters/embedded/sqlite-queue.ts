import { randomBytes, randomUUID } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { type Clock, systemClock } from '../../ports/clock.js';
import type { Queue, QueueDefinition, QueueMessage, ReceiveOptions } from '../../ports/queue.js';
import { QueueNotFoundError } from '../../ports/queue.js';
import { receiveSettings, sendDelaySeconds, validateDefinitions, visibilityChangeSeconds } from '../queue-rules.js';
import type { Database } from './sqlite.js';

/**
 * How often a long poll looks at the table again. Sends from this process wake it at once; this
 * interval bounds the latency for messages sent by another process sharing the database file.
 */
const recheckMs = 100;

interface MessageRow {
  id: string;
  body: string;
  sent_at: number;
  receive_count: number;
}

/**
 * The {@link Queue} port on SQLite, with SQS semantics: visibility timeouts, receive counts,
 * dead-letter queues, delivery delays and long polling. Every receive runs under `BEGIN IMMEDIATE`,
 * so one message goes to one receiver at a time even across processes sharing the file.
 *
 * Message times (sending, visibility) come from the clock; long-poll waits are real time.
 */
export class SqliteQueue implements Queue {
  readonly #db: Database;
  readonly #clock: Clock;
  readonly #definitions: ReadonlyMap<string, QueueDefinition>;
  /** Long polls waiting on each queue; calling one wakes it and unregisters it. */
  readonly #waiters = new Map<string, Set<() => void>>();
  #closed = false;
  readonly #statements: ReturnType<typeof prepareStatements>;
  readonly #take: (definition: QueueDefinition, maxMessages: number, visibilityMs: number) => QueueMessage[];

  /**
   * @param db an open database whose schema `openDatabase` created; the queue takes it over
   *   and closes it in {@link SqliteQueue.close}.
   * @param definitions every queue this adapter serves; names outside it throw {@link QueueNotFoundError}.
   * @param clock the source of message timestamps and visibility deadlines.
   */
  constructor(db: Database, definitions: readonly QueueDefinition[], clock: Clock = systemClock) {
    this.#db = db;
    this.#clock = clock;
    this.#definitions = validateDefinitions(definitions);
    this.#statements = prepareStatements(db);

    const take = db.transaction((definition: QueueDefinition, maxMessages: number, visibilityMs: number) => {
      const now = this.#clock.now();
      const { deadLetterQueue, maxReceives } = definition;
      // Messages already delivered maxReceives times go to the dead-letter queue instead of out again.
      if (deadLetterQueue !== undefined && maxReceives !== undefined) {
        const moved = this.#statements.deadLetter.run({ queue: definition.name, deadLetterQueue, maxReceives, now });
        if (moved.changes > 0) {
          this.#wake(deadLetterQueue);
        }
      }
      const rows = this.#statements.visible.all({ queue: definition.name, now, limit: maxMessages });
      return rows.map((row): QueueMessage => {
        const receiptHandle = randomBytes(16).toString('base64url');
        this.#statements.deliver.run({ id: row.id, visibleAt: now + visibilityMs, receipt: receiptHandle });
        return { id: row.id, body: row.body, receiptHandle, receiveCount: row.receive_count + 1, sentAt: row.sent_at };
      });
    });
    // A plain read first: a receive that finds nothing visible (most of a long poll's rechecks) takes
    // no write lock and commits nothing. Nothing is dead-lettered then either, since only visible
    // messages are, so the outcome is the transaction's own.
    this.#take = (definition, maxMessages, visibilityMs) =>
      this.#statements.anyVisible.get({ queue: definition.name, now: this.#clock.now() }) === undefined
        ? []
        : take.immediate(definition, maxMessages, visibilityMs);
  }

  async send(queue: string, body: string, options: { delaySeconds?: number } = {}): Promise<string> {
    this.#requireOpen();
    this.#definition(queue);
    const delaySeconds = sendDelaySeconds(options.delaySeconds);
    const id = randomUUID();
    const now = this.#clock.now();
    this.#statements.insert.run({ id, queue, body, sentAt: now, visibleAt: now + delaySeconds * 1000 });
    if (delaySeconds === 0) {
      this.#wake(queue);
    }
    return id;
  }

  async receive(queue: string, options: ReceiveOptions = {}): Promise<QueueMessage[]> {
    this.#requireOpen();
    const definition = this.#definition(queue);
    const { maxMessages, visibilityTimeoutSeconds, waitSeconds } = receiveSettings(options, definition);

    const deadline = performance.now() + waitSeconds * 1000;
    for (;;) {
      const messages = this.#take(definition, maxMessages, visibilityTimeoutSeconds * 1000);
      const remainingMs = deadline - performance.now();
      if (messages.length > 0 || remainingMs <= 0) {
        return messages;
      }
      await this.#nextChance(queue, Math.min(remainingMs, recheckMs));
      if (this.#closed) {
        return [];
      }
    }
  }

  async delete(queue: string, receiptHandle: string): Promise<boolean> {
    this.#requireOpen();
    this.#definition(queue);
    return this.#statements.delete.run({ queue, receipt: receiptHandle }).changes === 1;
  }

  async changeVisibility(queue: string, receiptHandle: string, seconds: number): Promise<boolean> {
    this.#requireOpen();
    this.#definition(queue);
    const timeout = visibilityChangeSeconds(seconds);
    const visibleAt = this.#clock.now() + timeout * 1000;
    const changed = this.#statements.changeVisibility.run({ queue, receipt: receiptHandle, visibleAt }).changes === 1;
    if (changed && timeout === 0) {
      this.#wake(queue);
    }
    return changed;
  }

  async depth(queue: string): Promise<number> {
    this.#requireOpen();
    this.#definition(queue);
    return this.#statements.depth.get({ queue, now: this.#clock.now() }) ?? 0;
  }

  /** Ends pending long polls (they return no messages) and closes the database; later calls do nothing. */
  async close(): Promise<void> {
    this.#closed = true;
    for (const waiters of [...this.#waiters.values()]) {
      for (const wake of [...waiters]) {
        wake();
      }
    }
    if (this.#db.open) {
      this.#db.close();
    }
  }

  #definition(queue: string): QueueDefinition {
    const definition = this.#definitions.get(queue);
    if (definition === undefined) {
      const known = [...this.#definitions.keys()].join(', ');
      throw new QueueNotFoundError(`queue ${JSON.stringify(queue)} is not defined (defined: ${known})`);
    }
    return definition;
  }

  #requireOpen(): void {
    if (this.#closed) {
      throw new Error('the queue adapter is closed');
    }
  }

  #wake(queue: string): void {
    for (const wake of [...(this.#waiters.get(queue) ?? [])]) {
      wake();
    }
  }

  /** Resolves when a message may have become available on `queue`, or after `ms` regardless. */
  #nextChance(queue: string, ms: number): Promise<void> {
    return new Promise((resolve) => {
      let waiters = this.#waiters.get(queue);
      if (waiters === undefined) {
        waiters = new Set();
        this.#waiters.set(queue, waiters);
      }
      const registered = waiters;
      const wake = () => {
        clearTimeout(timer);
        registered.delete(wake);
        if (registered.size === 0 && this.#waiters.get(queue) === registered) {
          this.#waiters.delete(queue);
        }
        resolve();
      };
      const timer = setTimeout(wake, ms);
      registered.add(wake);
    });
  }
}

/** Every statement the queue runs, compiled once. */
function prepareStatements(db: Database) {
  return {
    insert: db.prepare<[{ id: string; queue: string; body: string; sentAt: number; visibleAt: number }]>(
      `INSERT INTO messages (id, queue, body, sent_at, visible_at, receive_count, receipt)
       VALUES (@id, @queue, @body, @sentAt, @visibleAt, 0, NULL)`,
    ),
    deadLetter: db.prepare<[{ queue: string; deadLetterQueue: string; maxReceives: number; now: number }]>(
      // SQS keeps the message id when it dead-letters a message; its receive count starts over.
      `UPDATE messages SET queue = @deadLetterQueue, receive_count = 0, receipt = NULL, visible_at = @now
       WHERE queue = @queue AND visible_at <= @now AND receive_count >= @maxReceives`,
    ),
    visible: db.prepare<[{ queue: string; now: number; limit: number }], MessageRow>(
      `SELECT id, body, sent_at, receive_count FROM messages
       WHERE queue = @queue AND visible_at <= @now ORDER BY sent_at, rowid LIMIT @limit`,
    ),
    anyVisible: db
      .prepare<[{ queue: string; now: number }], number>(
        'SELECT 1 FROM messages WHERE queue = @queue AND visible_at <= @now LIMIT 1',
      )
      .pluck(),
    deliver: db.prepare<[{ id: string; visibleAt: number; receipt: string }]>(
      `UPDATE messages SET visible_at = @visibleAt, receive_count = receive_count + 1, receipt = @receipt
       WHERE id = @id`,
    ),
    delete: db.prepare<[{ queue: string; receipt: string }]>(
      'DELETE FROM messages WHERE queue = @queue AND receipt = @receipt',
    ),
    changeVisibility: db.prepare<[{ queue: string; receipt: string; visibleAt: number }]>(
      'UPDATE messages SET visible_at = @visibleAt WHERE queue = @queue AND receipt = @receipt',
    ),
    depth: db
      .prepare<[{ queue: string; now: number }], number>(
        'SELECT COUNT(*) FROM messages WHERE queue = @queue AND visible_at <= @now',
      )
      .pluck(),
  };
}
