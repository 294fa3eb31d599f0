import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { openDatabase } from '../../functions/adapters/embedded/sqlite.js';
import { SqliteStore } from '../../functions/adapters/embedded/sqlite-store.js';
import { fitOnNode, type TaskRequirements } from '../../functions/domain/resource/fit.js';
import {
  fitsSummary,
  negated,
  nodeCapacityFields,
  PoolSummaries,
  poolDelta,
  summaryOf,
} from '../../functions/domain/resource/pool-summary.js';
import { acceleratorClass, poolId, poolsOf } from '../../functions/domain/resource/pools.js';
import { shardCount } from '../../functions/domain/shards.js';
import type { GpuDevice, NodeInventory } from '../../protocol/index.js';
import { ManualClock } from '../contract/store-contract.js';

const gpu = (index: number, model: string, vramMiB: number, vendor: GpuDevice['vendor'] = 'nvidia'): GpuDevice => ({
  index,
  vendor,
  model,
  vramMiB,
  uuid: `GPU-${index}`,
});

const inventory = (gpus: GpuDevice[], overrides: Partial<NodeInventory> = {}): NodeInventory => ({
  gpus,
  cpu: { model: 'Test CPU', cores: 32 },
  memoryMiB: 131072,
  os: 'linux',
  arch: 'x64',
  runtimes: ['process'],
  region: 'eu-west',
  ...overrides,
});

const req = (overrides: Partial<TaskRequirements> = {}): TaskRequirements => ({
  gpus: { count: 1 },
  needsContainer: false,
  ...overrides,
});

describe('nodeCapacityFields', () => {
  it('counts the devices of the pool class and the buckets the node reaches', () => {
    const node = {
      inventory: inventory([
        gpu(0, 'NVIDIA H100 80GB HBM3', 81920),
        gpu(1, 'NVIDIA H100 80GB HBM3', 81920),
        gpu(2, 'NVIDIA RTX 4090', 24576),
      ]),
    };
    expect(nodeCapacityFields(node, 'eu-west/h100')).toEqual({
      liveNodes: 1,
      liveGpus: 2,
      'gpus>=1': 1,
      'gpus>=2': 1,
      'vramGiB>=16': 1,
      'vramGiB>=24': 1,
      'vramGiB>=40': 1,
      'vramGiB>=80': 1,
      'cores>=4': 1,
      'cores>=16': 1,
      'memoryGiB>=16': 1,
      'memoryGiB>=64': 1,
      process: 1,
    });
    expect(nodeCapacityFields(node, 'eu-west/rtx4090')).toMatchObject({ liveGpus: 1, 'gpus>=1': 1, 'vramGiB>=24': 1 });
    expect(nodeCapacityFields(node, 'eu-west/rtx4090')['vramGiB>=40']).toBeUndefined();
  });

  it('sums to zero when a node that turned live turns dead', () => {
    const fields = nodeCapacityFields({ inventory: inventory([]) }, 'eu-west/cpu');
    const summary = summaryOf('eu-west/cpu', [fields, negated(fields)]);
    expect(Object.values(summary.fields).every((v) => v === 0)).toBe(true);
    expect(summary.liveNodes).toBe(0);
  });
});

describe('fitsSummary', () => {
  const h100 = inventory([gpu(0, 'NVIDIA H100 80GB HBM3', 81920), gpu(1, 'NVIDIA H100 80GB HBM3', 81920)]);
  const summary = (inv: NodeInventory, pool: string) => summaryOf(pool, [nodeCapacityFields({ inventory: inv }, pool)]);

  it('refuses a pool without live nodes, of another region, class, vendor or runtime, or too small', () => {
    const s = summary(h100, 'eu-west/h100');
    expect(fitsSummary(req(), s)).toBe(true);
    expect(fitsSummary(req(), summaryOf('eu-west/h100', []))).toBe(false);
    expect(fitsSummary(req({ regions: ['us-east'] }), s)).toBe(false);
    expect(fitsSummary(req({ gpus: { count: 1, models: ['A100'] } }), s)).toBe(false);
    expect(fitsSummary(req({ gpus: { count: 1, models: ['H100'] } }), s)).toBe(true);
    expect(fitsSummary(req({ gpus: { count: 1, vendor: 'amd' } }), s)).toBe(false);
    expect(fitsSummary(req({ needsContainer: true }), s)).toBe(false);
    expect(fitsSummary(req({ gpus: { count: 4 } }), s)).toBe(false);
    expect(fitsSummary(req({ gpus: { count: 1 }, cpuCores: 64 }), s)).toBe(false);
    expect(fitsSummary(req({ gpus: { count: 1 }, memoryMiB: 300 * 1024 }), s)).toBe(false);
  });

  it('never rules out the pool the router would pick for a node that fits (property)', () => {
    const models = [
      'NVIDIA H100 80GB HBM3',
      'NVIDIA A100-SXM4-40GB',
      'NVIDIA RTX 4090',
      'AMD Instinct MI300X',
      'Mystery',
    ];
    const device = fc.record({
      model: fc.constantFrom(...models),
      vramMiB: fc.integer({ min: 1024, max: 196_608 }),
    });
    const node = fc.record({
      devices: fc.array(device, { maxLength: 10 }),
      cores: fc.integer({ min: 1, max: 128 }),
      memoryMiB: fc.integer({ min: 1024, max: 1_048_576 }),
      runtimes: fc.subarray(['process', 'docker'] as const, { minLength: 1 }),
    });
    const requirement = fc.record({
      count: fc.integer({ min: 0, max: 12 }),
      minVramMiB: fc.option(fc.integer({ min: 0, max: 196_608 }), { nil: undefined }),
      model: fc.option(fc.constantFrom('H100', 'a100', 'RTX 4090', 'MI300X'), { nil: undefined }),
      vendor: fc.option(fc.constantFrom('nvidia', 'amd') as fc.Arbitrary<'nvidia' | 'amd'>, { nil: undefined }),
      cpuCores: fc.option(fc.integer({ min: 1, max: 128 }), { nil: undefined }),
      memoryMiB: fc.option(fc.integer({ min: 1, max: 1_048_576 }), { nil: undefined }),
      needsContainer: fc.boolean(),
    });
    fc.assert(
      fc.property(node, requirement, (n, r) => {
        const inv = inventory(
          n.devices.map((d, i) => gpu(i, d.model, d.vramMiB, d.model.startsWith('AMD') ? 'amd' : 'nvidia')),
          { cpu: { model: 'x', cores: n.cores }, memoryMiB: n.memoryMiB, runtimes: [...n.runtimes] },
        );
        const task = req({
          gpus: {
            count: r.count,
            ...(r.minVramMiB === undefined ? {} : { minVramMiB: r.minVramMiB }),
            ...(r.model === undefined ? {} : { models: [r.model] }),
            ...(r.vendor === undefined ? {} : { vendor: r.vendor }),
          },
          needsContainer: r.needsContainer,
          ...(r.cpuCores === undefined ? {} : { cpuCores: r.cpuCores }),
          ...(r.memoryMiB === undefined ? {} : { memoryMiB: r.memoryMiB }),
        });
        const fit = fitOnNode(task, inv);
        if (fit === undefined) return;
        const first = inv.gpus.find((g) => g.index === fit[0]);
        const pools = first === undefined ? poolsOf(inv) : [poolId(inv.region, acceleratorClass(first))];
        for (const pool of pools) expect(fitsSummary(task, summary(inv, pool))).toBe(true);
      }),
      { numRuns: 2000 },
    );
  });
});

describe('PoolSummaries on the embedded store', () => {
  const open = () => {
    const clock = new ManualClock(Date.UTC(2026, 0, 1));
    const store = new SqliteStore(openDatabase(':memory:'), clock);
    return { clock, store, summaries: new PoolSummaries(store, clock, 1000) };
  };

  it('sums every shard, reads each pool with one GetItem per shard and caches for its ttl', async () => {
    const { clock, store, summaries } = open();
    const seeds = Array.from({ length: 200 }, (_, i) => `node-${i}`);
    for (const seed of seeds) await store.transact([poolDelta('eu-west/h100', seed, { liveNodes: 1, liveGpus: 8 })]);
    await store.transact([
      poolDelta('eu-west/h100', 'job-a', { queued: 3 }),
      poolDelta('eu-west/h100', 'job-b', { queued: -1 }),
    ]);

    let gets = 0;
    const get = store.get.bind(store);
    store.get = (key) => {
      gets++;
      return get(key);
    };
    const summary = await summaries.get('eu-west/h100');
    expect(summary).toMatchObject({ pool: 'eu-west/h100', liveNodes: 200, liveGpus: 1600, queued: 2 });
    expect(gets).toBe(shardCount);

    await store.transact([poolDelta('eu-west/h100', 'job-c', { queued: 1 })]);
    expect((await summaries.get('eu-west/h100')).queued).toBe(2);
    clock.advance(1001);
    expect((await summaries.get('eu-west/h100')).queued).toBe(3);
    expect(gets).toBe(2 * shardCount);
  });

  it('lists every pool made known by ensurePool, once each', async () => {
    const { store, summaries } = open();
    await summaries.ensurePool('eu-west/h100');
    await summaries.ensurePool('eu-west/h100');
    await new PoolSummaries(store, new ManualClock(0)).ensurePool('eu-west/h100');
    await summaries.ensurePool('local/cpu');
    await store.transact([poolDelta('local/cpu', 'n1', { liveNodes: 1 })]);
    summaries.invalidate();
    const all = await summaries.all();
    expect(all.map((s) => [s.pool, s.liveNodes])).toEqual([
      ['eu-west/h100', 0],
      ['local/cpu', 1],
    ]);
  });
});
