import { afterEach, describe, expect, it } from 'vitest';
import { latencyLimits, performancePriors } from '../../functions/domain/scheduling/performance.js';
import { perfNodeKey, StoredPerformance } from '../../functions/domain/scheduling/performance-record.js';
import type { ItemKey } from '../../functions/ports/store.js';
import { CountingStore } from '../support/counting-store.js';
import { cpuInventory, inProcessControlPlane, ManualClock, TestNode } from '../support/in-process.js';

/**
 * A node's latency estimate (performance.ts `latencyMs`, which routing and placement weigh) is fed
 * by the round trip the node measures and reports, now and then, in its signed heartbeat
 * (`latencyMs`): through the real route, the real TaskReports and the stored estimates of
 * performance-record.ts, read back by a fresh reader, as another process would.
 */

const clock = new ManualClock();
let h: ReturnType<typeof inProcessControlPlane>;
afterEach(() => h.close());

async function node(): Promise<TestNode> {
  const n = new TestNode(h.request, clock);
  expect((await n.register(cpuInventory())).status).toBe(201);
  return n;
}

const beat = (n: TestNode, body: Record<string, unknown>) => n.call('POST', `/v1/nodes/${n.id}/heartbeat`, body);

/** The node's latency as a reader that starts from the store alone sees it. */
async function storedLatency(nodeId: string): Promise<number> {
  const reader = new StoredPerformance(h.store, clock);
  await reader.prepare({ nodeIds: [nodeId] });
  return reader.latencyMs(nodeId);
}

describe('latency fed by heartbeats', () => {
  it("learns a node's reported round trip as that node's latency, and only that node's", async () => {
    h = inProcessControlPlane({ clock });
    const [near, far, silent] = [await node(), await node(), await node()];
    expect((await beat(near, { tasks: [], latencyMs: 12 })).status).toBe(200);
    expect((await beat(far, { tasks: [], latencyMs: 480 })).status).toBe(200);
    expect((await beat(silent, { tasks: [] })).status).toBe(200);

    // Each moves from the prior toward what it reported (a self-reported figure earns its weight
    // over several reports, performance.ts nodeLatency).
    expect(await storedLatency(near.id)).toBeLessThan(performancePriors.latencyMs);
    expect(await storedLatency(far.id)).toBeGreaterThan(performancePriors.latencyMs);
    const farFirst = await storedLatency(far.id);
    // A beat without the field writes no estimate: a plain heartbeat stays one presence write.
    expect(await h.store.get(perfNodeKey(silent.id))).toBeUndefined();
    expect(await storedLatency(silent.id)).toBe(performancePriors.latencyMs);

    // A later report, a period on, moves the estimate toward it (smoothed, not replaced).
    clock.advance(latencyLimits.sampleEveryMs);
    expect((await beat(far, { tasks: [], latencyMs: 20 })).status).toBe(200);
    const moved = await storedLatency(far.id);
    expect(moved).toBeLessThan(farFirst);
    expect(moved).toBeGreaterThan(20);
  });

  it('refuses an absurd latency with 400 and learns nothing from that beat', async () => {
    h = inProcessControlPlane({ clock });
    const n = await node();
    for (const latencyMs of [0, -5, 60_001, 1e12, 12.5, '40', null, Number.MAX_SAFE_INTEGER]) {
      const response = await beat(n, { tasks: [], latencyMs });
      expect(response.status, JSON.stringify(latencyMs)).toBe(400);
      expect(((await response.json()) as { error: { code: string } }).error.code).toBe('validation_failed');
    }
    expect(await h.store.get(perfNodeKey(n.id))).toBeUndefined();
    // The bounds themselves are taken.
    expect((await beat(n, { tasks: [], latencyMs: 60_000 })).status).toBe(200);
    expect(await storedLatency(n.id)).toBeGreaterThan(performancePriors.latencyMs);
    expect(await storedLatency(n.id)).toBeLessThanOrEqual(latencyLimits.maxMs);
  });

  it('learns one sample per node per period: the beats between cost no estimate read or write', async () => {
    let counting: CountingStore | undefined;
    h = inProcessControlPlane({ clock, wrapStore: (s) => (counting = new CountingStore(s)) });
    const n = await node();
    expect((await beat(n, { tasks: [], latencyMs: 400 })).status).toBe(200);
    const learned = await h.store.get(perfNodeKey(n.id));
    expect(learned).toBeDefined();
    const onPerf = (key: ItemKey | undefined) => key?.pk === perfNodeKey(n.id).pk;
    counting?.reset();
    // A node that reports on every beat: each beat is answered, none is learned.
    for (let i = 0; i < 6; i++) {
      clock.advance(latencyLimits.sampleEveryMs / 8);
      expect((await beat(n, { tasks: [], latencyMs: 1 })).status).toBe(200);
    }
    expect(counting?.gets.filter(onPerf)).toEqual([]);
    expect(counting?.transactions.flat().filter((w) => onPerf((w as { key?: ItemKey }).key))).toEqual([]);
    expect(await h.store.get(perfNodeKey(n.id))).toEqual(learned);
    // Another process, which has not seen the node's estimate, reads it once and writes nothing.
    const other = new StoredPerformance(h.store, clock);
    counting?.reset();
    expect(await other.recordLatency(n.id, 1)).toBe(false);
    expect(counting?.transactions).toEqual([]);
    expect(await h.store.get(perfNodeKey(n.id))).toEqual(learned);
    // A period after the last sample learned, the next one is taken.
    clock.advance(latencyLimits.sampleEveryMs);
    const before = await storedLatency(n.id);
    expect((await beat(n, { tasks: [], latencyMs: 1 })).status).toBe(200);
    expect(await storedLatency(n.id)).toBeLessThan(before);
  });
});
