import { randomUUID } from 'node:crypto';
import fc from 'fast-check';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { InvalidRequestError } from '../../functions/domain/errors.js';
import type { Clock } from '../../functions/ports/clock.js';
import {
  ConditionFailedError,
  type IndexKey,
  type IndexName,
  type ItemKey,
  maxTransactionWrites,
  type QueryOptions,
  type Store,
  type StoredItem,
  type Write,
} from '../../functions/ports/store.js';

/** A clock the suite can move forward, so expiry is tested without waiting. */
export interface ControllableClock extends Clock {
  advance(ms: number): void;
}

/** A {@link ControllableClock} that stands still until told to move. */
export class ManualClock implements ControllableClock {
  #now: number;

  constructor(start: number = Date.now()) {
    this.#now = start;
  }

  now(): number {
    return this.#now;
  }

  advance(ms: number): void {
    this.#now += ms;
  }
}

/** What a {@link storeContract} factory hands the suite for one test. */
export interface StoreFixture {
  store: Store;
  /** The clock the store judges expiry by. */
  clock: ControllableClock;
  /**
   * Opens the same data again, after the suite has closed `store`. Only for adapters whose data
   * outlives a connection; the persistence test is skipped without it.
   */
  reopen?: () => Promise<Store>;
  /** Releases everything the fixture made, stores returned by `reopen` included. */
  cleanup(): Promise<void>;
}

/** How hard {@link storeContract} works an adapter. */
export interface StoreContractOptions {
  /**
   * Runs of the model-based test over random transactions (default 100). A backend reached over
   * the network, such as an emulator at a few hundred requests a second, may run fewer.
   */
  propertyRuns?: number;
}

/**
 * The behaviour every {@link Store} adapter must show. Each test writes under keys of its own, so
 * adapters may share one table between tests.
 */
export function storeContract(
  name: string,
  makeStore: () => Promise<StoreFixture>,
  options: StoreContractOptions = {},
): void {
  const propertyRuns = options.propertyRuns ?? 100;
  describe(`Store contract: ${name}`, () => {
    let fixture: StoreFixture;
    let store: Store;
    /** Unique to the test, so the suite never sees another test's items. */
    let ns: string;
    const key = (id: string, sk = 'item'): ItemKey => ({ pk: `${ns}#${id}`, sk });
    const poolPk = () => `POOL#${ns}`;

    beforeEach(async () => {
      fixture = await makeStore();
      store = fixture.store;
      ns = randomUUID();
    });

    afterEach(async () => {
      await fixture.cleanup();
    });

    it('puts an item that must not exist, then reads it back', async () => {
      const expiresAt = Math.ceil(fixture.clock.now() / 1000) + 3600;
      await store.transact([
        {
          kind: 'put',
          key: key('job'),
          data: { state: 'queued', tags: ['a', 'b'], cost: 1.5 },
          indexes: { byPool: { pk: poolPk(), sk: '1#0001#job' } },
          expiresAt,
          expectVersion: 0,
        },
      ]);

      expect(await store.get(key('job'))).toEqual({
        ...key('job'),
        version: 1,
        data: { state: 'queued', tags: ['a', 'b'], cost: 1.5 },
        indexes: { byPool: { pk: poolPk(), sk: '1#0001#job' } },
        expiresAt,
      });
      expect(await store.get(key('job', 'other-sk'))).toBeUndefined();
      expect(await store.get(key('missing'))).toBeUndefined();
    });

    it('stores version expected + 1 on each put', async () => {
      for (let version = 0; version < 3; version++) {
        await store.transact([put(key('job'), { step: version }, version)]);
      }

      const item = await store.get(key('job'));
      expect(item?.version).toBe(3);
      expect(item?.data).toEqual({ step: 2 });
    });

    it('refuses a stale expected version and changes nothing', async () => {
      await store.transact([put(key('job'), { step: 0 }, 0)]);
      await store.transact([put(key('job'), { step: 1 }, 1)]);

      await expectConditionFailed(store.transact([put(key('job'), { step: 'stale' }, 1)]), [0]);
      await expectConditionFailed(store.transact([put(key('job'), { step: 'exists' }, 0)]), [0]);
      await expectConditionFailed(store.transact([put(key('missing'), { step: 'absent' }, 1)]), [0]);

      expect(await store.get(key('job'))).toMatchObject({ version: 2, data: { step: 1 } });
      expect(await store.get(key('missing'))).toBeUndefined();
    });

    it('applies a transaction entirely, or not at all and names every failed condition', async () => {
      await store.transact([put(key('a'), 'a1', 0), put(key('b'), 'b1', 0), put(key('e'), 'e1', 0)]);

      await store.transact([
        put(key('a'), 'a2', 1),
        { kind: 'delete', key: key('b'), expectVersion: 1 },
        put(key('c'), 'c1', 0),
      ]);
      expect(await store.get(key('a'))).toMatchObject({ version: 2, data: 'a2' });
      expect(await store.get(key('b'))).toBeUndefined();
      expect(await store.get(key('c'))).toMatchObject({ version: 1, data: 'c1' });

      await expectConditionFailed(
        store.transact([
          put(key('a'), 'a3', 2),
          put(key('c'), 'c-stale', 5),
          put(key('d'), 'd1', 0),
          { kind: 'check', key: key('b'), expectVersion: 1 },
          { kind: 'delete', key: key('e'), expectVersion: 1 },
        ]),
        [1, 3],
      );
      expect(await store.get(key('a'))).toMatchObject({ version: 2, data: 'a2' });
      expect(await store.get(key('c'))).toMatchObject({ version: 1, data: 'c1' });
      expect(await store.get(key('d'))).toBeUndefined();
      expect(await store.get(key('e'))).toMatchObject({ version: 1, data: 'e1' });
    });

    it('uses check writes as conditions that change nothing themselves', async () => {
      await store.transact([put(key('node'), { cordoned: false }, 0)]);

      await store.transact([
        { kind: 'check', key: key('node'), expectVersion: 1 },
        { kind: 'check', key: key('absent'), expectVersion: 0 },
        put(key('task'), { on: 'node' }, 0),
      ]);
      expect(await store.get(key('node'))).toMatchObject({ version: 1, data: { cordoned: false } });
      expect(await store.get(key('absent'))).toBeUndefined();
      expect(await store.get(key('task'))).toMatchObject({ version: 1 });

      await expectConditionFailed(
        store.transact([{ kind: 'check', key: key('node'), expectVersion: 2 }, put(key('task'), { on: 'x' }, 1)]),
        [0],
      );
      await expectConditionFailed(
        store.transact([{ kind: 'check', key: key('node'), expectVersion: 0 }, put(key('task'), { on: 'x' }, 1)]),
        [0],
      );
      expect(await store.get(key('task'))).toMatchObject({ version: 1, data: { on: 'node' } });
    });

    it('deletes only at the expected version, after which the item starts again at version 1', async () => {
      await store.transact([put(key('job'), 'v1', 0)]);
      await store.transact([put(key('job'), 'v2', 1)]);

      await expectConditionFailed(store.transact([{ kind: 'delete', key: key('job'), expectVersion: 1 }]), [0]);
      expect(await store.get(key('job'))).toMatchObject({ version: 2 });

      await store.transact([{ kind: 'delete', key: key('job'), expectVersion: 2 }]);
      expect(await store.get(key('job'))).toBeUndefined();
      await expectConditionFailed(store.transact([{ kind: 'delete', key: key('job'), expectVersion: 2 }]), [0]);

      await store.transact([put(key('job'), 'again', 0)]);
      expect(await store.get(key('job'))).toMatchObject({ version: 1, data: 'again' });
    });

    it('rejects malformed transactions outright, applying nothing', async () => {
      const tooMany = Array.from({ length: maxTransactionWrites + 1 }, (_, i) => put(key(`many-${i}`), i, 0));
      const sameItemTwice = [put(key('twice'), 1, 0), { kind: 'check', key: key('twice'), expectVersion: 0 } as const];

      for (const writes of [[], tooMany, sameItemTwice]) {
        const error = await store.transact(writes).then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(error).toBeInstanceOf(Error);
        expect(error).not.toBeInstanceOf(ConditionFailedError);
      }
      expect(await store.get(key('many-0'))).toBeUndefined();
      expect(await store.get(key('twice'))).toBeUndefined();

      const atTheLimit = tooMany.slice(0, maxTransactionWrites);
      await store.transact(atTheLimit);
      expect(await store.get(key(`many-${maxTransactionWrites - 1}`))).toMatchObject({ version: 1 });
    });

    it('adds to counters: creates the item from the fields, sums into it and bumps its version', async () => {
      const counters = key('counters', 'SUM');
      await store.transact([{ kind: 'add', key: counters, fields: { queued: 2, liveNodes: 1 } }]);
      expect(await store.get(counters)).toEqual({
        ...counters,
        version: 1,
        data: { queued: 2, liveNodes: 1 },
        indexes: {},
      });

      await store.transact([{ kind: 'add', key: counters, fields: { queued: -3, 'gpus>=4': 1 } }]);
      expect(await store.get(counters)).toMatchObject({ version: 2, data: { queued: -1, liveNodes: 1, 'gpus>=4': 1 } });
      const page = await store.query({ pk: counters.pk });
      expect(page.items.map((item) => item.data)).toEqual([{ queued: -1, liveNodes: 1, 'gpus>=4': 1 }]);
    });

    it('adds inside a transaction: no condition of its own, sums adds to one item, applies only if all else holds', async () => {
      const counters = key('counters', 'SUM');
      await store.transact([
        { kind: 'add', key: counters, fields: { queued: 1 } },
        put(key('task-1'), { state: 'queued' }, 0),
        { kind: 'add', key: counters, fields: { queued: 2 } },
        { kind: 'check', key: key('absent'), expectVersion: 0 },
      ]);
      expect(await store.get(counters)).toMatchObject({ version: 1, data: { queued: 3 } });
      expect(await store.get(key('task-1'))).toMatchObject({ version: 1 });

      // Failed writes are named by their place in the list given, the merged adds before them included.
      await expectConditionFailed(
        store.transact([
          { kind: 'add', key: counters, fields: { queued: 5 } },
          { kind: 'add', key: counters, fields: { queued: 5 } },
          put(key('task-2'), { state: 'queued' }, 0),
          put(key('task-1'), { state: 'running' }, 7),
        ]),
        [3],
      );
      expect(await store.get(counters)).toMatchObject({ version: 1, data: { queued: 3 } });
      expect(await store.get(key('task-2'))).toBeUndefined();

      await store.transact([
        put(key('task-1'), { state: 'running' }, 1),
        { kind: 'add', key: counters, fields: { queued: -1, running: 1 } },
        { kind: 'add', key: key('other-counters', 'SUM'), fields: { queued: 1 } },
      ]);
      expect(await store.get(counters)).toMatchObject({ version: 2, data: { queued: 2, running: 1 } });
      expect(await store.get(key('other-counters', 'SUM'))).toMatchObject({ version: 1, data: { queued: 1 } });
    });

    it('adds to an item written by puts: sums into its data, keeps its index keys, folds into a put in the same transaction', async () => {
      const job = key('job', 'JOB');
      const byOwner = { pk: `OWNER#${ns}`, sk: '0001#job' };
      await store.transact([
        put(job, { id: 'job', queued: 0 }, 0, { byOwner }),
        { kind: 'add', key: job, fields: { queued: 2 } },
        { kind: 'add', key: job, fields: { queued: 1 }, set: { changedAt: 5 } },
      ]);
      expect(await store.get(job)).toMatchObject({ version: 1, data: { id: 'job', queued: 3, changedAt: 5 } });

      await store.transact([{ kind: 'add', key: job, fields: { queued: -1, running: 1 }, set: { changedAt: 9 } }]);
      const page = await store.query({ index: 'byOwner', pk: byOwner.pk });
      expect(page.items).toEqual([
        { ...job, version: 2, data: { id: 'job', queued: 2, running: 1, changedAt: 9 }, indexes: { byOwner } },
      ]);

      // A put replaces the data, counters included; adds go on from what it wrote.
      const read = await store.get<Record<string, number>>(job);
      await store.transact([put(job, { ...read?.data, cancelled: 1 }, 2, { byOwner })]);
      await store.transact([{ kind: 'add', key: job, fields: { running: -1 } }]);
      expect(await store.get(job)).toMatchObject({
        version: 4,
        data: { id: 'job', queued: 2, running: 0, changedAt: 9, cancelled: 1 },
      });
    });

    it('loses no add when many writers add to one item at once', async () => {
      const counters = key('counters', 'SUM');
      await Promise.all(
        Array.from({ length: 20 }, (_, writer) =>
          store.transact([{ kind: 'add', key: counters, fields: { n: 1 } }, put(key(`writer-${writer}`), writer, 0)]),
        ),
      );
      expect(await store.get(counters)).toMatchObject({ version: 20, data: { n: 20 } });
    });

    it('rejects malformed adds outright, applying nothing', async () => {
      const counters = key('counters', 'SUM');
      const malformed: Write[][] = [
        [{ kind: 'add', key: counters, fields: {} }],
        [{ kind: 'add', key: counters, fields: { n: Number.NaN } }],
        [{ kind: 'add', key: counters, fields: { '': 1 } }],
        [
          { kind: 'check', key: counters, expectVersion: 0 },
          { kind: 'add', key: counters, fields: { n: 1 } },
        ],
        [{ kind: 'add', key: counters, fields: { n: 1 }, set: { at: Number.POSITIVE_INFINITY } }],
        [
          { kind: 'add', key: counters, fields: { n: 1 } },
          { kind: 'delete', key: counters, expectVersion: 1 },
        ],
      ];
      for (const writes of malformed) {
        const error = await store.transact(writes).then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(error).toBeInstanceOf(Error);
        expect(error).not.toBeInstanceOf(ConditionFailedError);
      }
      expect(await store.get(counters)).toBeUndefined();
    });

    it('updates number fields when its condition on them holds, with no version: a watermark that only rises', async () => {
      const { clock } = fixture;
      const seen = key('node', 'SEEN');
      const byDue = { pk: `DUE#${ns}`, sk: '0100#node' };
      const expiresAt = Math.ceil(clock.now() / 1000) + 60;
      await store.transact([
        { ...put(seen, { id: 'node', pools: ['p'] }, 0, { byDue }, expiresAt), numbers: { hbDate: 10, dueAt: 100 } },
      ]);
      expect(await store.get(seen)).toMatchObject({
        version: 1,
        data: { id: 'node', pools: ['p'], hbDate: 10, dueAt: 100 },
      });

      const beat = (date: number): Write => ({
        kind: 'update',
        key: seen,
        set: { hbDate: date, lastSeenAt: date * 2 },
        when: { hbDate: { below: date }, dueAt: { atLeast: 100, equals: 100 } },
      });
      await store.transact([beat(11)]);
      // The other data, the index keys and the expiry stay; the version moves on.
      expect(await store.get(seen)).toEqual({
        ...seen,
        version: 2,
        data: { id: 'node', pools: ['p'], hbDate: 11, dueAt: 100, lastSeenAt: 22 },
        indexes: { byDue },
        expiresAt,
      });
      // Not later than the watermark: refused, and nothing changes.
      await expectConditionFailed(store.transact([beat(11)]), [0]);
      await expectConditionFailed(store.transact([beat(5)]), [0]);
      // Inside a transaction it is named by its place, and takes the transaction down with it.
      await expectConditionFailed(store.transact([put(key('other'), 1, 0), beat(11)]), [1]);
      expect(await store.get(key('other'))).toBeUndefined();
      await store.transact([beat(12), { kind: 'add', key: key('counters', 'SUM'), fields: { beats: 1 } }]);
      expect(await store.get(seen)).toMatchObject({ version: 3, data: { hbDate: 12, lastSeenAt: 24 } });

      // A field that is absent meets no condition; neither does an item that is absent.
      await expectConditionFailed(
        store.transact([{ kind: 'update', key: seen, set: { a: 1 }, when: { missing: { atLeast: 0 } } }]),
        [0],
      );
      await expectConditionFailed(
        store.transact([{ kind: 'update', key: key('absent'), set: { a: 1 }, when: {} }]),
        [0],
      );
      expect(await store.get(key('absent'))).toBeUndefined();
      // Nor does an expired one.
      clock.advance(expiresAt * 1000 - clock.now());
      await expectConditionFailed(store.transact([beat(13)]), [0]);
    });

    it('compares number fields only, never numbers inside the data of a put, and a put replaces them', async () => {
      const item = key('node', 'SEEN');
      const rises = (date: number): Write => ({
        kind: 'update',
        key: item,
        set: { hbDate: date },
        when: { hbDate: { below: date } },
      });
      // DynamoDB holds a put's data as one JSON text that conditions cannot read: both stores agree.
      await store.transact([put(item, { hbDate: 1 }, 0)]);
      await expectConditionFailed(store.transact([rises(2)]), [0]);

      await store.transact([{ ...put(item, { hbDate: 1 }, 1), numbers: { hbDate: 1 } }]);
      await store.transact([rises(2)]);
      const read = await store.get<Record<string, number>>(item);
      expect(read).toMatchObject({ version: 3, data: { hbDate: 2 } });
      // A put without numbers keeps what it reads as data only.
      await store.transact([put(item, { ...read?.data }, 3)]);
      expect(await store.get(item)).toMatchObject({ version: 4, data: { hbDate: 2 } });
      await expectConditionFailed(store.transact([rises(3)]), [0]);
      // An add's set fields are number fields too.
      await store.transact([{ kind: 'add', key: item, fields: { n: 1 }, set: { hbDate: 2 } }]);
      await store.transact([rises(3)]);
      expect(await store.get(item)).toMatchObject({ version: 6, data: { hbDate: 3, n: 1 } });
    });

    it('lets exactly one of many concurrent updates to the same watermark win', async () => {
      const item = key('node', 'SEEN');
      await store.transact([{ ...put(item, {}, 0), numbers: { hbDate: 0 } }]);
      const results = await Promise.allSettled(
        Array.from({ length: 10 }, () =>
          store.transact([{ kind: 'update', key: item, set: { hbDate: 7 }, when: { hbDate: { below: 7 } } }]),
        ),
      );
      expect(results.filter((result) => result.status === 'fulfilled')).toHaveLength(1);
      for (const result of results) {
        if (result.status === 'rejected') expect(result.reason).toBeInstanceOf(ConditionFailedError);
      }
      expect(await store.get(item)).toMatchObject({ version: 2, data: { hbDate: 7 } });
    });

    it('rejects malformed updates outright, applying nothing', async () => {
      const item = key('node', 'SEEN');
      await store.transact([{ ...put(item, {}, 0), numbers: { hbDate: 0 } }]);
      const update = (set: Record<string, number>, when: Record<string, unknown>): Write =>
        ({ kind: 'update', key: item, set, when }) as Write;
      const malformed: Write[][] = [
        [update({}, {})],
        [update({ hbDate: Number.NaN }, {})],
        [update({ hbDate: 1 }, { hbDate: {} })],
        [update({ hbDate: 1 }, { hbDate: { below: Number.POSITIVE_INFINITY } })],
        [update({ hbDate: 1 }, { hbDate: { lessThan: 1 } })],
        [update({ hbDate: 1 }, { '': { below: 1 } })],
        [update({ hbDate: 1 }, {}), { kind: 'add', key: item, fields: { n: 1 } }],
        [{ kind: 'check', key: item, expectVersion: 1 }, update({ hbDate: 1 }, {})],
        [{ ...put(item, {}, 1), numbers: { hbDate: Number.NaN } }],
      ];
      for (const writes of malformed) {
        const error = await store.transact(writes).then(
          () => undefined,
          (e: unknown) => e,
        );
        expect(error).toBeInstanceOf(Error);
        expect(error).not.toBeInstanceOf(ConditionFailedError);
      }
      expect(await store.get(item)).toMatchObject({ version: 1, data: { hbDate: 0 } });
    });

    // 500 writes: an emulator on a loaded machine took 22-34 s, past the 30 s default.
    it('lets exactly one of many concurrent updates at the same version win, every time', {
      timeout: 120_000,
    }, async () => {
      const contended = key('contended');
      await store.transact([put(contended, { round: 0 }, 0)]);

      for (let round = 1; round <= 25; round++) {
        const results = await Promise.allSettled(
          Array.from({ length: 20 }, (_, writer) => store.transact([put(contended, { round, writer }, round)])),
        );

        const winners = results.flatMap((result, writer) => (result.status === 'fulfilled' ? [writer] : []));
        expect(winners).toHaveLength(1);
        for (const result of results) {
          if (result.status === 'rejected') {
            expect(result.reason).toBeInstanceOf(ConditionFailedError);
            expect((result.reason as ConditionFailedError).failed).toEqual([0]);
          }
        }
        expect(await store.get(contended)).toMatchObject({ version: round + 1, data: { round, writer: winners[0] } });
      }
    });

    it('loses no update when many writers read-modify-write one item at once', async () => {
      // The domain's pattern (records.ts updateWithRetry): read, change, write on the version read,
      // and read again on a lost condition. Every writer's reads and writes interleave with the
      // others' at each await, so a write that lands on a stale version would lose an increment.
      const counter = key('counter');
      await store.transact([put(counter, 0, 0)]);
      // Small: against moto every retry is a request, at a few hundred a second.
      const writers = 5;
      const times = 4;
      let lost = 0;
      await Promise.all(
        Array.from({ length: writers }, async () => {
          for (let done = 0; done < times; ) {
            const item = await store.get<number>(counter);
            try {
              await store.transact([put(counter, (item?.data ?? Number.NaN) + 1, item?.version ?? 0)]);
              done++;
            } catch (error) {
              if (!(error instanceof ConditionFailedError)) throw error;
              lost++;
            }
          }
        }),
      );

      expect(await store.get(counter)).toMatchObject({ version: writers * times + 1, data: writers * times });
      // The writers did contend: some conditions were lost and retried.
      expect(lost).toBeGreaterThan(0);
    });

    // A run is a few transactions and reads; an emulator on a loaded machine took up to 118 s for 50
    // runs, past the 30 s default: the limit scales with the runs asked for.
    it('behaves like a map of versioned items over random transactions', {
      timeout: propertyRuns * 3_000,
    }, async () => {
      const ids = ['a', 'b', 'c', 'd'] as const;
      const writeArbitrary = fc.record({
        kind: fc.constantFrom('put', 'put', 'delete', 'check'),
        id: fc.constantFrom(...ids),
        // Mostly the right version, so that transactions also succeed.
        expect: fc.oneof(fc.constant('current' as const), fc.constant('current' as const), fc.nat(3)),
        value: fc.integer(),
        priority: fc.option(fc.constantFrom('0', '1', '2'), { nil: undefined }),
      });
      const transactionArbitrary = fc.uniqueArray(writeArbitrary, {
        minLength: 1,
        maxLength: 4,
        selector: (w) => w.id,
      });

      await fc.assert(
        fc.asyncProperty(fc.array(transactionArbitrary, { minLength: 1, maxLength: 12 }), async (transactions) => {
          const run = randomUUID();
          const itemKey = (id: string): ItemKey => ({ pk: `${ns}#${run}#${id}`, sk: 'item' });
          const pool = `POOL#${ns}#${run}`;
          const model = new Map<string, { version: number; data: number; byPool?: IndexKey }>();

          for (const transaction of transactions) {
            const writes = transaction.map((w): Exclude<Write, { kind: 'add' | 'update' }> => {
              const expectVersion = w.expect === 'current' ? (model.get(w.id)?.version ?? 0) : w.expect;
              if (w.kind !== 'put') {
                return { kind: w.kind, key: itemKey(w.id), expectVersion };
              }
              const indexes = w.priority === undefined ? {} : { byPool: { pk: pool, sk: `${w.priority}#${w.id}` } };
              return { kind: 'put', key: itemKey(w.id), data: w.value, indexes, expectVersion };
            });
            const expectedFailures = writes.flatMap((write, i) => {
              const id = transaction[i]?.id ?? '';
              return (model.get(id)?.version ?? 0) === write.expectVersion ? [] : [i];
            });

            if (expectedFailures.length > 0) {
              await expectConditionFailed(store.transact(writes), expectedFailures);
            } else {
              await store.transact(writes);
              for (const w of transaction) {
                const current = model.get(w.id);
                if (w.kind === 'delete') {
                  model.delete(w.id);
                } else if (w.kind === 'put') {
                  const byPool = w.priority === undefined ? {} : { byPool: { pk: pool, sk: `${w.priority}#${w.id}` } };
                  model.set(w.id, { version: (current?.version ?? 0) + 1, data: w.value, ...byPool });
                }
              }
            }

            for (const id of ids) {
              const expected = model.get(id);
              const item = await store.get(itemKey(id));
              if (expected === undefined) {
                expect(item).toBeUndefined();
              } else {
                const indexes = expected.byPool === undefined ? {} : { byPool: expected.byPool };
                expect(item).toEqual({ ...itemKey(id), version: expected.version, data: expected.data, indexes });
              }
            }
            const pooled = [...model.entries()]
              .flatMap(([id, item]) => (item.byPool === undefined ? [] : [{ id, sk: item.byPool.sk }]))
              .sort((x, y) => compare(x.sk, y.sk))
              .map(({ id }) => itemKey(id).pk);
            expect(keysOf(await store.query({ index: 'byPool', pk: pool }))).toEqual(pooled);
          }
        }),
        { numRuns: propertyRuns },
      );
    });

    describe('queries', () => {
      /** Tasks in one pool, with their index sort keys: ascending order is t4, t2, t5, t1, t3. */
      const tasks = { t1: '1#0003#t1', t2: '1#0001#t2', t3: '2#0002#t3', t4: '0#0005#t4', t5: '1#0002#t5' };

      beforeEach(async () => {
        await store.transact(
          Object.entries(tasks).map(([id, sk]) =>
            put(key(id), { id }, 0, { byPool: { pk: poolPk(), sk }, byDue: { pk: `DUE#${ns}`, sk: `${sk}` } }),
          ),
        );
        // Neighbours that the queries must leave out.
        await store.transact([
          put(key('elsewhere'), {}, 0, { byPool: { pk: `${poolPk()}-other`, sk: '0#0000#x' } }),
          put(key('unindexed'), {}, 0),
        ]);
      });

      const poolQuery = async (options: Partial<QueryOptions> = {}) =>
        idsOf(await store.query({ index: 'byPool', pk: poolPk(), ...options }));

      it('returns an index partition in sort-key order, with the items themselves', async () => {
        expect(await poolQuery()).toEqual(['t4', 't2', 't5', 't1', 't3']);
        const page = await store.query({ index: 'byPool', pk: poolPk(), limit: 1 });
        expect(page.items).toEqual([
          {
            ...key('t4'),
            version: 1,
            data: { id: 't4' },
            indexes: { byPool: { pk: poolPk(), sk: tasks.t4 }, byDue: { pk: `DUE#${ns}`, sk: tasks.t4 } },
          },
        ]);
      });

      it('filters by prefix and by an exclusive upper bound, in either direction', async () => {
        expect(await poolQuery({ skPrefix: '1#' })).toEqual(['t2', 't5', 't1']);
        expect(await poolQuery({ skPrefix: '1#0002' })).toEqual(['t5']);
        expect(await poolQuery({ skPrefix: '3' })).toEqual([]);
        expect(await poolQuery({ skBefore: tasks.t1 })).toEqual(['t4', 't2', 't5']);
        expect(await poolQuery({ descending: true })).toEqual(['t3', 't1', 't5', 't2', 't4']);
        expect(await poolQuery({ skPrefix: '1#', descending: true })).toEqual(['t1', 't5', 't2']);
        expect(await poolQuery({ skBefore: '2', descending: true, limit: 2 })).toEqual(['t1', 't5']);
        expect(await poolQuery({ skPrefix: '1#', skBefore: '1#0003' })).toEqual(['t2', 't5']);
      });

      it('keeps each index separate', async () => {
        await store.transact([put(key('t2'), { id: 't2' }, 1, { byDue: { pk: `DUE#${ns}`, sk: '9' } })]);

        expect(await poolQuery()).toEqual(['t4', 't5', 't1', 't3']);
        expect(idsOf(await store.query({ index: 'byDue', pk: `DUE#${ns}` }))).toEqual(['t4', 't5', 't1', 't3', 't2']);
        expect(idsOf(await store.query({ index: 'byOwner', pk: `DUE#${ns}` }))).toEqual([]);
      });

      it('removes an item from an index its latest put leaves out, and moves it on a new index key', async () => {
        await store.transact([
          put(key('t2'), { id: 't2' }, 1),
          put(key('t3'), { id: 't3' }, 1, { byPool: { pk: poolPk(), sk: '0#0000#t3' } }),
        ]);

        expect(await poolQuery()).toEqual(['t3', 't4', 't5', 't1']);
        expect((await store.get(key('t2')))?.indexes).toEqual({});
        expect(idsOf(await store.query({ index: 'byDue', pk: `DUE#${ns}` }))).toEqual(['t4', 't5', 't1']);
      });

      it('queries the table by partition, in sort-key order', async () => {
        const job = `${ns}#job`;
        await store.transact(['task#2', 'meta', 'task#1', 'task#10'].map((sk) => put({ pk: job, sk }, sk, 0)));

        const sks = async (options: Partial<QueryOptions> = {}) =>
          (await store.query({ pk: job, ...options })).items.map((item) => item.sk);
        expect(await sks()).toEqual(['meta', 'task#1', 'task#10', 'task#2']);
        expect(await sks({ skPrefix: 'task#' })).toEqual(['task#1', 'task#10', 'task#2']);
        expect(await sks({ skPrefix: 'task#1' })).toEqual(['task#1', 'task#10']);
        expect(await sks({ skBefore: 'task#10', descending: true })).toEqual(['task#1', 'meta']);
      });
    });

    describe('pagination', () => {
      const total = 250;
      const pageSize = 40;

      beforeEach(async () => {
        const writes = Array.from({ length: total }, (_, i) =>
          // Five items share each owner sort key: pages must not split ties wrongly.
          put({ pk: `${ns}#many`, sk: `item#${String(i).padStart(3, '0')}` }, i, 0, {
            byOwner: { pk: `OWNER#${ns}`, sk: String(Math.floor(i / 5)).padStart(2, '0') },
          }),
        );
        for (let start = 0; start < total; start += 50) {
          await store.transact(writes.slice(start, start + 50));
        }
      });

      async function readAll(options: QueryOptions): Promise<StoredItem[]> {
        const items: StoredItem[] = [];
        let cursor: string | undefined;
        let pages = 0;
        do {
          const page = await store.query(cursor === undefined ? options : { ...options, cursor });
          expect(page.items.length).toBeLessThanOrEqual(pageSize);
          items.push(...page.items);
          cursor = page.cursor;
          pages++;
          expect(pages).toBeLessThanOrEqual(Math.ceil(total / pageSize) + 1);
        } while (cursor !== undefined);
        return items;
      }

      it.each([false, true])('visits every table item once, in order (descending: %s)', async (descending) => {
        const items = await readAll({ pk: `${ns}#many`, limit: pageSize, descending });

        const expected = Array.from({ length: total }, (_, i) => `item#${String(i).padStart(3, '0')}`);
        expect(items.map((item) => item.sk)).toEqual(descending ? expected.reverse() : expected);
      });

      it.each(['table', 'index'] as const)(
        'refuses a %s cursor passed to a query of another partition (invalid_cursor)',
        async (where) => {
          // Built here, not in the table above: `ns` is set per test.
          const query = (pk: string): QueryOptions =>
            where === 'table' ? { pk, limit: pageSize } : { index: 'byOwner', pk: `OWNER#${pk}`, limit: pageSize };
          await store.transact([
            put({ pk: `${ns}#other`, sk: 'item#000' }, 'other', 0, { byOwner: { pk: `OWNER#${ns}#other`, sk: '00' } }),
          ]);
          const { cursor } = await store.query(query(where === 'table' ? `${ns}#many` : ns));
          if (cursor === undefined) throw new Error('the first page has a cursor');
          const refused = await store.query({ ...query(`${ns}#other`), cursor }).catch((error: unknown) => error);
          expect(refused).toBeInstanceOf(InvalidRequestError);
          expect((refused as InvalidRequestError).code).toBe('invalid_cursor');
        },
      );

      it.each([false, true])('visits every index item once, in order (descending: %s)', async (descending) => {
        const items = await readAll({ index: 'byOwner', pk: `OWNER#${ns}`, limit: pageSize, descending });

        expect(items.map((item) => item.data).sort((a, b) => Number(a) - Number(b))).toEqual(
          Array.from({ length: total }, (_, i) => i),
        );
        const sortKeys = items.map((item) => item.indexes.byOwner?.sk ?? '');
        const sorted = [...sortKeys].sort(compare);
        expect(sortKeys).toEqual(descending ? sorted.reverse() : sorted);
      });
    });

    describe('expiry', () => {
      it('treats an item as absent from its expiry second on, everywhere', async () => {
        const { clock } = fixture;
        const expiresAt = Math.ceil(clock.now() / 1000) + 60;
        await store.transact([put(key('lease'), 'held', 0, { byDue: { pk: `DUE#${ns}`, sk: '1' } }, expiresAt)]);
        const dueIds = async () => idsOf(await store.query({ index: 'byDue', pk: `DUE#${ns}` }));

        clock.advance(expiresAt * 1000 - clock.now() - 1);
        expect(await store.get(key('lease'))).toMatchObject({ version: 1, expiresAt });
        expect(await dueIds()).toEqual(['lease']);

        clock.advance(1);
        expect(await store.get(key('lease'))).toBeUndefined();
        expect(await dueIds()).toEqual([]);
        await expectConditionFailed(store.transact([put(key('lease'), 'renewed', 1)]), [0]);
        await expectConditionFailed(store.transact([{ kind: 'check', key: key('lease'), expectVersion: 1 }]), [0]);

        await store.transact([{ kind: 'check', key: key('lease'), expectVersion: 0 }]);
        await store.transact([put(key('lease'), 'taken over', 0)]);
        const item = await store.get(key('lease'));
        expect(item).toMatchObject({ version: 1, data: 'taken over', indexes: {} });
        expect(item).not.toHaveProperty('expiresAt');
      });

      it('gives an added counter the expiry its add names, created or not (rate-limit windows)', async () => {
        const { clock } = fixture;
        const expiresAt = Math.ceil(clock.now() / 1000) + 60;
        const counter = key('window', 'RATE');
        await store.transact([{ kind: 'add', key: counter, fields: { count: 1 }, expiresAt }]);
        await store.transact([{ kind: 'add', key: counter, fields: { count: 1 }, expiresAt }]);
        expect(await store.get(counter)).toMatchObject({ version: 2, data: { count: 2 }, expiresAt });
        clock.advance(expiresAt * 1000 - clock.now());
        expect(await store.get(counter)).toBeUndefined();
      });
    });

    it('keeps its data across closing and reopening', async (context) => {
      const { reopen } = fixture;
      if (reopen === undefined) {
        context.skip('this adapter does not persist');
        return;
      }
      const expiresAt = Math.ceil(fixture.clock.now() / 1000) + 3600;
      await store.transact([put(key('job'), { kept: true }, 0, { byPool: { pk: poolPk(), sk: '1' } }, expiresAt)]);
      await store.transact([put(key('job'), { kept: 'yes' }, 1, { byPool: { pk: poolPk(), sk: '1' } }, expiresAt)]);
      await store.close();

      const reopened = await reopen();
      expect(await reopened.get(key('job'))).toEqual({
        ...key('job'),
        version: 2,
        data: { kept: 'yes' },
        indexes: { byPool: { pk: poolPk(), sk: '1' } },
        expiresAt,
      });
      expect(idsOf(await reopened.query({ index: 'byPool', pk: poolPk() }))).toEqual(['job']);
      await expectConditionFailed(reopened.transact([put(key('job'), {}, 1)]), [0]);
    });

    function idsOf(page: { items: readonly ItemKey[] }): string[] {
      return page.items.map((item) => item.pk.slice(ns.length + 1));
    }
  });
}

function put(
  key: ItemKey,
  data: unknown,
  expectVersion: number,
  indexes?: Partial<Record<IndexName, IndexKey>>,
  expiresAt?: number,
): Extract<Write, { kind: 'put' }> {
  return {
    kind: 'put',
    key,
    data,
    expectVersion,
    ...(indexes === undefined ? {} : { indexes }),
    ...(expiresAt === undefined ? {} : { expiresAt }),
  };
}

async function expectConditionFailed(transaction: Promise<void>, failed: readonly number[]): Promise<void> {
  const error = await transaction.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(ConditionFailedError);
  expect((error as ConditionFailedError).failed).toEqual(failed);
}

function keysOf(page: { items: readonly ItemKey[] }): string[] {
  return page.items.map((item) => item.pk);
}

/** Plain code-unit order, as the tests' ASCII keys sort the same way in every adapter. */
function compare(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}
