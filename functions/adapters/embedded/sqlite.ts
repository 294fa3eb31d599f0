import { dirname } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { ensurePrivateDir, ensurePrivateFile } from './private-files.js';

/** A better-sqlite3 connection, as used by the embedded adapters. */
export type Database = BetterSqlite3.Database;

/** The schema this code writes; stored in SQLite's `user_version` pragma. */
export const schemaVersion = 2;

/**
 * Both adapters' tables in one file, so a single data directory holds the whole control plane.
 * Each secondary index only covers the rows that project a key into it (partial indexes), and
 * carries the table key as a tie-breaker so that query pages have a total order.
 */
const schema = `
  CREATE TABLE IF NOT EXISTS items (
    pk TEXT NOT NULL,
    sk TEXT NOT NULL,
    version INTEGER NOT NULL,
    data TEXT NOT NULL,
    expires_at INTEGER,
    by_pool_pk TEXT,
    by_pool_sk TEXT,
    by_due_pk TEXT,
    by_due_sk TEXT,
    by_owner_pk TEXT,
    by_owner_sk TEXT,
    numbers TEXT,
    PRIMARY KEY (pk, sk)
  ) WITHOUT ROWID;
  CREATE INDEX IF NOT EXISTS items_by_pool ON items (by_pool_pk, by_pool_sk, pk, sk) WHERE by_pool_pk IS NOT NULL;
  CREATE INDEX IF NOT EXISTS items_by_due ON items (by_due_pk, by_due_sk, pk, sk) WHERE by_due_pk IS NOT NULL;
  CREATE INDEX IF NOT EXISTS items_by_owner ON items (by_owner_pk, by_owner_sk, pk, sk) WHERE by_owner_pk IS NOT NULL;
  CREATE INDEX IF NOT EXISTS items_by_expiry ON items (expires_at) WHERE expires_at IS NOT NULL;

  CREATE TABLE IF NOT EXISTS messages (
    id TEXT PRIMARY KEY,
    queue TEXT NOT NULL,
    body TEXT NOT NULL,
    sent_at INTEGER NOT NULL,
    visible_at INTEGER NOT NULL,
    receive_count INTEGER NOT NULL DEFAULT 0,
    receipt TEXT
  );
  CREATE INDEX IF NOT EXISTS messages_by_queue ON messages (queue, sent_at);
  CREATE UNIQUE INDEX IF NOT EXISTS messages_by_receipt ON messages (receipt) WHERE receipt IS NOT NULL;
`;

/**
 * Opens (creating if needed) the SQLite database at `file`, or an in-memory one for `':memory:'`,
 * and brings its schema up to {@link schemaVersion}. The file, its WAL and the directory are
 * private to the user (0600, 0700), whatever mode they had.
 *
 * WAL lets readers proceed while one writer commits; `synchronous = NORMAL` is durable across
 * process crashes in WAL mode (only an OS crash can lose the last commits); the busy timeout makes
 * writers in other processes sharing the file wait for the lock instead of failing at once.
 */
export function openDatabase(file: string): Database {
  if (file !== ':memory:') {
    // The data directory also holds the master key, and the database every job and node: keep both
    // private to the user, even where the directory or the file existed before with a wider mode.
    ensurePrivateDir(dirname(file));
    ensurePrivateFile(file, [`${file}-wal`, `${file}-shm`]);
  }
  const db = new BetterSqlite3(file);
  try {
    db.pragma('busy_timeout = 5000');
    whileBusy(() => db.pragma('journal_mode = WAL'));
    db.pragma('synchronous = NORMAL');
    db.pragma('foreign_keys = ON');
    whileBusy(() => migrate(db, file));
    return db;
  } catch (error) {
    db.close();
    throw error;
  }
}

/** How long opening keeps trying a step that found the file busy (see {@link whileBusy}). */
const openBusyLimitMs = 10_000;

/**
 * Runs `step` again while it fails with SQLITE_BUSY, for up to {@link openBusyLimitMs}. Switching a
 * fresh file to WAL, or reading a WAL index another process is still building, can answer BUSY
 * without waiting on the busy timeout (SQLite does not call the busy handler there, to avoid
 * deadlocks), so processes that open a new database at the same moment would otherwise fail
 * (test/integration/sqlite-multiprocess.test.ts). Opening is rare and synchronous: a short sleep
 * between tries blocks nothing that could run meanwhile.
 */
function whileBusy<T>(step: () => T): T {
  const giveUpAt = Date.now() + openBusyLimitMs;
  for (let pause = 5; ; pause = Math.min(pause * 2, 200)) {
    try {
      return step();
    } catch (error) {
      const busy = error instanceof BetterSqlite3.SqliteError && error.code.startsWith('SQLITE_BUSY');
      if (!busy || Date.now() + pause > giveUpAt) throw error;
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, pause);
    }
  }
}

function migrate(db: Database, file: string): void {
  // IMMEDIATE: two processes opening a fresh file at once must not both try to create the schema.
  db.transaction(() => {
    const found = db.pragma('user_version', { simple: true });
    if (typeof found !== 'number' || found > schemaVersion) {
      throw new Error(`database ${file} has schema version ${String(found)}, newer than this build's ${schemaVersion}`);
    }
    db.exec(schema);
    // Version 2: the items' number fields (a put's numbers, the set fields of adds and updates), as JSON.
    if (found === 1) db.exec('ALTER TABLE items ADD COLUMN numbers TEXT');
    db.pragma(`user_version = ${schemaVersion}`);
  }).immediate();
}
