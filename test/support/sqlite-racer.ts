/**
 * One racer of test/integration/sqlite-multiprocess.test.ts: a separate OS process that opens the
 * shared SQLite file with the embedded adapters and races the other racers on it.
 *
 * Protocol: the racer prints `ready` once started; then each line on stdin is a JSON
 * {@link RacerOrder}, which it runs at once (the test writes one to every racer together, so the
 * line is the starting gun) before printing one JSON {@link RacerReport} line. It exits when stdin
 * ends. Anything but a lost condition (a busy database, a locked file) is an error: it is
 * reported, never retried, so the test sees it. One process serves all of a file's races, so the
 * test pays for starting TypeScript processes once.
 */
import { createInterface } from 'node:readline';
import { pathToFileURL } from 'node:url';
import { openDatabase } from '../../functions/adapters/embedded/sqlite.js';
import { SqliteQueue } from '../../functions/adapters/embedded/sqlite-queue.js';
import { SqliteStore } from '../../functions/adapters/embedded/sqlite-store.js';
import type { QueueDefinition } from '../../functions/ports/queue.js';
import { ConditionFailedError, type ItemKey } from '../../functions/ports/store.js';

export const racerQueue: QueueDefinition = { name: 'race', visibilityTimeoutSeconds: 600 };

export type RacerOrder =
  /** Open the file (created by nobody yet) at the gun, and write one item of its own. */
  | { kind: 'open'; file: string; racer: number }
  /** Try to take every one of `tasks` items (at version 1) from the others: one conditional put each. */
  | { kind: 'claim'; file: string; racer: number; tasks: number }
  /** Add one to a shared counter `times` times, read-modify-write, retrying lost conditions. */
  | { kind: 'increment'; file: string; racer: number; times: number }
  /** Receive and delete messages from {@link racerQueue} until none is left. */
  | { kind: 'drain'; file: string; racer: number };

export interface RacerReport {
  racer: number;
  /** claim: the tasks won; drain: the message bodies received. */
  won: string[];
  /** Conditions lost (claim, increment) or deletes refused (drain). */
  lost: number;
  /** Every error that is not a lost condition, as text. */
  errors: string[];
}

export const counterKey: ItemKey = { pk: 'COUNTER', sk: 'c' };
export const taskKey = (index: number): ItemKey => ({ pk: `TASK#${index}`, sk: 't' });

async function main(): Promise<void> {
  const lines = createInterface({ input: process.stdin });
  process.stdout.write('ready\n');
  for await (const line of lines) {
    process.stdout.write(`${JSON.stringify(await run(JSON.parse(line) as RacerOrder))}\n`);
  }
}

async function run(order: RacerOrder): Promise<RacerReport> {
  const report: RacerReport = { racer: order.racer, won: [], lost: 0, errors: [] };
  let store: SqliteStore | undefined;
  let queue: SqliteQueue | undefined;
  try {
    switch (order.kind) {
      case 'open':
        store = new SqliteStore(openDatabase(order.file));
        await store.transact([
          { kind: 'put', key: { pk: `RACER#${order.racer}`, sk: 'r' }, data: 1, expectVersion: 0 },
        ]);
        break;
      case 'claim':
        store = new SqliteStore(openDatabase(order.file));
        await claim(store, order.racer, order.tasks, report);
        break;
      case 'increment':
        store = new SqliteStore(openDatabase(order.file));
        await increment(store, order.times, report);
        break;
      case 'drain':
        queue = new SqliteQueue(openDatabase(order.file), [racerQueue]);
        await drain(queue, report);
        break;
    }
  } catch (error) {
    report.errors.push(String(error));
  } finally {
    await store?.close();
    await queue?.close();
  }
  return report;
}

async function claim(store: SqliteStore, racer: number, tasks: number, report: RacerReport): Promise<void> {
  // Each racer walks the tasks from a different place, so every task sees real contention.
  for (let step = 0; step < tasks; step++) {
    const index = (step + racer * 7) % tasks;
    try {
      await store.transact([{ kind: 'put', key: taskKey(index), data: { owner: racer }, expectVersion: 1 }]);
      report.won.push(String(index));
    } catch (error) {
      if (error instanceof ConditionFailedError) report.lost++;
      else report.errors.push(String(error));
    }
  }
}

async function increment(store: SqliteStore, times: number, report: RacerReport): Promise<void> {
  for (let done = 0; done < times; ) {
    const item = await store.get<number>(counterKey);
    if (item === undefined) throw new Error('the counter is missing');
    try {
      await store.transact([{ kind: 'put', key: counterKey, data: item.data + 1, expectVersion: item.version }]);
      done++;
    } catch (error) {
      if (!(error instanceof ConditionFailedError)) throw error;
      report.lost++;
    }
  }
}

async function drain(queue: SqliteQueue, report: RacerReport): Promise<void> {
  for (;;) {
    // A visibility timeout far past the test's length: a message received once is never seen again.
    const messages = await queue.receive(racerQueue.name, { maxMessages: 3, waitSeconds: 0 });
    if (messages.length === 0) return;
    for (const message of messages) {
      report.won.push(message.body);
      if (!(await queue.delete(racerQueue.name, message.receiptHandle))) report.lost++;
    }
  }
}

// Imported by the test for its shared names; run as a racer only as a process's entry point.
if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) await main();
