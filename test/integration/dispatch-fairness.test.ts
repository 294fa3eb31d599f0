import { describe, expect, it, vi } from 'vitest';
import type { QueryOptions } from '../../functions/ports/store.js';
import type { JobSpecInput, NodeInventory } from '../../protocol/index.js';
import { generateNodeKeyPair, JobSpec } from '../../protocol/index.js';
import { cpuInventory, inProcessControlPlane, ManualClock, registerNode } from '../support/in-process.js';

const h100s = (count: number, region = 'local'): NodeInventory =>
  cpuInventory({
    region,
    gpus: Array.from({ length: count }, (_, index) => ({
      index,
      vendor: 'nvidia' as const,
      model: 'NVIDIA H100 80GB HBM3',
      vramMiB: 81559,
      uuid: `GPU-${region}-${count}-${index}`,
      computeCapability: '9.0',
    })),
  });

function world() {
  const clock = new ManualClock();
  const h = inProcessControlPlane({ clock, settings: { leaseMs: 60_000, livenessMs: 1e12 } });
  const register = async (inventory: NodeInventory) => {
    const { node } = await h.cp.nodes.register({
      publicKey: generateNodeKeyPair().publicKey,
      agentVersion: 't',
      inventory,
    });
    h.cp.router.invalidate();
    return node.id;
  };
  const submit = async (spec: JobSpecInput, owner = 'default') => {
    const { job } = await h.cp.jobs.submit(owner, JobSpec.parse(spec));
    await h.cp.scheduler.schedule({ jobId: job.id });
    clock.advance(1);
    return job.id;
  };
  return { ...h, clock, register, submit };
}

describe('dispatch without head-of-line blocking', () => {
  it('hands a small task to a node that cannot run the 30 big tasks queued ahead of it', async () => {
    const w = world();
    await w.register(h100s(8)); // the node the big tasks are for: it is busy elsewhere, it never polls
    const small = await w.register(h100s(1));
    const big = await w.submit({ command: ['true'], tasks: 30, resources: { gpus: { count: 8 } } });
    const job = await w.submit({ command: ['true'], resources: { gpus: { count: 1 } } });
    const view = await w.cp.jobs.get('default', big);
    expect(view.tasks.every((t) => t.pool === 'local/h100')).toBe(true);
    const work = await w.cp.dispatcher.poll(small, 0);
    expect(work?.jobId).toBe(job);
    await w.close();
  });
});

/** Counts the pool queue reads of a control plane's store (the real SQLite store, observed). */
function countPoolReads(store: { query: (o: QueryOptions) => Promise<unknown> }, pool: string) {
  const spy = vi.spyOn(store, 'query');
  return () => spy.mock.calls.filter(([o]) => o.index === 'byPool' && o.pk === `POOL#${pool}`).length;
}

const until = async (done: () => boolean) => {
  while (!done()) await new Promise((r) => setTimeout(r, 5));
};

describe('waking waiting polls', () => {
  it('wakes one waiting poll for a routed task, not every poll of the pool', async () => {
    const h = inProcessControlPlane({ settings: { recheckMs: 60_000, livenessMs: 1e12 } });
    const nodes: string[] = [];
    for (let i = 0; i < 10; i++) {
      const { node } = await h.cp.nodes.register({
        publicKey: generateNodeKeyPair().publicKey,
        agentVersion: 't',
        inventory: cpuInventory(),
      });
      nodes.push(node.id);
    }
    const stop = new AbortController();
    const reads = countPoolReads(h.store, 'local/cpu');
    const polls = nodes.map((id) => h.cp.dispatcher.poll(id, 20, stop.signal));
    await until(() => reads() === 10); // each poll read the pool once, found nothing, and waits
    const { job } = await h.cp.jobs.submit('default', JobSpec.parse({ command: ['true'] }));
    await h.cp.scheduler.schedule({ jobId: job.id });
    const first = await Promise.race(polls);
    expect(first?.jobId).toBe(job.id);
    await new Promise((r) => setTimeout(r, 50));
    // The router reads the pool once to size its queue; one woken poll reads it and claims.
    expect(reads() - 10).toBeLessThanOrEqual(2);
    stop.abort();
    await Promise.all(polls);
    await h.close();
  });

  it('does not read the pool again on every recheck while nothing changed', async () => {
    const h = inProcessControlPlane({ settings: { recheckMs: 10, livenessMs: 1e12 } });
    const { node } = await h.cp.nodes.register({
      publicKey: generateNodeKeyPair().publicKey,
      agentVersion: 't',
      inventory: cpuInventory(),
    });
    const reads = countPoolReads(h.store, 'local/cpu');
    expect(await h.cp.dispatcher.poll(node.id, 0.3)).toBeUndefined();
    expect(reads()).toBe(1);
    // A task that was routed while nobody waited is still found by the next recheck.
    const { job } = await h.cp.jobs.submit('default', JobSpec.parse({ command: ['true'] }));
    await h.cp.scheduler.schedule({ jobId: job.id });
    expect((await h.cp.dispatcher.poll(node.id, 0.3))?.jobId).toBe(job.id);
    await h.close();
  });

  it('wakes two polls for two tasks routed at once, one task each', async () => {
    const h = inProcessControlPlane({ settings: { recheckMs: 60_000, livenessMs: 1e12 } });
    const register = () => registerNode(h);
    const [a, b] = [await register(), await register()];
    const reads = countPoolReads(h.store, 'local/cpu');
    const stop = new AbortController();
    const pollA = h.cp.dispatcher.poll(a, 20, stop.signal);
    const pollB = h.cp.dispatcher.poll(b, 20, stop.signal);
    await until(() => reads() === 2);
    // Two tasks routed at once: two polls woken, one task each.
    const { job } = await h.cp.jobs.submit('default', JobSpec.parse({ command: ['true'], tasks: 2 }));
    await h.cp.scheduler.schedule({ jobId: job.id });
    const got = await Promise.all([pollA, pollB]);
    expect(got.map((x) => x?.jobId)).toEqual([job.id, job.id]);
    expect(new Set(got.map((x) => x?.taskId)).size).toBe(2);
    stop.abort();
    await h.close();
  });
});

describe('retries avoid the nodes that failed them', () => {
  it('offers a failed task to another node first, and to the same node when it is the only one', async () => {
    const w = world();
    const [a, b] = [await w.register(cpuInventory()), await w.register(cpuInventory())];
    const job = await w.submit({ command: ['true'], retries: 3 });
    const first = await w.cp.dispatcher.poll(a, 0);
    expect(first?.jobId).toBe(job);
    await w.cp.reports.fail(a, first?.taskId ?? '', { attempt: 1, reason: 'error', message: 'boom' });
    await w.cp.scheduler.schedule({ jobId: job });
    expect(await w.cp.dispatcher.poll(a, 0)).toBeUndefined();
    const second = await w.cp.dispatcher.poll(b, 0);
    expect(second).toMatchObject({ taskId: first?.taskId, attempt: 2 });
    // B fails it too: both live nodes of the pool are avoided, so either may run it again.
    await w.cp.reports.fail(b, second?.taskId ?? '', { attempt: 2, reason: 'error', message: 'boom' });
    await w.cp.scheduler.schedule({ jobId: job });
    expect(await w.cp.dispatcher.poll(a, 0)).toMatchObject({ taskId: first?.taskId, attempt: 3 });
    await w.close();
  });

  it('lets the avoided node take the retry once it has waited long enough for another', async () => {
    const w = world();
    const [a] = [await w.register(cpuInventory()), await w.register(cpuInventory())];
    const job = await w.submit({ command: ['true'], retries: 3 });
    const first = await w.cp.dispatcher.poll(a, 0);
    await w.cp.reports.fail(a, first?.taskId ?? '', { attempt: 1, reason: 'error', message: 'boom' });
    await w.cp.scheduler.schedule({ jobId: job });
    expect(await w.cp.dispatcher.poll(a, 0)).toBeUndefined();
    w.clock.advance(60_000);
    expect(await w.cp.dispatcher.poll(a, 0)).toMatchObject({ taskId: first?.taskId, attempt: 2 });
    await w.close();
  });
});

describe('priorities and fair share', () => {
  it('dispatches a higher priority first, whatever its age', async () => {
    const w = world();
    const node = await w.register(cpuInventory());
    await w.submit({ command: ['true'], tasks: 3 });
    const urgent = await w.submit({ command: ['true'], priority: 8 });
    expect((await w.cp.dispatcher.poll(node, 0))?.jobId).toBe(urgent);
    await w.close();
  });

  it('alternates tenants of equal priority instead of draining the first queue', async () => {
    const w = world();
    const node = await w.register(cpuInventory({ cpu: { cores: 16, model: 'Test CPU' } }));
    const big = await w.submit({ command: ['true'], tasks: 10 }, 'tenant-a');
    const small = await w.submit({ command: ['true'], tasks: 2 }, 'tenant-b');
    const order: string[] = [];
    for (let i = 0; i < 4; i++) order.push((await w.cp.dispatcher.poll(node, 0))?.jobId ?? 'none');
    expect(order).toEqual([big, small, big, small]);
    await w.close();
  });

  it('does not let a priority-9 flood of one tenant hold back another tenant beyond one task per slot', async () => {
    const w = world();
    const node = await w.register(cpuInventory({ cpu: { cores: 16, model: 'Test CPU' } }));
    // More tasks than a page of the pool queue (scanLimit 25): the other tenant's task is past the first page.
    const flood = await w.submit({ command: ['sleep', '4'], tasks: 40, priority: 9 }, 'alpha');
    expect((await w.cp.dispatcher.poll(node, 0))?.jobId).toBe(flood);
    const job = await w.submit({ command: ['true'] }, 'beta');
    expect((await w.cp.dispatcher.poll(node, 0))?.jobId).toBe(job);
    // Within one tenant priority still orders: alpha's flood goes before its own default job.
    const later = await w.submit({ command: ['true'] }, 'alpha');
    expect((await w.cp.dispatcher.poll(node, 0))?.jobId).toBe(flood);
    expect(later).not.toBe(flood);
    await w.close();
  });
});
