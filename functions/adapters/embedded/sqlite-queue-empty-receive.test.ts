import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { afterEach, describe, expect, it } from 'vitest';
import { openDatabase } from './sqlite.js';
import { SqliteQueue } from './sqlite-queue.js';

const definitions = [
  { name: 'work', visibilityTimeoutSeconds: 30, deadLetterQueue: 'work-dlq', maxReceives: 2 },
  { name: 'work-dlq', visibilityTimeoutSeconds: 30 },
];

describe('SqliteQueue receive on an empty queue', () => {
  const dirs: string[] = [];
  afterEach(() => {
    for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
  });

  /** A queue on a file, with no busy wait, and another connection to the same file. */
  function open() {
    const dir = mkdtempSync(join(tmpdir(), 'gpuai-queue-'));
    dirs.push(dir);
    const file = join(dir, 'queue.db');
    const db = openDatabase(file);
    // Without a busy wait, a receive that asked for the write lock while another connection holds it would throw.
    db.pragma('busy_timeout = 0');
    const queue = new SqliteQueue(db, definitions);
    const other = new BetterSqlite3(file, { timeout: 0 });
    return { queue, other };
  }

  // A long poll rechecks an empty queue every 100 ms: those reads must not contend for the write
  // lock (nor commit anything), which is what every other write of the control plane waits on.
  it('takes no write lock: it returns no message while another connection holds the lock', async () => {
    const { queue, other } = open();
    other.exec('BEGIN IMMEDIATE');
    try {
      expect(await queue.receive('work', { waitSeconds: 0 })).toEqual([]);
    } finally {
      other.exec('ROLLBACK');
      other.close();
      await queue.close();
    }
  });

  it('still takes a visible message, and still dead-letters one received too often', async () => {
    const { queue, other } = open();
    other.close();
    try {
      await queue.send('work', 'a');
      const first = await queue.receive('work', { waitSeconds: 0, visibilityTimeoutSeconds: 0 });
      expect(first.map((m) => m.body)).toEqual(['a']);
      const second = await queue.receive('work', { waitSeconds: 0, visibilityTimeoutSeconds: 0 });
      expect(second.map((m) => m.receiveCount)).toEqual([2]);
      // Received maxReceives times: the next receive moves it to the dead-letter queue instead.
      expect(await queue.receive('work', { waitSeconds: 0 })).toEqual([]);
      expect((await queue.receive('work-dlq', { waitSeconds: 0 })).map((m) => m.body)).toEqual(['a']);
    } finally {
      await queue.close();
    }
  });
});
