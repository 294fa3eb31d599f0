import { describe, expect, it, vi } from 'vitest';
import { MemorySignal } from '../../functions/adapters/embedded/memory-signal.js';
import type { NodeRecord } from '../../functions/domain/resource/node-record.js';
import { neutralPerformance } from '../../functions/domain/scheduling/performance.js';
import { WaitingPlacement } from '../../functions/domain/scheduling/waiting-placement.js';
import { workSignal } from '../../functions/domain/scheduling/work-signal.js';
import type { QueryOptions } from '../../functions/ports/store.js';
import type { Assignment, JobSpecInput, NodeInventory } from '../../protocol/index.js';
import {
  cpuInventory,
  h100Inventory,
  inProcessControlPlane,
  ManualClock,
  runToVerdict,
  submitScheduled,
  TestNode,
} from '../support/in-process.js';

/**
 * Which waiting poll a routed task wakes is the placement engine's choice (waiting-placement.ts):
 * the node placeTask picks among the nodes waiting now, by learned run time x slowdown /
 * reliability and packing, not the node that has waited longest. Through the real embedded
 * control plane: HTTP for the nodes' reports, the real router, verifier, dispatcher and signal.
 */

/** Which of the named polls answered first, and the job it was handed. */
const firstOf = (polls: Record<string, Promise<Assignment | undefined>>) =>
  Promise.race(Object.entries(polls).map(([name, poll]) => poll.then((got) => [name, got?.jobId])));

/** Resolves once `done` holds, checking every few ms (a poll's reads are async). */
const until = async (done: () => boolean) => {
  while (!done()) await new Promise((r) => setTimeout(r, 5));
};

function world() {
  const clock = new ManualClock(Date.now());
  // Waits re-register only when woken: the order they waited in stays as the test made it.
  const h = inProcessControlPlane({ clock, settings: { recheckMs: 60_000, livenessMs: 1e12, leaseMs: 3_600_000 } });
  const spy = vi.spyOn(h.store, 'query');
  const poolReads = (pool: string) =>
    spy.mock.calls.filter(([o]: [QueryOptions]) => o.index === 'byPool' && o.pk === `POOL#${pool}`).length;
  const join = async (inventory: NodeInventory) => {
    const node = new TestNode(h.request, clock);
    expect((await node.register(inventory)).status).toBe(201);
    h.cp.router.invalidate();
    return node;
  };
  const submit = async (spec: JobSpecInput) => (await submitScheduled(h, spec)).id;
  /** Runs one task of `spec` on `node` for `runtimeMs` (the only node polling), to a verified result. */
  const run = async (node: TestNode, spec: JobSpecInput, runtimeMs: number) =>
    expect(await runToVerdict(h, node, clock, spec, runtimeMs)).toBe('verified');
  /**
   * Long polls of these nodes, by name, each started once the one before it read the pool and
   * waits, so the first named waits longest. Aborted by `stop`.
   */
  const wait = async <K extends string>(pool: string, nodes: Record<K, TestNode>, stop: AbortSignal) => {
    const polls = {} as Record<K, Promise<Assignment | undefined>>;
    for (const [name, node] of Object.entries(nodes) as [K, TestNode][]) {
      const before = poolReads(pool);
      polls[name] = h.cp.dispatcher.poll(node.id, 600, stop);
      await until(() => poolReads(pool) > before);
      await new Promise((r) => setTimeout(r, 5));
    }
    return polls;
  };
  return { ...h, clock, join, submit, run, wait };
}

describe('a routed task wakes the waiting node placement picks', () => {
  it('wakes the node learned faster, though a node learned 3x slower waited longer', async () => {
    const w = world();
    const fast = await w.join(cpuInventory());
    const slow = await w.join(cpuInventory());
    const spec: JobSpecInput = { command: ['render', 'scene.blend'], workload: 'rendering' };
    for (let i = 0; i < 3; i++) await w.run(fast, spec, 40_000);
    for (let i = 0; i < 3; i++) await w.run(slow, spec, 120_000);

    const stop = new AbortController();
    const polls = await w.wait('local/cpu', { slow, fast }, stop.signal);
    const job = await w.submit(spec);
    expect(await firstOf(polls)).toEqual(['fast', job]);
    stop.abort();
    expect(await polls.slow).toBeUndefined();
    await w.close();
  });

  it('wakes the node learned reliable, though a node that failed its last tasks waited longer', async () => {
    const w = world();
    const steady = await w.join(cpuInventory());
    const flaky = await w.join(cpuInventory());
    for (let i = 0; i < 2; i++) {
      await w.submit({ command: ['true'], retries: 0 });
      const polled = await flaky.poll(0);
      const { assignment } = (await polled.json()) as { assignment: { taskId: string; attempt: number } };
      const failed = await flaky.call('POST', `/v1/nodes/${flaky.id}/tasks/${assignment.taskId}/fail`, {
        attempt: assignment.attempt,
        reason: 'error',
        message: 'x',
      });
      expect(failed.status).toBe(200);
    }

    const stop = new AbortController();
    const polls = await w.wait('local/cpu', { flaky, steady }, stop.signal);
    const job = await w.submit({ command: ['true'] });
    expect(await firstOf(polls)).toEqual(['steady', job]);
    stop.abort();
    expect(await polls.flaky).toBeUndefined();
    await w.close();
  });

  it('packs a 1-GPU task onto the host with one GPU free, not the empty 8-GPU host that waited longer', async () => {
    const w = world();
    const busy = await w.join(h100Inventory(8));
    const empty = await w.join(h100Inventory(8));
    // Seven of the busy host's GPUs are taken by a task it holds (it polled alone).
    const seven = await w.submit({ command: ['train'], resources: { gpus: { count: 7 } } });
    const polled = await busy.poll(0);
    expect(((await polled.json()) as { assignment: { jobId: string } }).assignment.jobId).toBe(seven);

    const stop = new AbortController();
    const polls = await w.wait('local/h100', { empty, busy }, stop.signal);
    const one = await w.submit({ command: ['infer'], resources: { gpus: { count: 1 } } });
    expect(await firstOf(polls)).toEqual(['busy', one]);
    expect((await polls.busy)?.gpuIndices).toEqual([7]);
    stop.abort();
    expect(await polls.empty).toBeUndefined();
    await w.close();
  });

  it("counts the GPUs of a node's finished tasks as free, though its item still lists them", async () => {
    const w = world();
    const single = await w.join(h100Inventory(1));
    const empty = await w.join(h100Inventory(8));
    // The 1-GPU host ran a task to a verified result: its item still holds it until a poll prunes.
    await w.run(single, { command: ['train'], resources: { gpus: { count: 1 } } }, 1_000);

    const stop = new AbortController();
    const polls = await w.wait('local/h100', { empty, single }, stop.signal);
    const one = await w.submit({ command: ['infer'], resources: { gpus: { count: 1 } } });
    expect(await firstOf(polls)).toEqual(['single', one]);
    stop.abort();
    expect(await polls.empty).toBeUndefined();
    await w.close();
  });
});

describe('the memory signal with a chooser', () => {
  it('wakes the chosen waiter only if it accepts the payload, else the longest waiting; counts a wake nobody takes as missed', async () => {
    const signal = new MemorySignal();
    const seen: string[] = [];
    let pick: number | undefined;
    signal.chooseWith({
      waiting: (topic, waiter, candidate) => {
        seen.push(`+${topic}:${waiter}:${String(candidate)}`);
        if (candidate === 'best') pick = waiter;
      },
      left: (topic, waiter) => seen.push(`-${topic}:${waiter}`),
      choose: () => pick,
    });
    const first = signal.wait(['a'], 60_000, undefined, (p) => p !== 'big', 'first');
    const best = signal.wait(['a'], 60_000, undefined, (p) => p !== 'big', 'best');
    const third = signal.wait(['a'], 60_000, undefined, () => true, 'third');
    signal.notify('a', 'small');
    expect((await best)?.payload).toBe('small');
    // The chosen waiter left: the signal's own order (the longest waiting that accepts) decides.
    signal.notify('a', 'small');
    expect((await first)?.payload).toBe('small');
    signal.notify('a', 'big');
    expect((await third)?.payload).toBe('big');
    signal.notify('a', 'big');
    expect(signal.missed('a')).toBe(1);
    expect(seen).toEqual(['+a:0:first', '+a:1:best', '+a:2:third', '-a:1', '-a:0', '-a:2']);
  });

  it('wakes the longest waiting when the chooser throws, and its waits still wait', async () => {
    const signal = new MemorySignal();
    const broken = () => {
      throw new Error('broken');
    };
    signal.chooseWith({ waiting: broken, left: broken, choose: broken });
    const first = signal.wait(['a'], 60_000, undefined, undefined, 'x');
    void signal.wait(['a'], 10, undefined, undefined, 'y');
    signal.notify('a', 'work');
    expect((await first)?.payload).toBe('work');
  });
});

describe('waiting placement', () => {
  const node = (id: string, inventory: NodeInventory, pools: string[]) =>
    ({ id, inventory, pools }) as unknown as NodeRecord;
  const task = (gpus: number) => workSignal('t', { gpus: { count: gpus }, needsContainer: false });

  it('names the oldest wait of the node placement picks, nothing when no waiting node has room, and forgets nodes whose waits ended', () => {
    const chooser = new WaitingPlacement(neutralPerformance, { now: () => Date.now() });
    const pool = 'local/h100';
    const eight = node('eight', h100Inventory(8), [pool]);
    const one = node('one', h100Inventory(8), [pool]);
    const sevenHeld = [{ taskId: 'x', attempt: 1, gpuIndices: [0, 1, 2, 3, 4, 5, 6], cpuCores: 1, memoryMiB: 1 }];
    chooser.waiting(pool, 1, { node: eight, held: [] });
    chooser.waiting(pool, 2, { node: one, held: sevenHeld });
    chooser.waiting(pool, 3, { node: one, held: sevenHeld });
    // Not a pool of the node (a gang member's topic): not placed on.
    chooser.waiting('gang:j:one', 2, { node: one, held: sevenHeld });
    expect(chooser.waitingNodes('gang:j:one')).toBe(0);
    expect(chooser.choose(pool, task(1))).toBe(2);
    expect(chooser.choose(pool, task(8))).toBe(1);
    expect(chooser.choose(pool, 'not a work signal')).toBeUndefined();
    chooser.left(pool, 1);
    expect(chooser.choose(pool, task(8))).toBeUndefined();
    chooser.left(pool, 2);
    expect(chooser.choose(pool, task(1))).toBe(3);
    chooser.left(pool, 3);
    expect(chooser.waitingNodes(pool)).toBe(0);
    expect(chooser.choose(pool, task(1))).toBeUndefined();
  });
});
