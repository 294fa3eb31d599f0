import { describe, expect, it } from 'vitest';
import { timeoutGraceMs } from '../../functions/domain/scheduling/task-machine.js';
import { type Assignment, JobSpec, type JobSpecInput, type TaskView } from '../../protocol/index.js';
import { cpuInventory, inProcessControlPlane, ManualClock, TestNode } from '../support/in-process.js';

/**
 * `timeoutSeconds` holds on the server: a lease never runs past the attempt's start plus its
 * timeout (and a grace), so the reaper ends an overrunning attempt even while its node heartbeats,
 * and the heartbeat tells the node to stop it.
 */

const leaseMs = 10_000;
const graceMs = timeoutGraceMs;

function world() {
  const clock = new ManualClock();
  const h = inProcessControlPlane({
    clock,
    settings: { leaseMs, heartbeatIdleMs: 1000, livenessMs: 1e12 },
  });
  const node = async () => {
    const n = new TestNode(h.request, clock);
    expect((await n.register(cpuInventory())).status).toBe(201);
    return n;
  };
  const submit = async (spec: JobSpecInput) => {
    const { job } = await h.cp.jobs.submit('default', JobSpec.parse(spec));
    await h.cp.scheduler.schedule({ jobId: job.id });
    return job.id;
  };
  const task = async (jobId: string): Promise<TaskView> => {
    const view = (await h.cp.jobs.get('default', jobId)).tasks[0];
    if (view === undefined) throw new Error('no task');
    return view;
  };
  const poll = async (n: TestNode): Promise<Assignment> => {
    const a = await h.cp.dispatcher.poll(n.id, 0);
    if (a === undefined) throw new Error('no assignment');
    return a;
  };
  return { ...h, clock, node, submit, task, poll };
}

describe('timeoutSeconds on the server', () => {
  it('ends an attempt that outruns its timeout although its node keeps heartbeating', async () => {
    const w = world();
    const n = await w.node();
    const jobId = await w.submit({ command: ['sleep', '1000'], timeoutSeconds: 30, retries: 0 });
    const start = w.clock.now();
    const a = await w.poll(n);
    const cap = start + 30_000 + graceMs;

    const aborts: string[][] = [];
    for (let t = 5_000; t <= 30_000 + graceMs + 10_000; t += 5_000) {
      w.clock.ms = start + t;
      const { abort } = await w.cp.reports.heartbeat(n.id, { tasks: [{ taskId: a.taskId, attempt: a.attempt }] });
      if (t % 10_000 === 0) {
        const lease = await w.cp.reports.progress(n.id, a.taskId, { attempt: a.attempt }).catch(() => undefined);
        if (lease !== undefined) expect(lease.leaseExpiresAt).toBeLessThanOrEqual(cap);
      }
      await w.cp.reaper.tick();
      aborts.push(abort.map((x) => x.reason));
      const view = await w.task(jobId);
      if (view.leaseExpiresAt !== undefined) expect(Date.parse(view.leaseExpiresAt)).toBeLessThanOrEqual(cap);
      if (t < 30_000) expect(['assigned', 'running']).toContain(view.state);
    }
    // Until a busy interval (1 s here) past the timeout nothing is aborted, so the node may report
    // its own timeout; from then on, every heartbeat tells the node to stop.
    expect(aborts.slice(0, 6)).toEqual([[], [], [], [], [], []]);
    expect(aborts[6]).toEqual(['timed out after 30 s']);
    for (const reasons of aborts.slice(6)) expect(reasons).toHaveLength(1);

    const ended = await w.task(jobId);
    expect(ended).toMatchObject({ state: 'failed', error: { code: 'retries_exhausted' } });
    expect(ended.error?.message).toContain('timed out after 30 s');
    expect(ended.attempts).toEqual([
      expect.objectContaining({
        number: 1,
        outcome: 'lease-expired',
        detail: 'timed out after 30 s',
      }),
    ]);
    // Ended by the first reaper tick after the lease ran out at timeout + grace, not before.
    expect(Date.parse(ended.attempts[0]?.endedAt ?? '')).toBe(cap + 5_000);
    await w.close();
  });

  it('counts a timed-out attempt against the retry budget and runs the task again', async () => {
    const w = world();
    const n = await w.node();
    const jobId = await w.submit({ command: ['sleep', '1000'], timeoutSeconds: 1, retries: 1 });
    const a = await w.poll(n);
    // The first lease is the usual one; heartbeats cannot carry it past 1 s + grace.
    expect(Date.parse(a.leaseExpiresAt)).toBe(w.clock.now() + leaseMs);
    for (let t = 0; t < graceMs + 1_000; t += 5_000) {
      w.clock.advance(5_000);
      await w.cp.reports.heartbeat(n.id, { tasks: [{ taskId: a.taskId, attempt: a.attempt }] });
      await w.cp.reaper.tick();
    }
    const view = await w.task(jobId);
    expect(view).toMatchObject({ state: 'queued', attempt: 1 });
    expect(view.attempts[0]).toMatchObject({ outcome: 'lease-expired', detail: 'timed out after 1 s' });
    await w.cp.scheduler.schedule({ jobId });
    const again = await w.poll(n);
    expect(again.attempt).toBe(2);
    await w.close();
  });

  it('accepts a result reported within the grace after the timeout', async () => {
    const w = world();
    const n = await w.node();
    const jobId = await w.submit({ command: ['true'], timeoutSeconds: 30 });
    const a = await w.poll(n);
    // The node stops the run at 30 s and takes a while to report: it still heartbeats meanwhile.
    for (let t = 0; t < 30_000 + graceMs / 2; t += 5_000) {
      w.clock.advance(5_000);
      await w.cp.reports.heartbeat(n.id, { tasks: [{ taskId: a.taskId, attempt: a.attempt }] });
      await w.cp.reaper.tick();
    }
    await w.cp.reports.fail(n.id, a.taskId, { attempt: a.attempt, reason: 'timeout', message: 'timed out after 30 s' });
    expect((await w.task(jobId)).attempts[0]).toMatchObject({
      outcome: 'failed',
      detail: 'timeout: timed out after 30 s',
    });
    await w.close();
  });
});
