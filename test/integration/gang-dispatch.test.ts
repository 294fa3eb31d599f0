import { describe, expect, it } from 'vitest';
import { type GangRecord, gangKey } from '../../functions/domain/scheduling/gang.js';
import { JobSpec } from '../../protocol/index.js';
import { inProcessControlPlane, registerNode } from '../support/in-process.js';

async function world() {
  const h = inProcessControlPlane({ settings: { livenessMs: 1e12 } });
  const register = () => registerNode(h);
  const submitGang = async (tasks: number) => {
    const { job } = await h.cp.jobs.submit('default', JobSpec.parse({ command: ['true'], tasks, gang: true }));
    await h.cp.scheduler.schedule({ jobId: job.id });
    return job.id;
  };
  const members = async (jobId: string) =>
    (await h.store.get<GangRecord>(gangKey(jobId)))?.data.members.map((m) => m.nodeId) ?? [];
  return { ...h, register, submitGang, members };
}

const until = async (done: () => Promise<boolean>) => {
  while (!(await done())) await new Promise((r) => setTimeout(r, 5));
};

describe('gang jobs', () => {
  it('hands out no task of a gang until a node is polling for each, then all at once', async () => {
    const w = await world();
    const [a, b] = [await w.register(), await w.register()];
    const job = await w.submitGang(2);
    const pollA = w.cp.dispatcher.poll(a, 10);
    await until(async () => (await w.members(job)).includes(a));
    // A waits as the gang's first member: nothing is assigned yet.
    expect((await w.cp.jobs.get('default', job)).tasks.map((t) => t.state)).toEqual(['queued', 'queued']);
    const gotB = await w.cp.dispatcher.poll(b, 10);
    const gotA = await pollA;
    expect(gotA?.jobId).toBe(job);
    expect(gotB?.jobId).toBe(job);
    expect(new Set([gotA?.taskId, gotB?.taskId]).size).toBe(2);
    const view = await w.cp.jobs.get('default', job);
    expect(view.tasks.map((t) => t.state)).toEqual(['assigned', 'assigned']);
    expect(new Set(view.tasks.map((t) => t.nodeId))).toEqual(new Set([a, b]));
    expect(await w.members(job)).toEqual([]);
    await w.close();
  });

  it('binds nothing when too few nodes poll, and a poll that ends leaves the gang', async () => {
    const w = await world();
    const a = await w.register();
    const job = await w.submitGang(2);
    expect(await w.cp.dispatcher.poll(a, 1.5)).toBeUndefined();
    const view = await w.cp.jobs.get('default', job);
    expect(view.tasks.map((t) => [t.state, t.attempts.length])).toEqual([
      ['queued', 0],
      ['queued', 0],
    ]);
    expect(await w.members(job)).toEqual([]);
    await w.close();
  });

  it('a gang that cannot fill does not hold its members idle: they take plain work queued behind it', async () => {
    const w = await world();
    const nodes = [await w.register(), await w.register(), await w.register()];
    const gang = await w.submitGang(6); // more nodes than the pool has: it cannot be bound now
    const polls = nodes.map((n) => w.cp.dispatcher.poll(n, 5));
    await until(async () => (await w.members(gang)).length === 3);
    for (const priority of [5, 4, 1]) {
      const { job } = await w.cp.jobs.submit('default', JobSpec.parse({ command: ['true'], priority }));
      await w.cp.scheduler.schedule({ jobId: job.id });
    }
    const got = await Promise.all(polls);
    expect(got.every((a) => a !== undefined && a.jobId !== gang)).toBe(true);
    expect(new Set(got.map((a) => a?.taskId)).size).toBe(3);
    // Each member left the gang when it took other work; the gang's tasks are untouched.
    expect(await w.members(gang)).toEqual([]);
    expect((await w.cp.jobs.get('default', gang)).tasks.every((t) => t.state === 'queued')).toBe(true);
    await w.close();
  });

  it("a tenant's gang that cannot fill does not keep another tenant's job queued", async () => {
    const w = await world();
    const nodes = [await w.register(), await w.register()];
    const { job: gang } = await w.cp.jobs.submit(
      'alpha',
      JobSpec.parse({ command: ['true'], tasks: 3, gang: true, priority: 9 }),
    );
    await w.cp.scheduler.schedule({ jobId: gang.id });
    // Long polls: before the fix only a poll's last second (too late to join the gang) took other work.
    const stop = new AbortController();
    const polls = nodes.map((n) => w.cp.dispatcher.poll(n, 600, stop.signal));
    await until(async () => (await w.members(gang.id)).length === 2);
    const { job } = await w.cp.jobs.submit('beta', JobSpec.parse({ command: ['true'] }));
    await w.cp.scheduler.schedule({ jobId: job.id });
    // The first poll to return one hands out beta's task; the other is then stopped.
    const got = await Promise.any(polls.map(async (p) => (await p) ?? Promise.reject(new Error('no task'))));
    expect(got.jobId).toBe(job.id);
    stop.abort();
    await Promise.all(polls);
    await w.close();
  });

  it("says in a gang's tasks when the pool has fewer live nodes that fit than the gang needs", async () => {
    const w = await world();
    await w.register();
    await w.register();
    const gang = await w.submitGang(3);
    const view = await w.cp.jobs.get('default', gang);
    expect(view.tasks.map((t) => t.progress?.message)).toEqual(Array(3).fill('waiting for 3 nodes that fit; 2 live'));
    await w.close();
  });

  it('refuses a gang larger than one transaction binds', async () => {
    const w = await world();
    await expect(
      w.cp.jobs.submit('default', JobSpec.parse({ command: ['true'], tasks: 33, gang: true })),
    ).rejects.toMatchObject({ code: 'gang_too_large' });
    await w.close();
  });
});
