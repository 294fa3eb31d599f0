import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { NodeInventory } from '../../../protocol/index.js';
import {
  type ClassSums,
  classEpochMs,
  classLandmarkOf,
  classRuntime,
  classSample,
  emptyNodeEstimate,
  latencyLimits,
  latencySampleDue,
  learningRates,
  mergeSums,
  type NodeEstimate,
  neutralPerformance,
  nodeLatency,
  OnlinePerformance,
  observeLatency,
  observeNode,
  performancePriors,
  workloadOf,
} from './performance.js';
import { FleetIndex } from './placement/fleet-index.js';
import { placeTask } from './placement/place-task.js';

const start = Date.parse('2026-12-01T00:00:00Z');
const minute = 60_000;

/** A small deterministic generator (mulberry32) with a normal deviate, so every run sees the same outcomes. */
function rng(seed: number) {
  let a = seed >>> 0;
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const normal = () => Math.sqrt(-2 * Math.log(1 - next())) * Math.cos(2 * Math.PI * next());
  return { next, normal };
}

/** A node as the simulation knows it: the hidden truth the estimates must find. */
interface TrueNode {
  id: string;
  slowdown: number;
  crashRate: number;
}

/**
 * Runs `count` tasks of `workload` on the nodes in turn, one a minute: each either crashes (its
 * lease is lost) or completes after median x slowdown, with lognormal noise of spread `sigma`.
 */
function drive(
  perf: OnlinePerformance,
  clock: { ms: number },
  nodes: TrueNode[],
  count: number,
  random: ReturnType<typeof rng>,
  { workload = 'w', cls = 'h100', medianMs = 100_000, sigma = 0.2 } = {},
): void {
  for (let i = 0; i < count; i++) {
    const node = nodes[i % nodes.length] as TrueNode;
    clock.ms += minute;
    const crashed = random.next() < node.crashRate;
    const runtimeMs = medianMs * node.slowdown * Math.exp(sigma * random.normal());
    perf.record(
      crashed
        ? { nodeId: node.id, kind: 'lost', at: clock.ms }
        : { nodeId: node.id, kind: 'completed', at: clock.ms, workload, acceleratorClass: cls, runtimeMs },
    );
  }
}

const h100Node = (region: string): NodeInventory => ({
  gpus: [
    {
      index: 0,
      uuid: 'GPU-0',
      vendor: 'nvidia',
      model: 'NVIDIA H100 80GB HBM3',
      vramMiB: 81920,
      computeCapability: '9.0',
    },
  ],
  cpu: { model: 'cpu', cores: 16 },
  memoryMiB: 65536,
  os: 'linux',
  arch: 'x64',
  runtimes: ['process'],
  region,
});

/** Where the placement engine places a one-GPU task of `workload` among nodes `a` and `b`, scored by `perf`. */
function placeOne(perf: OnlinePerformance, workload: string): string | undefined {
  const index = new FleetIndex(perf);
  index.add({ id: 'a', inventory: h100Node('eu-west'), trust: 1 });
  index.add({ id: 'b', inventory: h100Node('eu-west'), trust: 1 });
  return placeTask(
    index,
    { id: 'job-1#0', workload, requirements: { gpus: { count: 1 }, needsContainer: false } },
    perf,
    { now: start },
  )?.nodeId;
}

describe('performance estimates', () => {
  it('answers the priors while nothing is known', () => {
    const perf = new OnlinePerformance(() => start);
    for (const view of [neutralPerformance, perf]) {
      expect(view.runtimeMs('w', 'h100')).toBe(performancePriors.runtimeMs);
      expect(view.slowdown('n')).toBe(1);
      expect(view.reliability('n')).toBe(performancePriors.reliability);
      expect(view.latencyMs('n')).toBe(performancePriors.latencyMs);
    }
  });

  it('converges on the class run time, each node slowdown and reliability', () => {
    const clock = { ms: start };
    const perf = new OnlinePerformance(() => clock.ms);
    const nodes: TrueNode[] = [
      { id: 'fast-1', slowdown: 1, crashRate: 0 },
      { id: 'fast-2', slowdown: 1, crashRate: 0 },
      { id: 'slow', slowdown: 2.5, crashRate: 0 },
      { id: 'flaky', slowdown: 1, crashRate: 0.3 },
    ];
    const random = rng(7);
    drive(perf, clock, nodes, 400, random);
    // The class is what its nodes deliver: log run times of the fast and the slow nodes mixed (per
    // round the flaky node completes 0.7 tasks, the others 1 each), taken as a lognormal mean.
    const slowShare = 1 / 3.7;
    const meanLog = Math.log(100_000) + slowShare * Math.log(2.5);
    const variance = 0.2 ** 2 + slowShare * (1 - slowShare) * Math.log(2.5) ** 2;
    const trueMean = Math.exp(meanLog + variance / 2);
    expect(perf.runtimeMs('w', 'h100')).toBeGreaterThan(trueMean * 0.85);
    expect(perf.runtimeMs('w', 'h100')).toBeLessThan(trueMean * 1.15);
    // Slowdowns are against that class, so what must hold is each node's distance from the others.
    const ratio = perf.slowdown('slow') / perf.slowdown('fast-1');
    expect(ratio).toBeGreaterThan(2);
    expect(ratio).toBeLessThan(3.1);
    expect(perf.slowdown('fast-1') / perf.slowdown('fast-2')).toBeGreaterThan(0.85);
    expect(perf.slowdown('fast-1') / perf.slowdown('fast-2')).toBeLessThan(1.15);
    expect(perf.slowdown('fast-1')).toBeLessThan(1);
    expect(perf.slowdown('slow')).toBeGreaterThan(1.5);
    // Reliability is a short memory (it must adapt fast), so compare its average over a while.
    let flaky = 0;
    let steady = 0;
    for (let i = 0; i < 100; i++) {
      drive(perf, clock, nodes, 4, random);
      flaky += perf.reliability('flaky') / 100;
      steady += perf.reliability('fast-2') / 100;
    }
    expect(flaky).toBeGreaterThan(0.55);
    expect(flaky).toBeLessThan(0.85);
    expect(steady).toBeGreaterThan(0.98);
  });

  it('finds a node that slows down within a few of its outcomes, and placement moves off it', () => {
    const clock = { ms: start };
    const perf = new OnlinePerformance(() => clock.ms);
    // `a` runs 30% faster than `b`, so it is the better node until it slows down.
    const a: TrueNode = { id: 'a', slowdown: 1, crashRate: 0 };
    const b: TrueNode = { id: 'b', slowdown: 1.3, crashRate: 0 };
    const random = rng(11);
    drive(perf, clock, [a, b], 400, random);
    expect(placeOne(perf, 'w')).toBe('a');

    a.slowdown = 3;
    let outcomesOfA = 0;
    while (placeOne(perf, 'w') === 'a') {
      drive(perf, clock, [a, b], 2, random);
      outcomesOfA++;
      expect(outcomesOfA).toBeLessThanOrEqual(4);
    }
    // Within a few more, the estimate reaches the new pace: about 3 / 1.3 times b's.
    for (let i = 0; i < 6; i++) drive(perf, clock, [a, b], 2, random);
    expect(perf.slowdown('a') / perf.slowdown('b')).toBeGreaterThan(1.8);
    expect(perf.slowdown('a') / perf.slowdown('b')).toBeLessThan(2.8);
  });

  it('finds a node that starts failing within a few of its outcomes, and placement moves off it', () => {
    const clock = { ms: start };
    const perf = new OnlinePerformance(() => clock.ms);
    // `a` runs 30% faster than `b`, so it is the better node until it starts failing.
    const a: TrueNode = { id: 'a', slowdown: 1, crashRate: 0 };
    const b: TrueNode = { id: 'b', slowdown: 1.3, crashRate: 0 };
    const random = rng(13);
    drive(perf, clock, [a, b], 400, random);
    expect(placeOne(perf, 'w')).toBe('a');
    expect(perf.reliability('a')).toBeGreaterThan(0.97);

    a.crashRate = 1;
    let outcomesOfA = 0;
    while (placeOne(perf, 'w') === 'a') {
      drive(perf, clock, [a, b], 2, random);
      outcomesOfA++;
      expect(outcomesOfA).toBeLessThanOrEqual(4);
    }
    expect(perf.reliability('a')).toBeLessThan(0.8);
    // Failures that keep coming drive it far down, whatever its long good history.
    drive(perf, clock, [a, b], 10, random);
    expect(perf.reliability('a')).toBeLessThan(0.5);
  });

  it('forgives a node that stays idle: its evidence fades back toward the priors', () => {
    const clock = { ms: start };
    const perf = new OnlinePerformance(() => clock.ms);
    for (let i = 0; i < 20; i++) {
      clock.ms += minute;
      perf.record({ nodeId: 'a', kind: 'lost', at: clock.ms });
    }
    expect(perf.reliability('a')).toBeLessThan(0.3);
    clock.ms += 4 * learningRates.nodeHalfLifeMs;
    expect(perf.reliability('a')).toBeGreaterThan(0.75);
  });

  it('does not count a released task against its node', () => {
    const perf = new OnlinePerformance(() => start);
    for (let i = 0; i < 10; i++) perf.record({ nodeId: 'a', kind: 'released', at: start });
    expect(perf.reliability('a')).toBe(performancePriors.reliability);
  });

  it('keeps workloads and classes apart', () => {
    const clock = { ms: start };
    const perf = new OnlinePerformance(() => clock.ms);
    const nodes = [{ id: 'n', slowdown: 1, crashRate: 0 }];
    drive(perf, clock, nodes, 50, rng(3), { workload: 'short', cls: 'h100', medianMs: 2_000, sigma: 0 });
    drive(perf, clock, nodes, 50, rng(3), { workload: 'long', cls: 'a100', medianMs: 600_000, sigma: 0 });
    expect(perf.runtimeMs('short', 'h100')).toBeLessThan(2_500);
    expect(perf.runtimeMs('long', 'a100')).toBeGreaterThan(500_000);
    expect(perf.runtimeMs('short', 'a100')).toBe(performancePriors.runtimeMs);
  });

  it('predicts a new program from its workload type until it has samples of its own', () => {
    const clock = { ms: start };
    const perf = new OnlinePerformance(() => clock.ms);
    const nodes = [{ id: 'n', slowdown: 1, crashRate: 0 }];
    drive(perf, clock, nodes, 20, rng(5), { workload: 'rendering/aaaa', medianMs: 30_000, sigma: 0 });
    expect(perf.runtimeMs('rendering', 'h100')).toBeLessThan(35_000);
    expect(perf.runtimeMs('rendering/bbbb', 'h100')).toBe(perf.runtimeMs('rendering', 'h100'));
    drive(perf, clock, nodes, 20, rng(5), { workload: 'rendering/bbbb', medianMs: 300_000, sigma: 0 });
    expect(perf.runtimeMs('rendering/bbbb', 'h100')).toBeGreaterThan(250_000);
    expect(perf.runtimeMs('rendering/aaaa', 'h100')).toBeLessThan(35_000);
  });

  it('sums kept per epoch and merged give the exponentially decayed mean of every sample', () => {
    const sample = fc.record({
      offset: fc.integer({ min: 0, max: 3 * classEpochMs }),
      runtimeMs: fc.integer({ min: 1, max: 10_000_000 }),
    });
    fc.assert(
      fc.property(fc.array(sample, { minLength: 1, maxLength: 40 }), (samples) => {
        const byEpoch = new Map<number, ClassSums>();
        let running: ClassSums | undefined;
        for (const { offset, runtimeMs } of samples) {
          const at = start + offset;
          const { epoch, fields } = classSample(runtimeMs, at);
          const sums: ClassSums = { landmark: classLandmarkOf(at), ...fields };
          const known = byEpoch.get(epoch);
          byEpoch.set(
            epoch,
            known === undefined
              ? sums
              : { ...known, w: known.w + sums.w, sx: known.sx + sums.sx, sxx: known.sxx + sums.sxx },
          );
          running = running === undefined ? sums : mergeSums(running, sums);
        }
        const merged = [...byEpoch.values()].reduce((x, y) => mergeSums(x, y));
        const now = start + 3 * classEpochMs + 1;
        // The decayed mean, computed directly.
        let w = 0;
        let sx = 0;
        for (const { offset, runtimeMs } of samples) {
          const g = Math.exp(-(now - (start + offset)) / learningRates.classTauMs);
          w += g;
          sx += g * Math.log(runtimeMs);
        }
        const direct = sx / w;
        const mean = (s: ClassSums) => s.sx / s.w;
        expect(mean(merged)).toBeCloseTo(direct, 8);
        expect(mean(running as ClassSums)).toBeCloseTo(direct, 8);
        expect(classRuntime(merged, now)).toBeCloseTo(classRuntime(running, now), 3);
      }),
    );
  });

  it('labels a workload by its type and what it runs', () => {
    const train = workloadOf({ workload: 'training', image: 'pytorch:2', command: ['python', 'train.py', '--lr=1'] });
    expect(train).toMatch(/^training\/[0-9a-f]{8}$/);
    expect(workloadOf({ workload: 'training', image: 'pytorch:2', command: ['python', 'train.py', '--lr=2'] })).toBe(
      train,
    );
    expect(workloadOf({ workload: 'training', image: 'pytorch:2', command: ['python', 'eval.py'] })).not.toBe(train);
    expect(workloadOf({ workload: 'batch', image: 'pytorch:2', command: ['python', 'train.py'] })).not.toBe(train);
  });
});

describe('self-reported latency', () => {
  it('moves the estimate only part way from the prior on a first report, further with each', () => {
    const first = nodeLatency(observeLatency(undefined, 400, start));
    expect(first).toBeGreaterThan(performancePriors.latencyMs);
    expect(first).toBeLessThan(400 / 2);
    let est = observeLatency(undefined, 400, start);
    for (let i = 1; i < 30; i++) est = observeLatency(est, 400, start + i * latencyLimits.sampleEveryMs);
    expect(nodeLatency(est)).toBeGreaterThan(first);
    expect(nodeLatency(est)).toBeCloseTo(400, -1);
  });

  it('keeps its effect on placement within the bounds whatever a node reports, however often', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 1, max: 60_000 }), { minLength: 1, maxLength: 60 }), (reports) => {
        let est: NodeEstimate | undefined;
        reports.forEach((ms, i) => {
          est = observeLatency(est, ms, start + i * latencyLimits.sampleEveryMs);
        });
        const latency = nodeLatency(est);
        expect(latency).toBeGreaterThanOrEqual(latencyLimits.minMs);
        expect(latency).toBeLessThanOrEqual(latencyLimits.maxMs);
      }),
    );
    // An estimate stored before the bounds (or written by hand) is bounded when read.
    const lied = { ...emptyNodeEstimate(start), latSum: Math.log(0.1), latNorm: 1 };
    expect(nodeLatency(lied)).toBe(latencyLimits.minMs);
  });

  it('takes one sample per node per period: the time of the last one learned is kept in the estimate', () => {
    const est = observeLatency(undefined, 80, start);
    expect(latencySampleDue(undefined, start)).toBe(true);
    expect(latencySampleDue(est, start + latencyLimits.sampleEveryMs - 1)).toBe(false);
    expect(latencySampleDue(est, start + latencyLimits.sampleEveryMs)).toBe(true);
    // An outcome learned between samples keeps the time of the last sample.
    const after = observeNode(est, { nodeId: 'n', kind: 'failed', at: start + 1000 }, undefined);
    expect(latencySampleDue(after, start + 2000)).toBe(false);
  });
});
