import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { AttestationLevel, GpuDevice, NodeInventory } from '../../../../protocol/index.js';
import { attestationFits, fitOnNode, gpuMatches, type TaskRequirements } from '../../resource/fit.js';
import type { PerformanceView } from '../performance.js';
import { FleetIndex, type FleetNode } from './fleet-index.js';
import { fullScanGreedy } from './full-scan.js';
import { placeTask } from './place-task.js';
import type { PlacementTask } from './placement.js';

const now = 1_800_000_000_000;
const devices: Omit<GpuDevice, 'index' | 'uuid'>[] = [
  { vendor: 'nvidia', model: 'NVIDIA H100 80GB HBM3', vramMiB: 81920, computeCapability: '9.0' },
  { vendor: 'nvidia', model: 'NVIDIA A100-SXM4-40GB', vramMiB: 40960, computeCapability: '8.0' },
  { vendor: 'nvidia', model: 'NVIDIA GeForce RTX 4090', vramMiB: 24564, computeCapability: '8.9' },
  { vendor: 'amd', model: 'AMD Instinct MI300X', vramMiB: 196608 },
];
const regions = ['eu-west', 'us-east', 'ap-south'];
const levels: AttestationLevel[] = ['none', 'measured', 'tpm', 'tpm+gpu'];

function inventory(kinds: number[], region: string, cores: number, runtimes: NodeInventory['runtimes']): NodeInventory {
  return {
    gpus: kinds.map((kind, index) => ({ ...(devices[kind] as GpuDevice), index, uuid: `GPU-${index}` })),
    cpu: { model: 'cpu', cores },
    memoryMiB: cores * 4096,
    os: 'linux',
    arch: 'x64',
    runtimes,
    region,
  };
}

/** A view with per-node figures from a table, and class speeds: what the learned estimates look like. */
function tablePerformance(figures: Map<string, { slowdown: number; reliability: number; latency: number }>) {
  const speed: Record<string, number> = { h100: 1, a100: 1.6, rtx4090: 2.5, mi300x: 1.2, cpu: 8 };
  return {
    runtimeMs: (workload: string, cls: string) => (workload === 'short' ? 200 : 600_000) * (speed[cls] ?? 3),
    slowdown: (id: string) => figures.get(id)?.slowdown ?? 1,
    reliability: (id: string) => figures.get(id)?.reliability ?? 0.95,
    latencyMs: (id: string) => figures.get(id)?.latency ?? 50,
  } satisfies PerformanceView;
}

const nodeArb = fc.record({
  kinds: fc.oneof(
    fc.constant<number[]>([]),
    fc.integer({ min: 0, max: 3 }).chain((k) => fc.array(fc.constant(k), { minLength: 1, maxLength: 8 })),
    fc.array(fc.integer({ min: 0, max: 3 }), { minLength: 2, maxLength: 4 }),
  ),
  region: fc.constantFrom(...regions),
  cores: fc.integer({ min: 1, max: 32 }),
  runtimes: fc.constantFrom<NodeInventory['runtimes']>(['docker'], ['process'], ['docker', 'process']),
  level: fc.constantFrom(...levels),
  expired: fc.boolean(),
  trust: fc.double({ min: 0, max: 1, noNaN: true }),
  waitMs: fc.integer({ min: 0, max: 5000 }),
  slowdown: fc.double({ min: 0.8, max: 3, noNaN: true }),
  reliability: fc.double({ min: 0.5, max: 1, noNaN: true }),
  latency: fc.integer({ min: 1, max: 300 }),
});

const reqArb: fc.Arbitrary<TaskRequirements> = fc.record(
  {
    gpus: fc.record(
      {
        count: fc.integer({ min: 0, max: 8 }),
        vendor: fc.constantFrom('nvidia' as const, 'amd' as const),
        models: fc.constantFrom(['H100'], ['a100', 'rtx4090'], ['A10']),
        minVramMiB: fc.constantFrom(16384, 65536),
        minComputeCapability: fc.constantFrom('8.0', '9.0'),
      },
      { requiredKeys: ['count'] },
    ),
    cpuCores: fc.integer({ min: 1, max: 16 }),
    memoryMiB: fc.integer({ min: 1, max: 65536 }),
    regions: fc.subarray(regions, { minLength: 1 }),
    needsContainer: fc.boolean(),
    minAttestation: fc.constantFrom(...levels),
  },
  { requiredKeys: ['gpus', 'needsContainer'] },
);

const taskArb = fc.record({
  req: reqArb,
  workload: fc.constantFrom('short', 'train'),
  minTrust: fc.option(fc.double({ min: 0, max: 1, noNaN: true }), { nil: undefined }),
  avoid: fc.array(fc.integer({ min: 0, max: 40 }), { maxLength: 3 }),
});

type NodeSpec = typeof nodeArb extends fc.Arbitrary<infer T> ? T : never;
type TaskSpec = typeof taskArb extends fc.Arbitrary<infer T> ? T : never;

function build(nodes: NodeSpec[]) {
  const figures = new Map<string, { slowdown: number; reliability: number; latency: number }>();
  const perf = tablePerformance(figures);
  const index = new FleetIndex(perf);
  const fleet: FleetNode[] = nodes.map((n, i) => {
    const id = `node-${i}`;
    figures.set(id, { slowdown: n.slowdown, reliability: n.reliability, latency: n.latency });
    return {
      id,
      inventory: inventory(n.kinds, n.region, n.cores, n.runtimes),
      attestation: {
        level: n.level,
        kind: [],
        verifiedAt: now - 1000,
        expiresAt: n.expired ? now - 1 : now + 60_000,
      },
      trust: n.trust,
      waitMs: n.waitMs,
    };
  });
  for (const node of fleet) index.add(node);
  return { index, perf, fleet };
}

function toTask(t: TaskSpec, id: string): PlacementTask {
  return {
    id,
    requirements: t.req,
    workload: t.workload,
    ...(t.minTrust === undefined ? {} : { minTrust: t.minTrust }),
    avoidNodes: t.avoid.map((i) => `node-${i}`),
  };
}

/** Every rule a node must pass, written out independently of the engine. */
function admissible(index: FleetIndex, nodeId: string, task: PlacementTask): boolean {
  const e = index.get(nodeId);
  if (e === undefined) return false;
  return (
    fitOnNode(task.requirements, e.inventory, e.held) !== undefined &&
    attestationFits(task.requirements, e.attestation, now) &&
    e.trust >= (task.minTrust ?? 0) &&
    !(task.avoidNodes ?? []).includes(nodeId)
  );
}

describe('placeTask', () => {
  it('never answers a node that does not fit, finds one whenever one fits, and scores like the full scan', () => {
    fc.assert(
      fc.property(
        fc.array(nodeArb, { minLength: 1, maxLength: 40 }),
        fc.array(taskArb, { minLength: 1, maxLength: 30 }),
        (nodes, tasks) => {
          const { index, perf } = build(nodes);
          tasks.forEach((t, i) => {
            const task = toTask(t, `task-${i}`);
            const ours = placeTask(index, task, perf, { now, searchBudget: Number.POSITIVE_INFINITY });
            const budgeted = placeTask(index, task, perf, { now });
            const greedy = fullScanGreedy(index, task, perf, { now });
            const anyFits = index.entries.some((e) => admissible(index, e.id, task));
            expect(ours !== undefined).toBe(anyFits);
            expect(greedy !== undefined).toBe(anyFits);
            if (ours === undefined || greedy === undefined) return;
            expect(admissible(index, ours.nodeId, task)).toBe(true);
            expect(budgeted !== undefined && admissible(index, budgeted.nodeId, task)).toBe(true);
            const e = index.get(ours.nodeId);
            expect(ours.gpuIndices).toEqual(fitOnNode(task.requirements, e?.inventory as NodeInventory, e?.held));
            // Without a search budget the bound is exact: the full scan's best score.
            expect(ours.score).toBeCloseTo(greedy.score, 6);
            // Take what was chosen, so later tasks see a fuller fleet.
            expect(index.reserve(ours.nodeId, task.id, task.requirements)).toEqual(ours.gpuIndices);
          });
        },
      ),
      { numRuns: 300 },
    );
  });

  it('prefers the node with the best predicted completion, and follows the estimates when they change', () => {
    const figures = new Map([
      ['fast', { slowdown: 1, reliability: 0.99, latency: 20 }],
      ['slow', { slowdown: 1.5, reliability: 0.99, latency: 20 }],
    ]);
    const perf = tablePerformance(figures);
    const index = new FleetIndex(perf);
    for (const id of ['fast', 'slow']) index.add({ id, inventory: inventory([0, 0], 'eu-west', 8, ['docker']) });
    const task: PlacementTask = {
      id: 't',
      workload: 'train',
      requirements: { gpus: { count: 1 }, needsContainer: true },
    };
    expect(placeTask(index, task, perf, { now })?.nodeId).toBe('fast');
    figures.set('fast', { slowdown: 3, reliability: 0.7, latency: 20 });
    index.refreshPerformance('fast');
    expect(placeTask(index, task, perf, { now })?.nodeId).toBe('slow');
    // For a short task, latency and wait dominate the run time.
    index.setWaitMs('slow', 10_000);
    expect(placeTask(index, { ...task, workload: 'short' }, perf, { now })?.nodeId).toBe('fast');
  });
});

describe('packing', () => {
  it('puts a one-GPU task on the host it fills most closely, keeping an empty 8-GPU host whole (bench:sim: 8-GPU tasks waited ~10 min)', () => {
    // The empty 8-GPU host is a little faster: by predicted completion alone it would win.
    const figures = new Map([
      ['big', { slowdown: 0.97, reliability: 0.99, latency: 20 }],
      ['small', { slowdown: 1, reliability: 0.99, latency: 20 }],
    ]);
    const perf = tablePerformance(figures);
    const index = new FleetIndex(perf);
    index.add({ id: 'big', inventory: inventory([0, 0, 0, 0, 0, 0, 0, 0], 'eu-west', 64, ['docker']) });
    index.add({ id: 'small', inventory: inventory([0, 0], 'eu-west', 16, ['docker']) });
    const one = (id: string): PlacementTask => ({
      id,
      workload: 'train',
      requirements: { gpus: { count: 1 }, needsContainer: true },
    });
    for (const id of ['a', 'b']) {
      const p = placeTask(index, one(id), perf, { now });
      expect(p?.nodeId).toBe('small');
      expect(fullScanGreedy(index, one(id), perf, { now })?.nodeId).toBe('small');
      index.reserve(p?.nodeId as string, id, one(id).requirements);
    }
    const eight: PlacementTask = {
      id: 'g8',
      workload: 'train',
      requirements: { gpus: { count: 8 }, needsContainer: true },
    };
    expect(placeTask(index, eight, perf, { now })?.nodeId).toBe('big');
    // A node faster by far more than the packing term still wins.
    figures.set('small', { slowdown: 8, reliability: 0.99, latency: 20 });
    index.release('small', 'a');
    index.refreshPerformance('small');
    expect(placeTask(index, one('c'), perf, { now })?.nodeId).toBe('big');
  });
});

describe('FleetIndex reserve and release', () => {
  it('keeps free GPUs, cores and memory equal to what held leaves, and moves nodes between buckets', () => {
    fc.assert(
      fc.property(
        fc.array(nodeArb, { minLength: 1, maxLength: 10 }),
        fc.array(fc.tuple(fc.boolean(), fc.integer({ min: 0, max: 9 }), reqArb), { maxLength: 60 }),
        (nodes, steps) => {
          const { index, perf } = build(nodes);
          const running: { nodeId: string; taskId: string }[] = [];
          steps.forEach(([release, pick, req], i) => {
            if (release && running.length > 0) {
              const [gone] = running.splice(pick % running.length, 1);
              if (gone !== undefined) expect(index.release(gone.nodeId, gone.taskId)).toBe(true);
              return;
            }
            const e = index.entries[pick % index.entries.length];
            if (e === undefined) return;
            const wanted = fitOnNode(req, e.inventory, e.held);
            const got = index.reserve(e.id, `t${i}`, req);
            expect(got).toEqual(wanted);
            if (got !== undefined) running.push({ nodeId: e.id, taskId: `t${i}` });
          });
          for (const e of index.entries) {
            const used = new Set(e.held.flatMap((h) => h.gpuIndices));
            expect(used.size).toBe(e.held.reduce((n, h) => n + h.gpuIndices.length, 0));
            expect(e.freeGpus).toBe(e.inventory.gpus.length - used.size);
            expect(e.freeCores).toBe(e.inventory.cpu.cores - e.held.reduce((n, h) => n + h.cpuCores, 0));
            expect(e.freeMemoryMiB).toBe(e.inventory.memoryMiB - e.held.reduce((n, h) => n + h.memoryMiB, 0));
          }
          // Whatever moved between buckets, a free node is still found: release everything, all fit again.
          for (const r of running) index.release(r.nodeId, r.taskId);
          const cpuTask: PlacementTask = {
            id: 'x',
            workload: 'train',
            requirements: { gpus: { count: 0 }, needsContainer: false },
          };
          const anyProcess = index.entries.some((e) => e.inventory.runtimes.includes('process'));
          expect(placeTask(index, cpuTask, perf, { now }) !== undefined).toBe(anyProcess);
        },
      ),
      { numRuns: 200 },
    );
  });

  it('holds given devices only where they fit (distinct, free, matching; the node has the cores and memory), else chooses as fitOnNode does', () => {
    fc.assert(
      fc.property(
        fc.array(nodeArb, { minLength: 1, maxLength: 6 }),
        fc.array(
          fc.tuple(
            fc.integer({ min: 0, max: 5 }),
            reqArb,
            fc.option(fc.array(fc.integer({ min: 0, max: 8 }), { maxLength: 8 }), { nil: undefined }),
          ),
          { maxLength: 40 },
        ),
        (nodes, steps) => {
          const { index } = build(nodes);
          steps.forEach(([pick, req, given], i) => {
            const e = index.entries[pick % index.entries.length] as (typeof index.entries)[number];
            const heldBefore = e.held.map((h) => ({ ...h }));
            const chosen = fitOnNode(req, e.inventory, heldBefore);
            const got = index.reserve(e.id, `t${i}`, req, 1, given);
            if (chosen === undefined) {
              expect(got).toBeUndefined();
              return;
            }
            expect(got).toBeDefined();
            const devices = got as number[];
            // Written out: as many as asked, distinct, the node's, unused before, each meeting the requirement.
            expect(devices.length).toBe(req.gpus.count);
            expect(new Set(devices).size).toBe(devices.length);
            const used = new Set(heldBefore.flatMap((h) => h.gpuIndices));
            for (const d of devices) {
              expect(used.has(d)).toBe(false);
              const gpu = e.inventory.gpus.find((g) => g.index === d);
              expect(gpu !== undefined && gpuMatches(req.gpus, gpu)).toBe(true);
            }
            // Given devices that fit are held as given; anything else is fitOnNode's choice.
            const givenFit =
              given !== undefined &&
              given.length === req.gpus.count &&
              new Set(given).size === given.length &&
              given.every(
                (d) => !used.has(d) && e.inventory.gpus.some((g) => g.index === d && gpuMatches(req.gpus, g)),
              );
            expect(devices).toEqual(givenFit ? given : chosen);
          });
        },
      ),
      { numRuns: 300 },
    );
  });

  it("re-fits placeTask's answer when the node changed before the claim, never holding a device twice", () => {
    const index = new FleetIndex();
    index.add({ id: 'n', inventory: inventory([0, 0, 0], 'eu-west', 8, ['docker']) });
    const one: TaskRequirements = { gpus: { count: 1 }, needsContainer: true };
    const p = placeTask(index, { id: 'a', workload: 'w', requirements: one }, undefined, { now });
    expect(p?.gpuIndices).toEqual([0]);
    // Another claim takes device 0 between the answer and its reserve.
    expect(index.reserve('n', 'other', { gpus: { count: 1 }, needsContainer: true }, 1, [0])).toEqual([0]);
    expect(index.reserve('n', 'a', one)).toEqual([1]);
    const q = placeTask(index, { id: 'b', workload: 'w', requirements: one }, undefined, { now });
    expect(q?.gpuIndices).toEqual([2]);
    expect(index.reserve('n', 'c', { gpus: { count: 1 }, needsContainer: true }, 1, [2])).toEqual([2]);
    expect(index.reserve('n', 'b', one)).toBeUndefined();
  });

  it('refuses a reservation the node no longer has room for, and answers a repeated one with the same devices', () => {
    const index = new FleetIndex();
    index.add({ id: 'n', inventory: inventory([0, 0], 'eu-west', 4, ['docker']) });
    const two: TaskRequirements = { gpus: { count: 2 }, needsContainer: true };
    expect(index.reserve('n', 'a', two)).toEqual([0, 1]);
    expect(index.reserve('n', 'a', two)).toEqual([0, 1]);
    expect(index.reserve('n', 'b', { gpus: { count: 1 }, needsContainer: true })).toBeUndefined();
    expect(placeTask(index, { id: 'b', workload: 'w', requirements: two }, undefined, { now })).toBeUndefined();
    expect(index.release('n', 'a')).toBe(true);
    expect(index.release('n', 'a')).toBe(false);
    expect(placeTask(index, { id: 'b', workload: 'w', requirements: two }, undefined, { now })?.nodeId).toBe('n');
    index.remove('n');
    expect(index.size).toBe(0);
    expect(placeTask(index, { id: 'b', workload: 'w', requirements: two }, undefined, { now })).toBeUndefined();
  });
});

describe('FleetIndex groups', () => {
  it('files nodes by runtime, so a task never looks at a group whose nodes all lack the runtime it needs', () => {
    const index = new FleetIndex();
    index.add({ id: 'docker', inventory: inventory([0], 'eu-west', 4, ['docker']) });
    index.add({ id: 'process', inventory: inventory([0], 'eu-west', 4, ['process']) });
    index.add({ id: 'both', inventory: inventory([0], 'eu-west', 4, ['docker', 'process']) });
    const bare: TaskRequirements = { gpus: { count: 1 }, needsContainer: false };
    const container: TaskRequirements = { gpus: { count: 1 }, needsContainer: true };
    const runtimesOf = (req: TaskRequirements) =>
      index
        .eligibleGroups(req)
        .map((g) => g.runtimes)
        .sort();
    expect(runtimesOf(bare)).toEqual([2, 3]);
    expect(runtimesOf(container)).toEqual([1, 3]);
  });
});
