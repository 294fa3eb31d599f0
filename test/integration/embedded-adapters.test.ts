import { spawn } from 'node:child_process';
import { getEventListeners } from 'node:events';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import BetterSqlite3 from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { LocalKeys } from '../../functions/adapters/embedded/local-keys.js';
import { MemorySignal } from '../../functions/adapters/embedded/memory-signal.js';
import { openDatabase } from '../../functions/adapters/embedded/sqlite.js';
import { SqliteQueue } from '../../functions/adapters/embedded/sqlite-queue.js';
import { SqliteStore } from '../../functions/adapters/embedded/sqlite-store.js';
import { KeyUnwrapError } from '../../functions/ports/keys.js';
import type { QueueDefinition } from '../../functions/ports/queue.js';
import type { ItemKey } from '../../functions/ports/store.js';
import { keysContract } from '../contract/keys-contract.js';
import { queueContract } from '../contract/queue-contract.js';
import { ManualClock, storeContract } from '../contract/store-contract.js';

/** A fresh directory under the OS temp dir, removed by the returned function. */
async function temporaryDirectory(): Promise<{ dir: string; remove: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'gpuai-embedded-'));
  return { dir, remove: () => rm(dir, { recursive: true, force: true }) };
}

/** Closes whatever adapters a test opened, then removes their directory. */
async function closeAll(closeables: readonly { close(): Promise<void> }[], remove: () => Promise<void>) {
  await Promise.all(closeables.map((c) => c.close()));
  await remove();
}

storeContract('SqliteStore', async () => {
  const { dir, remove } = await temporaryDirectory();
  // A directory that does not exist yet: opening the database creates it.
  const file = join(dir, 'data', 'gpuai.db');
  const clock = new ManualClock();
  const stores = [new SqliteStore(openDatabase(file), clock)];
  const [store] = stores as [SqliteStore];
  return {
    store,
    clock,
    reopen: async () => {
      const reopened = new SqliteStore(openDatabase(file), clock);
      stores.push(reopened);
      return reopened;
    },
    cleanup: () => closeAll(stores, remove),
  };
});

queueContract(
  'SqliteQueue',
  async (definitions) => {
    const { dir, remove } = await temporaryDirectory();
    const file = join(dir, 'gpuai.db');
    const queues = [new SqliteQueue(openDatabase(file), definitions)];
    const [queue] = queues as [SqliteQueue];
    return {
      queue,
      reopen: async () => {
        const reopened = new SqliteQueue(openDatabase(file), definitions);
        queues.push(reopened);
        return reopened;
      },
      cleanup: () => closeAll(queues, remove),
    };
  },
  { exclusiveReceive: true },
);

keysContract('LocalKeys', async () => LocalKeys.inMemory());

describe('openDatabase', () => {
  it('opens in WAL mode with the current schema version, and in memory', async () => {
    const { dir, remove } = await temporaryDirectory();
    const db = openDatabase(join(dir, 'a', 'b', 'gpuai.db'));
    const memory = openDatabase(':memory:');
    try {
      expect(db.pragma('journal_mode', { simple: true })).toBe('wal');
      expect(db.pragma('user_version', { simple: true })).toBe(2);
      expect(db.pragma('busy_timeout', { simple: true })).toBe(5000);
      expect(memory.pragma('user_version', { simple: true })).toBe(2);
    } finally {
      db.close();
      memory.close();
      await remove();
    }
  });

  it('brings a version 1 database up to version 2 (number fields), keeping its items', async () => {
    const { dir, remove } = await temporaryDirectory();
    const file = join(dir, 'gpuai.db');
    const old = new BetterSqlite3(file);
    old.exec(`CREATE TABLE items (pk TEXT NOT NULL, sk TEXT NOT NULL, version INTEGER NOT NULL, data TEXT NOT NULL,
      expires_at INTEGER, by_pool_pk TEXT, by_pool_sk TEXT, by_due_pk TEXT, by_due_sk TEXT, by_owner_pk TEXT,
      by_owner_sk TEXT, PRIMARY KEY (pk, sk)) WITHOUT ROWID`);
    old.exec(`INSERT INTO items (pk, sk, version, data) VALUES ('NODE#a', 'SEEN', 3, '{"hbDate":5}')`);
    old.pragma('user_version = 1');
    old.close();
    const store = new SqliteStore(openDatabase(file));
    try {
      expect(await store.get({ pk: 'NODE#a', sk: 'SEEN' })).toMatchObject({ version: 3, data: { hbDate: 5 } });
      await store.transact([
        { kind: 'put', key: { pk: 'NODE#a', sk: 'SEEN' }, data: {}, expectVersion: 3, numbers: { hbDate: 6 } },
      ]);
      await store.transact([
        { kind: 'update', key: { pk: 'NODE#a', sk: 'SEEN' }, set: { hbDate: 7 }, when: { hbDate: { below: 7 } } },
      ]);
      expect(await store.get({ pk: 'NODE#a', sk: 'SEEN' })).toMatchObject({ version: 5, data: { hbDate: 7 } });
    } finally {
      await store.close();
      await remove();
    }
  });

  it('refuses a database written by a newer schema', async () => {
    const { dir, remove } = await temporaryDirectory();
    const file = join(dir, 'gpuai.db');
    const db = openDatabase(file);
    db.pragma('user_version = 99');
    db.close();
    try {
      expect(() => openDatabase(file)).toThrow(/schema version 99/);
    } finally {
      await remove();
    }
  });
});

describe('SqliteStore', () => {
  let store: SqliteStore;
  let clock: ManualClock;

  beforeEach(() => {
    clock = new ManualClock();
    store = new SqliteStore(openDatabase(':memory:'), clock);
  });

  afterEach(async () => {
    await store.close();
  });

  it('matches prefixes exactly at the edges of the code point range', async () => {
    const sks = ['a\uD7FE', 'a\uD7FF', 'a\uD7FFz', 'a\uE000', 'b', '\u{10FFFF}', '\u{10FFFF}x'];
    await store.transact(sks.map((sk) => ({ kind: 'put', key: { pk: 'p', sk }, data: sk, expectVersion: 0 })));
    const withPrefix = async (skPrefix: string) => (await store.query({ pk: 'p', skPrefix })).items.map((i) => i.sk);

    expect(await withPrefix('a\uD7FF')).toEqual(['a\uD7FF', 'a\uD7FFz']);
    expect(await withPrefix('\u{10FFFF}')).toEqual(['\u{10FFFF}', '\u{10FFFF}x']);
    expect(await withPrefix('a')).toEqual(['a\uD7FE', 'a\uD7FF', 'a\uD7FFz', 'a\uE000']);
  });

  it('rejects malformed queries and writes with an error that says what is wrong', async () => {
    await expect(store.query({ pk: 'p', cursor: 'not-a-cursor' })).rejects.toThrow(/cursor/);
    await expect(store.query({ pk: 'p', limit: 0 })).rejects.toThrow(/limit/);
    await expect(
      store.transact([{ kind: 'put', key: { pk: 'p', sk: 's' }, data: undefined, expectVersion: 0 }]),
    ).rejects.toThrow(/write 0 .* not JSON/);
    await expect(store.transact([{ kind: 'check', key: { pk: '', sk: 's' }, expectVersion: 0 }])).rejects.toThrow(
      /non-empty/,
    );
    await expect(store.transact([{ kind: 'check', key: { pk: 'p', sk: 's' }, expectVersion: -1 }])).rejects.toThrow(
      /version -1/,
    );
  });

  it('deletes expired rows on request, leaving live ones', async () => {
    const expiresAt = Math.ceil(clock.now() / 1000) + 10;
    await store.transact([
      { kind: 'put', key: { pk: 'p', sk: 'expiring' }, data: 1, expiresAt, expectVersion: 0 },
      { kind: 'put', key: { pk: 'p', sk: 'lasting' }, data: 2, expiresAt: expiresAt + 3600, expectVersion: 0 },
    ]);

    expect(store.deleteExpired()).toBe(0);
    clock.advance(10_000 + 1000);
    expect(store.deleteExpired()).toBe(1);
    expect(store.deleteExpired()).toBe(0);
    expect((await store.query({ pk: 'p' })).items.map((i) => i.sk)).toEqual(['lasting']);
  });
});

describe('SqliteStore instances sharing a file', () => {
  const counter: ItemKey = { pk: 'counter', sk: 'counter' };
  let dir: string;
  let remove: () => Promise<void>;

  beforeEach(async () => {
    ({ dir, remove } = await temporaryDirectory());
  });

  afterEach(async () => {
    await remove();
  });

  it('let one conditional write win across instances', async () => {
    const file = join(dir, 'gpuai.db');
    const stores = [new SqliteStore(openDatabase(file)), new SqliteStore(openDatabase(file))];
    try {
      await stores[0]?.transact([{ kind: 'put', key: counter, data: 0, expectVersion: 0 }]);
      for (let round = 1; round <= 20; round++) {
        const results = await Promise.allSettled(
          Array.from({ length: 10 }, (_, writer) =>
            stores[writer % 2]?.transact([{ kind: 'put', key: counter, data: round, expectVersion: round }]),
          ),
        );
        expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
        for (const store of stores) {
          expect(await store.get(counter)).toMatchObject({ version: round + 1, data: round });
        }
      }
    } finally {
      await Promise.all(stores.map((s) => s.close()));
    }
  });

  it('lose no update when processes increment one item concurrently', async () => {
    const file = join(dir, 'gpuai.db');
    const setup = new SqliteStore(openDatabase(file));
    await setup.transact([{ kind: 'put', key: counter, data: 0, expectVersion: 0 }]);
    await setup.close();

    const processes = 4;
    const increments = 150;
    const results = await Promise.all(Array.from({ length: processes }, () => startIncrementer(file, increments)));
    for (const child of results) {
      child.go();
    }
    const conflicts = await Promise.all(results.map((child) => child.done));

    const store = new SqliteStore(openDatabase(file));
    try {
      expect(await store.get(counter)).toMatchObject({
        version: 1 + processes * increments,
        data: processes * increments,
      });
      // Proof that the processes really did race for the item.
      expect(conflicts.reduce((a, b) => a + b, 0)).toBeGreaterThan(0);
    } finally {
      await store.close();
    }
  });
});

/**
 * A child process that, once told to go, increments the counter item `increments` times with
 * read-then-conditional-write, retrying on conflicts; `done` yields how many conflicts it met.
 */
async function startIncrementer(file: string, increments: number): Promise<{ go: () => void; done: Promise<number> }> {
  const module = (path: string) => new URL(path, import.meta.url).href;
  const script = `
    const [file, increments, storeModule, sqliteModule, portsModule] = process.argv.slice(1);
    const { SqliteStore } = await import(storeModule);
    const { openDatabase } = await import(sqliteModule);
    const { ConditionFailedError } = await import(portsModule);
    const store = new SqliteStore(openDatabase(file));
    const key = { pk: 'counter', sk: 'counter' };
    process.stdout.write('ready\\n');
    await new Promise((resolve) => process.stdin.once('data', resolve));
    process.stdin.destroy();
    let conflicts = 0;
    for (let done = 0; done < Number(increments); ) {
      const item = await store.get(key);
      await new Promise((resolve) => setImmediate(resolve));
      try {
        await store.transact([{ kind: 'put', key, data: item.data + 1, expectVersion: item.version }]);
        done++;
      } catch (error) {
        if (!(error instanceof ConditionFailedError)) throw error;
        conflicts++;
      }
    }
    await store.close();
    process.stdout.write(JSON.stringify({ conflicts }) + '\\n');
  `;
  const child = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      '--input-type=module',
      '-e',
      script,
      file,
      String(increments),
      module('../../functions/adapters/embedded/sqlite-store.ts'),
      module('../../functions/adapters/embedded/sqlite.ts'),
      module('../../functions/ports/store.ts'),
    ],
    { cwd: fileURLToPath(new URL('../../', import.meta.url)), stdio: ['pipe', 'pipe', 'pipe'] },
  );
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => {
    stdout += chunk.toString();
  });
  child.stderr.on('data', (chunk: Buffer) => {
    stderr += chunk.toString();
  });
  const done = new Promise<number>((resolve, reject) => {
    child.on('error', reject);
    child.on('exit', (code) => {
      const last = stdout.trim().split('\n').at(-1) ?? '';
      if (code !== 0 || !last.startsWith('{')) {
        reject(new Error(`incrementer exited with ${code}: ${stderr || stdout}`));
      } else {
        resolve((JSON.parse(last) as { conflicts: number }).conflicts);
      }
    });
  });
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', () => {
      if (stdout.includes('ready\n')) {
        resolve();
      }
    });
    done.catch(reject);
  });
  return { go: () => child.stdin.end('go\n'), done };
}

describe('SqliteQueue', () => {
  const definitions: QueueDefinition[] = [
    { name: 'work', visibilityTimeoutSeconds: 30, maxReceives: 1, deadLetterQueue: 'dead' },
    { name: 'dead', visibilityTimeoutSeconds: 30 },
  ];
  let dir: string;
  let remove: () => Promise<void>;
  let queue: SqliteQueue;

  beforeEach(async () => {
    ({ dir, remove } = await temporaryDirectory());
    queue = new SqliteQueue(openDatabase(join(dir, 'gpuai.db')), definitions);
  });

  afterEach(async () => {
    await closeAll([queue], remove);
  });

  it('delivers in send order', async () => {
    for (let i = 0; i < 5; i++) {
      await queue.send('work', `m${i}`);
    }

    expect((await queue.receive('work', { maxMessages: 10 })).map((m) => m.body)).toEqual([
      'm0',
      'm1',
      'm2',
      'm3',
      'm4',
    ]);
  });

  it('treats the handle of a deleted message as stale', async () => {
    await queue.send('work', 'job');
    const [message] = await queue.receive('work');
    const handle = message?.receiptHandle ?? '';

    expect(await queue.delete('work', handle)).toBe(true);
    expect(await queue.delete('work', handle)).toBe(false);
    expect(await queue.changeVisibility('work', handle, 0)).toBe(false);
  });

  it('keeps the message id when dead-lettering, and restarts its receive count', async () => {
    const id = await queue.send('work', 'poison');
    const [first] = await queue.receive('work');
    await queue.changeVisibility('work', first?.receiptHandle ?? '', 0);

    expect(await queue.receive('work')).toEqual([]);
    expect(await queue.receive('dead')).toMatchObject([{ id, body: 'poison', receiveCount: 1 }]);
  });

  it('counts only visible messages in its depth', async () => {
    await queue.send('work', 'a');
    await queue.send('work', 'b');
    await queue.send('work', 'delayed', { delaySeconds: 60 });
    expect(await queue.depth('work')).toBe(2);

    await queue.receive('work');
    expect(await queue.depth('work')).toBe(1);
    expect(await queue.depth('dead')).toBe(0);
  });

  it('ends pending long polls with no messages when closed, and refuses work afterwards', async () => {
    const started = Date.now();
    const polling = queue.receive('work', { waitSeconds: 20 });
    await new Promise((resolve) => setTimeout(resolve, 50));
    await queue.close();

    expect(await polling).toEqual([]);
    expect(Date.now() - started).toBeLessThan(1000);
    await expect(queue.send('work', 'late')).rejects.toThrow(/closed/);
  });

  it('wakes a long poll for a message sent through another connection to the file', async () => {
    const other = new SqliteQueue(openDatabase(join(dir, 'gpuai.db')), definitions);
    try {
      const started = Date.now();
      const polling = queue.receive('work', { waitSeconds: 10 });
      await new Promise((resolve) => setTimeout(resolve, 150));
      await other.send('work', 'from elsewhere');

      expect((await polling).map((m) => m.body)).toEqual(['from elsewhere']);
      expect(Date.now() - started).toBeLessThan(1000);
    } finally {
      await other.close();
    }
  });

  it('rejects inconsistent queue definitions', () => {
    const db = openDatabase(':memory:');
    const attempts: QueueDefinition[][] = [
      [{ name: 'a', visibilityTimeoutSeconds: 30, maxReceives: 3 }],
      [{ name: 'a', visibilityTimeoutSeconds: 30, maxReceives: 3, deadLetterQueue: 'missing' }],
      [{ name: 'a', visibilityTimeoutSeconds: 30, maxReceives: 3, deadLetterQueue: 'a' }],
      [{ name: 'a', visibilityTimeoutSeconds: -1 }],
      [
        { name: 'a', visibilityTimeoutSeconds: 30 },
        { name: 'a', visibilityTimeoutSeconds: 60 },
      ],
    ];
    try {
      for (const attempt of attempts) {
        expect(() => new SqliteQueue(db, attempt)).toThrow(/queue/);
      }
    } finally {
      db.close();
    }
  });
});

describe('LocalKeys', () => {
  let dir: string;
  let remove: () => Promise<void>;

  beforeEach(async () => {
    ({ dir, remove } = await temporaryDirectory());
  });

  afterEach(async () => {
    await remove();
  });

  it('creates a private master key file once and reloads it', async () => {
    const context = { jobId: 'job-1' };
    const { plaintext, wrapped } = await LocalKeys.open(dir).generateDataKey(context);
    const file = join(dir, 'master.key');
    const created = await readFile(file);

    expect((await stat(file)).mode & 0o777).toBe(0o600);
    expect(created).toHaveLength(32);
    expect(wrapped.startsWith('local1.')).toBe(true);
    const reloaded = LocalKeys.open(dir);
    expect(Buffer.from(await reloaded.unwrap(wrapped, context)).equals(Buffer.from(plaintext))).toBe(true);
    expect((await readFile(file)).equals(created)).toBe(true);
  });

  it('does not unwrap a key wrapped under another master key', async () => {
    const context = { jobId: 'job-1' };
    const { wrapped } = await LocalKeys.open(join(dir, 'one')).generateDataKey(context);

    await expect(LocalKeys.open(join(dir, 'two')).unwrap(wrapped, context)).rejects.toBeInstanceOf(KeyUnwrapError);
  });

  it('refuses a master key file of the wrong size', async () => {
    await writeFile(join(dir, 'master.key'), Buffer.alloc(16), { mode: 0o600 });

    expect(() => LocalKeys.open(dir)).toThrow(/16 bytes instead of 32/);
  });
});

describe('MemorySignal', () => {
  let signal: MemorySignal;

  beforeEach(() => {
    vi.useFakeTimers();
    signal = new MemorySignal();
  });

  afterEach(() => {
    vi.useRealTimers();
  });

  /** Whether `promise` has settled, without waiting for it. */
  async function settled(promise: Promise<unknown>): Promise<boolean> {
    let done = false;
    void promise.then(() => {
      done = true;
    });
    await vi.advanceTimersByTimeAsync(0);
    return done;
  }

  it('wakes the waiters of a notified topic only, and releases their timers', async () => {
    const onAOrB = signal.wait(['a', 'b'], 60_000);
    const onC = signal.wait(['c'], 60_000);
    expect(vi.getTimerCount()).toBe(2);

    signal.notify('b');
    expect(await settled(onAOrB)).toBe(true);
    expect(await settled(onC)).toBe(false);
    expect(vi.getTimerCount()).toBe(1);

    signal.notify('c');
    expect(await settled(onC)).toBe(true);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('times out without a notification, and a later notification reaches only new waiters', async () => {
    const waiting = signal.wait(['a'], 1000);
    await vi.advanceTimersByTimeAsync(999);
    expect(await settled(waiting)).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(await settled(waiting)).toBe(true);

    const next = signal.wait(['a'], 1000);
    signal.notify('a');
    expect(await settled(next)).toBe(true);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('wakes one waiter per notification, the longest waiting first, not every waiter of the topic', async () => {
    const first = signal.wait(['a'], 60_000);
    const second = signal.wait(['a'], 60_000);
    signal.notify('a', 'task-1');
    expect(await first).toEqual({ topic: 'a', payload: 'task-1' });
    expect(await settled(second)).toBe(false);
    signal.notify('a');
    expect(await settled(second)).toBe(true);
    expect(signal.missed('a')).toBe(0);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('wakes only a waiter that accepts the payload, and counts a notification that wakes nobody', async () => {
    const small = signal.wait(['a'], 60_000, undefined, (p) => p === 'small');
    const any = signal.wait(['a'], 60_000, undefined, () => true);
    signal.notify('a', 'big');
    expect(await settled(small)).toBe(false);
    expect(await any).toEqual({ topic: 'a', payload: 'big' });
    signal.notify('a', 'big');
    expect(signal.missed('a')).toBe(1);
    expect(await settled(small)).toBe(false);
    signal.notify('b');
    expect(signal.missed('b')).toBe(1);
    signal.notify('a', 'small');
    expect(await settled(small)).toBe(true);
    expect(signal.missed('a')).toBe(1);
  });

  it('ends a wait on abort and removes its abort listener', async () => {
    const controller = new AbortController();
    const waiting = signal.wait(['a'], 60_000, controller.signal);
    expect(getEventListeners(controller.signal, 'abort')).toHaveLength(1);

    controller.abort();
    expect(await settled(waiting)).toBe(true);
    expect(getEventListeners(controller.signal, 'abort')).toHaveLength(0);
    expect(vi.getTimerCount()).toBe(0);

    const other = new AbortController();
    const notified = signal.wait(['a'], 60_000, other.signal);
    signal.notify('a');
    expect(await settled(notified)).toBe(true);
    expect(getEventListeners(other.signal, 'abort')).toHaveLength(0);
    expect(await settled(signal.wait(['a'], 60_000, controller.signal))).toBe(true);
    expect(vi.getTimerCount()).toBe(0);
  });
});
