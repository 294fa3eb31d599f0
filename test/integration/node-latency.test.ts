import { afterEach, describe, expect, it } from 'vitest';
import { performancePriors } from '../../functions/domain/scheduling/performance.js';
import { perfNodeKey, StoredPerformance } from '../../functions/domain/scheduling/performance-record.js';
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

    expect(await storedLatency(near.id)).toBeCloseTo(12, 6);
    expect(await storedLatency(far.id)).toBeCloseTo(480, 6);
    // A beat without the field writes no estimate: a plain heartbeat stays one presence write.
    expect(await h.store.get(perfNodeKey(silent.id))).toBeUndefined();
    expect(await storedLatency(silent.id)).toBe(performancePriors.latencyMs);

    // A later report moves the estimate toward it (smoothed, not replaced).
    clock.advance(1000);
    expect((await beat(far, { tasks: [], latencyMs: 120 })).status).toBe(200);
    const moved = await storedLatency(far.id);
    expect(moved).toBeLessThan(480);
    expect(moved).toBeGreaterThan(120);
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
    expect(await storedLatency(n.id)).toBeCloseTo(60_000, 3);
  });
});
