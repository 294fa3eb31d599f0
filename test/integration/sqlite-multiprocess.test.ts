import { type ChildProcess, spawn } from 'node:child_process';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { openDatabase } from '../../functions/adapters/embedded/sqlite.js';
import { SqliteQueue } from '../../functions/adapters/embedded/sqlite-queue.js';
import { SqliteStore } from '../../functions/adapters/embedded/sqlite-store.js';
import { repoRoot, tempDir } from '../support/processes.js';
import { counterKey, type RacerOrder, type RacerReport, racerQueue, taskKey } from '../support/sqlite-racer.js';

/**
 * The store contract's "exactly one of many concurrent writers wins" with real concurrency:
 * better-sqlite3 is synchronous, so within one process writes never overlap. Here several OS
 * processes share one database file, as `npm start` and a second process on the same data dir
 * would, and race after a common starting gun. Nothing may be lost, nothing won twice, and no
 * racer may see an error other than a lost condition (a busy or locked database is a defect).
 */

const racers = 6;
const racerScript = `${repoRoot}/test/support/sqlite-racer.ts`;

/** A racer process, started once for the whole file. */
interface Racer {
  child: ChildProcess;
  /** Lines it printed that nobody has taken yet, and the taker waiting for the next one. */
  lines: string[];
  waiting: ((line: string) => void) | undefined;
  stderr: string;
}

let pool: Racer[] = [];
let dir: ReturnType<typeof tempDir>;
let file: string;

beforeAll(async () => {
  pool = Array.from({ length: racers }, () => {
    const child = spawn(process.execPath, ['--import', 'tsx', racerScript], {
      cwd: repoRoot,
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    const racer: Racer = { child, lines: [], waiting: undefined, stderr: '' };
    child.stderr?.on('data', (chunk: Buffer) => {
      racer.stderr += chunk.toString();
    });
    createInterface({ input: child.stdout as Readable }).on('line', (line) => {
      const taker = racer.waiting;
      racer.waiting = undefined;
      if (taker) taker(line);
      else racer.lines.push(line);
    });
    return racer;
  });
  expect(await Promise.all(pool.map(nextLine))).toEqual(pool.map(() => 'ready'));
}, 120_000);

afterAll(() => {
  for (const { child } of pool) child.stdin?.end();
});

beforeEach(() => {
  dir = tempDir('sqlite-race');
  file = `${dir.path}/data/gpuai.db`;
});
afterEach(() => dir.remove());

/** The racer's next line; fails with what it wrote on stderr if it exits first. */
function nextLine(racer: Racer): Promise<string> {
  const queued = racer.lines.shift();
  if (queued !== undefined) return Promise.resolve(queued);
  return new Promise((resolve, reject) => {
    const exited = (code: number | null) => reject(new Error(`a racer exited (${code}): ${racer.stderr.slice(-2000)}`));
    racer.child.once('exit', exited);
    racer.waiting = (line) => {
      racer.child.off('exit', exited);
      resolve(line);
    };
  });
}

/** Gives every racer its order at once (the starting gun) and returns their reports. */
async function race(orders: RacerOrder[]): Promise<RacerReport[]> {
  for (const [i, order] of orders.entries()) pool[i]?.child.stdin?.write(`${JSON.stringify(order)}\n`);
  const lines = await Promise.all(orders.map((_, i) => nextLine(pool[i] as Racer)));
  return lines.map((line) => JSON.parse(line) as RacerReport);
}

const each = <T>(make: (racer: number) => T): T[] => Array.from({ length: racers }, (_, racer) => make(racer));

describe('SQLite shared by several processes', () => {
  it('lets every process open a new database file at the same moment', async () => {
    const reports = await race(each((racer) => ({ kind: 'open', file, racer })));

    expect(reports.flatMap((r) => r.errors)).toEqual([]);
    const store = new SqliteStore(openDatabase(file));
    try {
      for (let racer = 0; racer < racers; racer++) {
        expect(await store.get({ pk: `RACER#${racer}`, sk: 'r' })).toMatchObject({ version: 1 });
      }
    } finally {
      await store.close();
    }
  }, 30_000);

  it('gives each contended item to exactly one process, and stores that winner', async () => {
    const tasks = 200;
    const setup = new SqliteStore(openDatabase(file));
    for (let i = 0; i < tasks; i += 100) {
      const batch = Array.from({ length: Math.min(100, tasks - i) }, (_, j) => i + j);
      await setup.transact(
        batch.map((t) => ({ kind: 'put', key: taskKey(t), data: { owner: null }, expectVersion: 0 })),
      );
    }
    await setup.close();

    const reports = await race(each((racer) => ({ kind: 'claim', file, racer, tasks })));

    expect(reports.flatMap((r) => r.errors)).toEqual([]);
    const winners = new Map<string, number[]>();
    for (const r of reports) for (const t of r.won) winners.set(t, [...(winners.get(t) ?? []), r.racer]);
    expect(winners.size).toBe(tasks);
    expect([...winners.values()].filter((w) => w.length !== 1)).toEqual([]);
    expect(reports.reduce((sum, r) => sum + r.lost, 0)).toBe(tasks * (racers - 1));
    const store = new SqliteStore(openDatabase(file));
    try {
      for (let t = 0; t < tasks; t++) {
        const item = await store.get<{ owner: number }>(taskKey(t));
        expect(item).toMatchObject({ version: 2, data: { owner: winners.get(String(t))?.[0] } });
      }
    } finally {
      await store.close();
    }
  }, 30_000);

  it('loses no update when processes read-modify-write one item', async () => {
    const times = 100;
    const setup = new SqliteStore(openDatabase(file));
    await setup.transact([{ kind: 'put', key: counterKey, data: 0, expectVersion: 0 }]);
    await setup.close();

    const reports = await race(each((racer) => ({ kind: 'increment', file, racer, times })));

    expect(reports.flatMap((r) => r.errors)).toEqual([]);
    const store = new SqliteStore(openDatabase(file));
    try {
      expect(await store.get(counterKey)).toMatchObject({ version: racers * times + 1, data: racers * times });
    } finally {
      await store.close();
    }
  }, 30_000);

  it('delivers each queued message to exactly one process', async () => {
    const messages = 300;
    const setup = new SqliteQueue(openDatabase(file), [racerQueue]);
    for (let m = 0; m < messages; m++) await setup.send(racerQueue.name, `m${m}`);
    await setup.close();

    const reports = await race(each((racer) => ({ kind: 'drain', file, racer })));

    expect(reports.flatMap((r) => r.errors)).toEqual([]);
    expect(reports.reduce((sum, r) => sum + r.lost, 0)).toBe(0);
    const received = reports.flatMap((r) => r.won).sort();
    expect(received).toEqual(Array.from({ length: messages }, (_, m) => `m${m}`).sort());
    const queue = new SqliteQueue(openDatabase(file), [racerQueue]);
    try {
      expect(await queue.depth(racerQueue.name)).toBe(0);
      expect(await queue.receive(racerQueue.name, { visibilityTimeoutSeconds: 0 })).toEqual([]);
    } finally {
      await queue.close();
    }
  }, 30_000);
});
