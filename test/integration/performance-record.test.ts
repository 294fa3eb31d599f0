import { describe, expect, it } from 'vitest';
import { openDatabase } from '../../functions/adapters/embedded/sqlite.js';
import { SqliteStore } from '../../functions/adapters/embedded/sqlite-store.js';
import {
  classEpochMs,
  learningRates,
  type Outcome,
  performancePriors,
  workloadOf,
} from '../../functions/domain/scheduling/performance.js';
import {
  attemptOutcome,
  perfNodeKey,
  StoredPerformance,
} from '../../functions/domain/scheduling/performance-record.js';
import {
  claim,
  expireLease,
  markVerified,
  recordFailure,
  recordResult,
  stop,
} from '../../functions/domain/scheduling/task-machine.js';
import { newTaskRecord, type TaskRecord } from '../../functions/domain/scheduling/task-record.js';
import { resultHash } from '../../protocol/index.js';
import { CountingStore } from '../support/counting-store.js';
import {
  cpuInventory,
  inProcessControlPlane,
  ManualClock,
  runToVerdict,
  submitScheduled,
  TestNode,
} from '../support/in-process.js';

/**
 * The learned estimates live in the store (performance-record.ts): a restart or another process
 * starts from what was learned, an outcome costs a bounded number of requests, and processes that
 * record at once lose nothing. Real SQLite store, real task transitions, the real verifier.
 */

function world() {
  const clock = new ManualClock();
  const store = new SqliteStore(openDatabase(':memory:'), clock);
  return { clock, store };
}

const completed = (nodeId: string, at: number, runtimeMs: number, workload = 'batch/0001', cls = 'h100'): Outcome => ({
  nodeId,
  kind: 'completed',
  at,
  workload,
  acceleratorClass: cls,
  runtimeMs,
});

describe('stored performance estimates', () => {
  it('keeps what it learned across a restart', async () => {
    const { clock, store } = world();
    const first = new StoredPerformance(store, clock);
    for (let i = 0; i < 30; i++) {
      clock.advance(60_000);
      await first.recordOutcome(completed('fast', clock.now(), 100_000));
      await first.recordOutcome(completed('slow', clock.now(), 300_000));
      await first.recordOutcome(
        i % 2 === 0 ? completed('flaky', clock.now(), 100_000) : { nodeId: 'flaky', kind: 'lost', at: clock.now() },
      );
    }
    await first.recordLatency('fast', 20);
    expect(first.slowdown('slow') / first.slowdown('fast')).toBeGreaterThan(2.5);
    expect(first.reliability('flaky')).toBeLessThan(0.8);

    const restarted = new StoredPerformance(store, clock);
    // A question about what is not loaded yet is answered with the priors and starts its load.
    expect(restarted.slowdown('slow')).toBe(1);
    expect(restarted.runtimeMs('batch', 'h100')).toBe(60_000);
    await new Promise((resolve) => setTimeout(resolve, 50));
    expect(restarted.slowdown('slow')).toBeCloseTo(first.slowdown('slow'), 9);
    // A router that knows only the workload's type gets the type's figures.
    expect(restarted.runtimeMs('batch', 'h100')).toBeCloseTo(first.runtimeMs('batch/0001', 'h100'), 3);
    await restarted.prepare({
      nodeIds: ['fast', 'slow', 'flaky'],
      classes: [{ workload: 'batch/0001', acceleratorClass: 'h100' }],
    });
    for (const id of ['fast', 'slow', 'flaky']) {
      expect(restarted.slowdown(id)).toBeCloseTo(first.slowdown(id), 9);
      expect(restarted.reliability(id)).toBeCloseTo(first.reliability(id), 9);
      expect(restarted.latencyMs(id)).toBeCloseTo(first.latencyMs(id), 9);
    }
    // Learned (one report moves it part way from the 50 ms prior toward 20 ms), and kept.
    expect(restarted.latencyMs('fast')).toBeLessThan(performancePriors.latencyMs);
    expect(restarted.runtimeMs('batch/0001', 'h100')).toBeCloseTo(first.runtimeMs('batch/0001', 'h100'), 3);
    // What another process learns after this one loaded is taken in once the cache expires.
    for (let i = 0; i < 10; i++) await first.recordOutcome({ nodeId: 'fast', kind: 'lost', at: clock.now() });
    await restarted.prepare({ nodeIds: ['fast'] });
    expect(restarted.reliability('fast')).toBeGreaterThan(0.9);
    clock.advance(10_000);
    await restarted.prepare({ nodeIds: ['fast'] });
    expect(restarted.reliability('fast')).toBeCloseTo(first.reliability('fast'), 9);
  });

  it('costs one read and one transaction of at most three writes per outcome', async () => {
    const { clock, store } = world();
    const counting = new CountingStore(store);
    const perf = new StoredPerformance(counting, clock);
    await perf.recordOutcome(completed('n', clock.now(), 100_000)); // loads the class once
    counting.reset();
    for (let i = 0; i < 20; i++) {
      clock.advance(100);
      await perf.recordOutcome(completed('n', clock.now(), 100_000));
      await perf.recordOutcome({ nodeId: 'n', kind: 'failed', at: clock.now() });
    }
    expect(counting.gets).toHaveLength(40);
    expect(counting.queries).toHaveLength(0);
    expect(counting.transactions).toHaveLength(40);
    // The node's put, and for a completion one add to the program's sums and one to its type's.
    expect(Math.max(...counting.transactions.map((t) => t.length))).toBe(3);
    // The class items are counters (adds: no read, no condition), never the node's item.
    const classWrites = counting.transactions.flatMap((t) => t.filter((w) => w.kind === 'add'));
    expect(classWrites).toHaveLength(40);
    // Past the cache's life the classes are read again: a query per shard, not per outcome.
    clock.advance(10_000);
    counting.reset();
    await perf.recordOutcome(completed('n', clock.now(), 100_000));
    await perf.recordOutcome(completed('n', clock.now(), 100_000));
    expect(counting.queries).toHaveLength(2 * 8);
  });

  it('lets the class items expire a set time after their epoch ends, so a class holds a bounded number of them', async () => {
    const { clock, store } = world();
    const counting = new CountingStore(store);
    await new StoredPerformance(counting, clock).recordOutcome(completed('n', clock.now(), 100_000));
    // One add to the program's sums and one to its type's, each to its epoch's item.
    const keys = counting.transactions.flatMap((t) => t.filter((w) => w.kind === 'add').map((w) => w.key));
    expect(keys).toHaveLength(2);
    const runtimeAfresh = async (on = store) => {
      const perf = new StoredPerformance(on, clock);
      await perf.prepare({ classes: [{ workload: 'batch/0001', acceleratorClass: 'h100' }] });
      return perf.runtimeMs('batch/0001', 'h100');
    };
    const prior = await runtimeAfresh(new SqliteStore(openDatabase(':memory:'), clock));

    // A class unseen for 30 days after the epoch of its last sample starts afresh, as a node does.
    const epochEnd = (Math.floor(clock.now() / classEpochMs) + 1) * classEpochMs;
    clock.advance(epochEnd + 30 * 24 * 3600_000 - clock.now() - 1000);
    for (const key of keys) expect(await store.get(key)).toBeDefined();
    expect(await runtimeAfresh()).not.toBe(prior);

    clock.advance(1000);
    for (const key of keys) expect(await store.get(key)).toBeUndefined();
    expect(await runtimeAfresh()).toBe(prior);
  });

  it('loses no outcome when processes record at once', async () => {
    const { clock, store } = world();
    const a = new StoredPerformance(store, clock);
    const b = new StoredPerformance(store, clock);
    const at = clock.now();
    await Promise.all(
      Array.from({ length: 40 }, (_, i) => (i % 2 === 0 ? a : b).recordOutcome(completed('n', at, 50_000 + i))),
    );
    const reader = new StoredPerformance(store, clock);
    await reader.prepare({ nodeIds: ['n'] });
    const stored = (await store.get<{ ok: number; bad: number }>(perfNodeKey('n')))?.data;
    // Every success counted once: the evidence of 40 successes at one instant.
    const keep = learningRates.reliabilityKeep;
    expect(stored?.ok).toBeCloseTo((1 - keep ** 40) / (1 - keep), 9);
    expect(stored?.bad).toBe(0);
    // And every run time sample reached its class (the sums add up to 40 samples' weight).
    const samples = Array.from({ length: 40 }, (_, i) => Math.log(50_000 + i));
    const mean = samples.reduce((x, y) => x + y) / 40;
    const c = new StoredPerformance(store, clock);
    await c.prepare({ classes: [{ workload: 'batch/0001', acceleratorClass: 'h100' }] });
    // With the prior as half a sample: exp((40 mean + 0.5 log 60000) / 40.5 + variance / 2).
    const variance = samples.reduce((s, x) => s + (x - mean) ** 2, 0) / 40;
    const expected = Math.exp((40 * mean + 0.5 * Math.log(60_000)) / 40.5 + variance / 2);
    expect(c.runtimeMs('batch/0001', 'h100')).toBeCloseTo(expected, 3);
  });

  it('reads each ended attempt as the outcome its node is judged by', () => {
    const t0 = Date.parse('2026-12-01T00:00:00Z');
    const task = (): TaskRecord => ({
      ...newTaskRecord('job-1', 0, 1, 3, { gpus: { count: 1 }, needsContainer: false }, 3600, undefined, t0),
      pool: 'eu-west/h100',
    });
    const claimed = claim(task(), 'n1', [0], ['GPU-0'], t0, 30_000);
    const report = {
      attempt: 1,
      exitCode: 0,
      resultHash: resultHash([]),
      outputs: [],
      metrics: { wallMs: 1 },
    };
    const reported = recordResult(claimed, report, t0 + 90_000);
    expect(attemptOutcome(reported, 1, 'w/1')).toBeUndefined(); // waits for the verdict
    expect(attemptOutcome(markVerified(reported, t0 + 91_000), 1, 'w/1')).toEqual({
      nodeId: 'n1',
      kind: 'completed',
      at: t0 + 90_000,
      workload: 'w/1',
      acceleratorClass: 'h100',
      runtimeMs: 90_000,
    });
    // A non-zero exit is the job's doing, not the node's.
    expect(attemptOutcome(recordResult(claimed, { ...report, exitCode: 2 }, t0 + 5_000), 1)).toBeUndefined();
    expect(attemptOutcome(recordFailure(claimed, 'error', 'oom', t0 + 5_000), 1)?.kind).toBe('failed');
    expect(attemptOutcome(recordFailure(claimed, 'released', 'bye', t0 + 5_000), 1)?.kind).toBe('released');
    expect(attemptOutcome(expireLease(claimed, t0 + 40_000), 1)).toEqual({
      nodeId: 'n1',
      kind: 'lost',
      at: t0 + 40_000,
    });
    expect(attemptOutcome(stop(claimed, t0 + 5_000, 'cancelled', 'cancelled', 'by owner'), 1)).toBeUndefined();
    expect(attemptOutcome(claimed, 1)).toBeUndefined(); // still running
  });

  it('learns from the verifier: a verified run counts for its node and its class, a rejected one against its node', async () => {
    const clock = new ManualClock(Date.now());
    const h = inProcessControlPlane({ clock });
    const node = new TestNode(h.request, clock);
    expect((await node.register(cpuInventory())).status).toBe(201);
    const run = (spec: object, runtimeMs: number) => runToVerdict(h, node, clock, spec, runtimeMs);
    const spec = { command: ['render', 'scene.blend'], workload: 'rendering' };
    for (let i = 0; i < 3; i++) expect(await run(spec, 40_000)).toBe('verified');
    const workload = workloadOf({ workload: 'rendering', command: ['render', 'scene.blend'] });
    const view = new StoredPerformance(h.store, clock);
    await view.prepare({ nodeIds: [node.id], classes: [{ workload, acceleratorClass: 'cpu' }] });
    // Three runs of 40 s (plus the prior as half a sample of 60 s).
    expect(view.runtimeMs(workload, 'cpu')).toBeGreaterThan(40_000);
    expect(view.runtimeMs(workload, 'cpu')).toBeLessThan(44_000);
    expect(view.reliability(node.id)).toBeGreaterThan(0.95);

    const wrong = { command: ['true'], verification: { mode: 'expected-hash', sha256: 'a'.repeat(64) }, retries: 0 };
    for (let i = 0; i < 3; i++) expect(await run(wrong, 1_000)).toBe('rejected');
    clock.advance(10_000);
    await view.prepare({ nodeIds: [node.id] });
    expect(view.reliability(node.id)).toBeLessThan(0.8);
    await h.close();
  });

  it('learns from the failures a node reports and the leases the reaper finds lost, not from released tasks', async () => {
    const clock = new ManualClock(Date.now());
    const h = inProcessControlPlane({ clock });
    const node = new TestNode(h.request, clock);
    expect((await node.register(cpuInventory())).status).toBe(201);
    const take = async () => {
      await submitScheduled(h, { command: ['true'], retries: 0 });
      const polled = await node.poll(0);
      expect(polled.status).toBe(200);
      return ((await polled.json()) as { assignment: { taskId: string; attempt: number } }).assignment;
    };
    const view = new StoredPerformance(h.store, clock);
    const reliability = async () => {
      clock.advance(10_000); // past the view's cache
      await view.prepare({ nodeIds: [node.id] });
      return view.reliability(node.id);
    };
    const fail = (a: { taskId: string; attempt: number }, reason: string) =>
      node.call('POST', `/v1/nodes/${node.id}/tasks/${a.taskId}/fail`, { attempt: a.attempt, reason, message: 'x' });

    for (let i = 0; i < 3; i++) expect((await fail(await take(), 'released')).status).toBe(200);
    expect(await reliability()).toBe(0.95);
    for (let i = 0; i < 2; i++) expect((await fail(await take(), 'error')).status).toBe(200);
    const afterErrors = await reliability();
    expect(afterErrors).toBeLessThan(0.7);

    await take();
    clock.advance(h.cp.settings.leaseMs + 1);
    await h.cp.reaper.tick();
    expect(await reliability()).toBeLessThan(afterErrors);
    await h.close();
  });
});
