import { describe, expect, it } from 'vitest';
import { LocalKeys } from '../../functions/adapters/embedded/local-keys.js';
import { MemorySignal } from '../../functions/adapters/embedded/memory-signal.js';
import { noCredentials, SignalWorkHints } from '../../functions/adapters/embedded/signal-work-hints.js';
import { createControlPlane, defaultSettings } from '../../functions/control-plane.js';
import { unplaceableMessage } from '../../functions/domain/scheduling/router.js';
import type { JobSpecInput, NodeInventory } from '../../protocol/index.js';
import { generateNodeKeyPair, JobSpec } from '../../protocol/index.js';
import { cpuInventory, inProcessControlPlane, ManualClock } from '../support/in-process.js';

const h100 = (region = 'local'): NodeInventory =>
  cpuInventory({
    region,
    gpus: [0, 1].map((index) => ({
      index,
      vendor: 'nvidia' as const,
      model: 'NVIDIA H100 80GB HBM3',
      vramMiB: 81559,
      uuid: `GPU-${region}-${index}`,
      computeCapability: '9.0',
    })),
  });

function world(settings: { leaseMs?: number; bootedAt?: number } = {}) {
  const clock = new ManualClock();
  const h = inProcessControlPlane({
    clock,
    settings: { leaseMs: 10_000, heartbeatIdleMs: 1000, livenessMs: 3000, ...settings },
  });
  const register = async (inventory: NodeInventory) => {
    const { node } = await h.cp.nodes.register({
      publicKey: generateNodeKeyPair().publicKey,
      agentVersion: 't',
      inventory,
    });
    h.cp.router.invalidate();
    return node.id;
  };
  const submit = async (spec: JobSpecInput) => {
    const { job } = await h.cp.jobs.submit('default', JobSpec.parse(spec));
    await h.cp.scheduler.schedule({ jobId: job.id });
    return job.id;
  };
  const task = async (jobId: string) => (await h.cp.jobs.get('default', jobId)).tasks[0];
  return { ...h, clock, register, submit, task };
}

describe('routing and late binding', () => {
  it('routes GPU work to the pool of its accelerator and CPU work to a CPU pool', async () => {
    const w = world();
    const gpuNode = await w.register(h100());
    const cpuNode = await w.register(cpuInventory());
    const gpuJob = await w.submit({ command: ['true'], resources: { gpus: { count: 2, models: ['H100'] } } });
    const cpuJob = await w.submit({ command: ['true'] });
    expect((await w.task(gpuJob))?.pool).toBe('local/h100');
    expect((await w.task(cpuJob))?.pool).toBe('local/cpu');
    // The CPU node never receives the GPU task; the GPU node gets both of its GPUs.
    const cpuWork = await w.cp.dispatcher.poll(cpuNode, 0);
    expect(cpuWork?.jobId).toBe(cpuJob);
    expect(await w.cp.dispatcher.poll(cpuNode, 0)).toBeUndefined();
    const gpuWork = await w.cp.dispatcher.poll(gpuNode, 0);
    expect(gpuWork).toMatchObject({ jobId: gpuJob, gpuIndices: [0, 1] });
    await w.close();
  });

  it('says why a task waits, and routes it once a node that fits registers', async () => {
    const w = world();
    await w.register(cpuInventory());
    const job = await w.submit({ command: ['true'], resources: { gpus: { count: 1, vendor: 'amd' } } });
    expect(await w.task(job)).toMatchObject({ state: 'queued', progress: { message: unplaceableMessage } });
    expect((await w.task(job))?.pool).toBeUndefined();
    const amd = await w.register(
      cpuInventory({
        gpus: [
          { index: 0, vendor: 'amd', model: 'AMD Instinct MI300X', vramMiB: 196592, uuid: 'g', gfxArch: 'gfx942' },
        ],
      }),
    );
    w.clock.advance(3000);
    await w.cp.reaper.tick();
    expect((await w.task(job))?.pool).toBe('local/mi300x');
    expect((await w.cp.dispatcher.poll(amd, 0))?.jobId).toBe(job);
    await w.close();
  });

  it('moves tasks out of a pool whose nodes all went away', async () => {
    const w = world();
    const west = await w.register(h100('eu-west'));
    const job = await w.submit({ command: ['true'], resources: { gpus: { count: 1 } } });
    expect((await w.task(job))?.pool).toBe('eu-west/h100');
    w.clock.advance(5000); // eu-west's only node misses its heartbeats
    const east = await w.register(h100('us-east'));
    await w.cp.reaper.tick();
    expect((await w.task(job))?.pool).toBe('us-east/h100');
    expect(await w.cp.dispatcher.poll(west, 0)).toBeUndefined();
    expect((await w.cp.dispatcher.poll(east, 0))?.jobId).toBe(job);
    await w.close();
  });

  it('wakes a waiting long-poll as soon as a task is routed to its pool', async () => {
    const w = inProcessControlPlane({ settings: { recheckMs: 60_000 } });
    const { node } = await w.cp.nodes.register({
      publicKey: generateNodeKeyPair().publicKey,
      agentVersion: 't',
      inventory: cpuInventory(),
    });
    const started = Date.now();
    const polling = w.cp.dispatcher.poll(node.id, 10);
    const { job } = await w.cp.jobs.submit('default', JobSpec.parse({ command: ['true'] }));
    await w.cp.scheduler.schedule({ jobId: job.id });
    expect((await polling)?.jobId).toBe(job.id);
    expect(Date.now() - started).toBeLessThan(2000);
    await w.close();
  });
});

describe('deadlines and leases', () => {
  it('fails unfinished tasks at the deadline and tells the node to stop', async () => {
    const w = world();
    const node = await w.register(cpuInventory());
    const deadline = new Date(w.clock.now() + 60_000).toISOString();
    const job = await w.submit({ command: ['true'], tasks: 2, deadline });
    const running = await w.cp.dispatcher.poll(node, 0);
    expect(running).toBeDefined();
    w.clock.advance(60_001);
    const report = await w.cp.reaper.tick();
    expect(report.deadlinesEnforced).toBe(1);
    const view = await w.cp.jobs.get('default', job);
    expect(view.status).toBe('failed');
    expect(view.tasks.map((t) => [t.state, t.error?.code])).toEqual([
      ['failed', 'deadline_exceeded'],
      ['failed', 'deadline_exceeded'],
    ]);
    const beat = await w.cp.reports.heartbeat(node, { tasks: [{ taskId: running?.taskId ?? '', attempt: 1 }] });
    expect(beat.abort.map((a) => a.taskId)).toEqual([running?.taskId]);
    expect((await w.cp.reaper.tick()).deadlinesEnforced).toBe(0); // enforced once
    await w.close();
  });

  it('gives leases one lease period of grace after the control plane starts', async () => {
    const clock = new ManualClock();
    const h = inProcessControlPlane({ clock, settings: { leaseMs: 10_000, livenessMs: 1e12 } });
    const { node } = await h.cp.nodes.register({
      publicKey: generateNodeKeyPair().publicKey,
      agentVersion: 't',
      inventory: cpuInventory(),
    });
    const { job } = await h.cp.jobs.submit('default', JobSpec.parse({ command: ['true'] }));
    await h.cp.scheduler.schedule({ jobId: job.id });
    expect(await h.cp.dispatcher.poll(node.id, 0)).toBeDefined();
    clock.advance(9_000);
    // The control plane restarts over the same state: the lease would run out in 1 s.
    const ports = {
      store: h.store,
      queue: h.queue,
      keys: LocalKeys.inMemory(),
      clock,
      signal: new MemorySignal(),
      hints: new SignalWorkHints(),
      credentials: noCredentials,
    };
    const restarted = createControlPlane(ports, defaultSettings(clock.now(), { leaseMs: 10_000, livenessMs: 1e12 }));
    clock.advance(2_000);
    expect((await restarted.reaper.tick()).leasesExpired).toBe(0); // still within the grace period
    clock.advance(8_001);
    expect((await restarted.reaper.tick()).leasesExpired).toBe(1); // no heartbeat came: now it expires
    expect((await h.cp.jobs.get('default', job.id)).tasks[0]?.attempts[0]?.outcome).toBe('lease-expired');
    await h.close();
  });
});
