import { describe, expect, it, vi } from 'vitest';
import { MemorySignal } from '../../functions/adapters/embedded/memory-signal.js';
import { SignalWorkHints } from '../../functions/adapters/embedded/signal-work-hints.js';
import { nodeCapacityFields, PoolSummaries, poolDelta } from '../../functions/domain/resource/pool-summary.js';
import { poolsOf } from '../../functions/domain/resource/pools.js';
import { Router } from '../../functions/domain/scheduling/router.js';
import type { TaskRecord } from '../../functions/domain/scheduling/task-record.js';
import type { QueryOptions, StoredItem } from '../../functions/ports/store.js';
import type { NodeInventory } from '../../protocol/index.js';
import { generateNodeKeyPair, JobSpec } from '../../protocol/index.js';
import { cpuInventory, inProcessControlPlane, ManualClock } from '../support/in-process.js';

const h100 = (region: string): NodeInventory =>
  cpuInventory({
    region,
    gpus: [
      {
        index: 0,
        vendor: 'nvidia',
        model: 'NVIDIA H100 80GB HBM3',
        vramMiB: 81559,
        uuid: 'g',
        computeCapability: '9.0',
      },
    ],
  });

const amd = (): NodeInventory =>
  cpuInventory({
    gpus: [{ index: 0, vendor: 'amd', model: 'AMD Instinct MI300X', vramMiB: 196592, uuid: 'g', gfxArch: 'gfx942' }],
  });

describe("the reaper's re-drive of unrouted tasks", () => {
  it('reaches a routable task behind a batch of unroutable ones, and does not retry them while nothing changed', async () => {
    const clock = new ManualClock();
    const h = inProcessControlPlane({ clock, settings: { reaperBatch: 10, livenessMs: 1e12 } });
    const register = async (inventory: NodeInventory) => {
      await h.cp.nodes.register({ publicKey: generateNodeKeyPair().publicKey, agentVersion: 't', inventory });
      h.cp.router.invalidate();
    };
    await register(cpuInventory());
    // Their schedule messages are lost (nothing consumes the queue here): only the reaper routes them.
    const stuck = await h.cp.jobs.submit(
      'default',
      JobSpec.parse({ command: ['true'], tasks: 12, resources: { gpus: { count: 1, vendor: 'amd' } } }),
    );
    clock.advance(1);
    const { job } = await h.cp.jobs.submit('default', JobSpec.parse({ command: ['true'] }));
    clock.advance(3000);
    const pool = async () => (await h.cp.jobs.get('default', job.id)).tasks[0]?.pool;
    for (let tick = 0; tick < 3 && (await pool()) === undefined; tick++) {
      await h.cp.reaper.tick();
      clock.advance(1000);
    }
    expect(await pool()).toBe('local/cpu');

    // The whole list was tried under this fleet: further ticks do not read it again.
    await h.cp.reaper.tick();
    const spy = vi.spyOn(h.store, 'query');
    clock.advance(1000);
    await h.cp.reaper.tick();
    const unroutedReads = spy.mock.calls.filter(([o]: [QueryOptions]) => o.pk === 'POOL#unrouted').length;
    expect(unroutedReads).toBe(0);
    spy.mockRestore();

    // A node that fits them registers: capacity changed, so they are tried again.
    await register(amd());
    clock.advance(1000);
    let routed = 0;
    for (let tick = 0; tick < 3; tick++) {
      routed += (await h.cp.reaper.tick()).routed;
      clock.advance(1000);
    }
    expect(routed).toBe(12);
    const view = await h.cp.jobs.get('default', stuck.job.id);
    expect(view.tasks.every((t) => t.pool === 'local/mi300x')).toBe(true);
    await h.close();
  });
});

describe("the reaper's re-drive of a young task", () => {
  it('routes a task that was too young at the end of the last pass, without waiting for a new pass', async () => {
    const clock = new ManualClock();
    const h = inProcessControlPlane({ clock, settings: { livenessMs: 1e12 } });
    await h.cp.nodes.register({ publicKey: generateNodeKeyPair().publicKey, agentVersion: 't', inventory: amd() });
    // Its schedule message is lost (nothing consumes the queue here): only the reaper routes it.
    const { job } = await h.cp.jobs.submit('default', JobSpec.parse({ command: ['true'] }));
    await h.cp.nodes.register({
      publicKey: generateNodeKeyPair().publicKey,
      agentVersion: 't',
      inventory: cpuInventory(),
    });
    h.cp.router.invalidate();
    clock.advance(1000);
    expect((await h.cp.reaper.tick()).routed).toBe(0); // younger than unroutedAfterMs: not offered yet
    clock.advance(1500);
    await h.cp.reaper.tick();
    expect((await h.cp.jobs.get('default', job.id)).tasks[0]?.pool).toBe('local/cpu');
    await h.close();
  });
});

describe('routing over pool summaries', () => {
  it('spills a burst over to the next pool as the first one queues up, and reads no node', async () => {
    const clock = new ManualClock();
    const h = inProcessControlPlane({ clock });
    const summaries = new PoolSummaries(h.store, clock);
    // Two live one-GPU nodes, as presence counts them: one in eu-west, one in us-east.
    for (const [i, region] of ['eu-west', 'us-east'].entries()) {
      const inventory = h100(region);
      for (const pool of poolsOf(inventory)) {
        await summaries.ensurePool(pool);
        await h.store.transact([poolDelta(pool, `n${i}`, nodeCapacityFields({ inventory }, pool))]);
      }
    }
    const liveNodes = vi.spyOn(h.cp.nodes, 'liveNodes');
    const router = new Router(h.store, h.cp.nodes, new MemorySignal(), new SignalWorkHints(), clock, summaries);
    const { job } = await h.cp.jobs.submit(
      'default',
      JobSpec.parse({ command: ['true'], tasks: 10, resources: { gpus: { count: 1 } } }),
    );
    const loaded = await h.cp.jobs.load(job.id);
    expect(await router.route(loaded?.tasks as StoredItem<TaskRecord>[])).toBe(10);
    const pools = (await h.cp.jobs.get('default', job.id)).tasks.map((t) => t.pool);
    expect(pools.filter((p) => p === 'eu-west/h100')).toHaveLength(5);
    expect(pools.filter((p) => p === 'us-east/h100')).toHaveLength(5);
    expect(liveNodes).not.toHaveBeenCalled();
    // The queued counters followed: the next read of the summaries sees five in each pool.
    clock.advance(2000);
    expect((await summaries.get('eu-west/h100')).queued).toBe(5);
    // A task that fits no pool's live nodes (8 GPUs) stays unrouted.
    const big = await h.cp.jobs.submit(
      'default',
      JobSpec.parse({ command: ['true'], resources: { gpus: { count: 8 } } }),
    );
    const bigTasks = (await h.cp.jobs.load(big.job.id))?.tasks as StoredItem<TaskRecord>[];
    expect(await router.route(bigTasks)).toBe(0);
    await h.close();
  });
});
