import { afterEach, describe, expect, it } from 'vitest';
import type { ItemKey } from '../../functions/ports/store.js';
import { CountingStore } from '../support/counting-store.js';
import { inProcessControlPlane, ManualClock, TestNode } from '../support/in-process.js';

/**
 * What the rate limits (default settings: per source address and per node) cost a signed agent
 * request in store calls. The dispatch bench found a GetItem and a PutItem of a RATE counter per
 * scope per request: a heartbeat's one write became two, three from a non-loopback address.
 */

const isRate = (key: ItemKey) => key.pk.startsWith('RATE#');

function world(exclusiveStore: boolean) {
  const clock = new ManualClock();
  const { store, request, queue } = inProcessControlPlane({
    clock,
    settings: { exclusiveStore },
    wrapStore: (sqlite) => new CountingStore(sqlite),
    // A non-loopback agent: its requests are counted per source address too.
    sourceAddress: () => '203.0.113.5',
  });
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
