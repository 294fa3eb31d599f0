import { afterEach, describe, expect, it } from 'vitest';
import { LocalKeys } from '../../functions/adapters/embedded/local-keys.js';
import { MemorySignal } from '../../functions/adapters/embedded/memory-signal.js';
import { noCredentials, SignalWorkHints } from '../../functions/adapters/embedded/signal-work-hints.js';
import { openDatabase } from '../../functions/adapters/embedded/sqlite.js';
import { SqliteQueue } from '../../functions/adapters/embedded/sqlite-queue.js';
import { SqliteStore } from '../../functions/adapters/embedded/sqlite-store.js';
import { createControlPlane, defaultSettings } from '../../functions/control-plane.js';
import { createApp } from '../../functions/http/app.js';
import type { ItemKey } from '../../functions/ports/store.js';
import { queueDefinitions } from '../../functions/workers/queues.js';
import { CountingStore } from '../support/counting-store.js';
import { ManualClock, TestNode } from '../support/in-process.js';

/**
 * What the rate limits (default settings: per source address and per node) cost a signed agent
 * request in store calls. The dispatch bench found a GetItem and a PutItem of a RATE counter per
 * scope per request: a heartbeat's one write became two, three from a non-loopback address.
 */

const isRate = (key: ItemKey) => key.pk.startsWith('RATE#');

function world(exclusiveStore: boolean) {
  const clock = new ManualClock();
  const db = openDatabase(':memory:');
  const store = new CountingStore(new SqliteStore(db, clock));
  const queue = new SqliteQueue(db, queueDefinitions, clock);
  const cp = createControlPlane(
    {
      store,
      queue,
      keys: LocalKeys.inMemory(),
      clock,
      signal: new MemorySignal(),
      hints: new SignalWorkHints(),
      credentials: noCredentials,
    },
    defaultSettings(clock.now(), { bootedAt: 0, enrollment: 'open', exclusiveStore }),
  );
  // A non-loopback agent: its requests are counted per source address too.
  const app = createApp({ cp, log: () => {}, sourceAddress: () => '203.0.113.5' });
  const request = async (path: string, init: RequestInit = {}) => app.request(`http://gpuai.test${path}`, init);
  /** The RATE reads and writes of the store calls since the last reset. */
  const rateCalls = () => ({
    gets: store.gets.filter(isRate).length,
    writes: store.transactions.flat().filter((write) => isRate(write.key)),
  });
  return { clock, store, request, rateCalls, close: () => queue.close() };
}

let w: ReturnType<typeof world> | undefined;
afterEach(async () => {
  await w?.close();
  w = undefined;
});

describe('rate limits per signed request, default limits', () => {
  it('cost no store call where the store is exclusive (embedded): counted in memory', async () => {
    w = world(true);
    const node = new TestNode(w.request, w.clock);
    expect((await node.register()).status).toBe(201);
    w.store.reset();
    for (let i = 0; i < 5; i++) {
      expect((await node.call('POST', `/v1/nodes/${node.id}/heartbeat`, { tasks: [] })).status).toBe(200);
    }
    expect(w.rateCalls()).toEqual({ gets: 0, writes: [] });
    // A heartbeat is its one presence write again.
    expect(w.store.transactions).toHaveLength(5);
  });

  it('cost one unconditional add per scope and no read where the store is shared (Lambda)', async () => {
    w = world(false);
    const node = new TestNode(w.request, w.clock);
    expect((await node.register()).status).toBe(201);
    w.store.reset();
    const heartbeats = 5;
    for (let i = 0; i < heartbeats; i++) {
      expect((await node.call('POST', `/v1/nodes/${node.id}/heartbeat`, { tasks: [] })).status).toBe(200);
    }
    const { gets, writes } = w.rateCalls();
    expect(gets).toBe(0);
    // Per heartbeat: the address counter and the node counter, each one add in its own transaction.
    expect(writes).toHaveLength(2 * heartbeats);
    for (const write of writes) expect(write).toMatchObject({ kind: 'add', fields: { count: 1 } });
    expect(new Set(writes.map((write) => write.key.pk))).toEqual(
      new Set(['RATE#address#203.0.113.5', `RATE#node#${node.id}`]),
    );
    const rateTransactions = w.store.transactions.filter((writes) => writes.some((write) => isRate(write.key)));
    for (const t of rateTransactions) expect(t).toHaveLength(1);
  });
});
