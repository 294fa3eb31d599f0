import { describe, expect, it } from 'vitest';
import {
  type Assignment,
  JobSpec,
  type JobSpecInput,
  type NodeInventory,
  resultHash,
  sha256Hex,
} from '../../protocol/index.js';
import { cpuInventory, h100Inventory, inProcessControlPlane, ManualClock, TestNode } from '../support/in-process.js';

/**
 * A node holds no more than it has: the dispatcher counts the GPUs (by index), cores and memory
 * a node already holds under live leases before it binds another task to it.
 */

const leaseMs = 10_000;
const stdout = { name: 'stdout', sha256: sha256Hex('ok\n'), bytes: 3 };

function world() {
  const clock = new ManualClock();
  const h = inProcessControlPlane({ clock, settings: { leaseMs, heartbeatIdleMs: 1000, livenessMs: 1e12 } });
  const node = async (inventory: NodeInventory) => {
    const n = new TestNode(h.request, clock);
    expect((await n.register(inventory)).status).toBe(201);
    return n;
  };
  const submit = async (spec: JobSpecInput) => {
    const { job } = await h.cp.jobs.submit('default', JobSpec.parse(spec));
    await h.cp.scheduler.schedule({ jobId: job.id });
    return job.id;
  };
  /** One poll, straight to the dispatcher (racing polls over HTTP would meet the rate limits). */
  const poll = (n: TestNode): Promise<Assignment | undefined> => h.cp.dispatcher.poll(n.id, 0);
  /** Polls until the node gets nothing more. */
  const pollAll = async (n: TestNode): Promise<Assignment[]> => {
    const got: Assignment[] = [];
    for (let a = await poll(n); a !== undefined; a = await poll(n)) got.push(a);
    return got;
  };
  const finish = async (n: TestNode, a: Assignment) => {
    const response = await n.call('POST', `/v1/nodes/${n.id}/tasks/${a.taskId}/result`, {
      attempt: a.attempt,
      exitCode: 0,
      resultHash: resultHash([stdout]),
      outputs: [stdout],
      metrics: { wallMs: 1 },
    });
    expect(response.status).toBe(200);
  };
  return { ...h, clock, node, submit, poll, pollAll, finish };
}

const gpusOf = (assignments: Assignment[]) => assignments.flatMap((a) => a.gpuIndices);

describe('dispatch counts what a node already holds', () => {
  it('hands a node with 8 GPUs at most 8 one-GPU tasks, on distinct GPUs, however many polls race', async () => {
    const w = world();
    const n = await w.node(h100Inventory(8));
    await w.submit({ command: ['true'], tasks: 64, resources: { gpus: { count: 1 } } });

    const raced = (await Promise.all(Array.from({ length: 64 }, () => w.poll(n)))).filter(
      (a): a is Assignment => a !== undefined,
    );
    expect(raced.length).toBeGreaterThanOrEqual(1);
    expect(raced.length).toBeLessThanOrEqual(8);
    // Polls that lost every race come back empty; later polls fill the node, and no further.
    const held = [...raced, ...(await w.pollAll(n))];
    expect(held).toHaveLength(8);
    expect(new Set(held.map((a) => a.taskId)).size).toBe(8);
    expect(gpusOf(held).sort()).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);

    // One finishes: its GPU, and only its GPU, is free for the next task.
    const done = held[3] as Assignment;
    await w.finish(n, done);
    const next = await w.pollAll(n);
    expect(next).toHaveLength(1);
    expect(next[0]?.gpuIndices).toEqual(done.gpuIndices);
    await w.close();
  });

  it('gives a multi-GPU task only GPUs no other held task uses', async () => {
    const w = world();
    const n = await w.node(h100Inventory(4));
    await w.submit({ command: ['true'], tasks: 3, resources: { gpus: { count: 2 } } });
    const held = await w.pollAll(n);
    expect(held.map((a) => a.gpuIndices)).toEqual([
      [0, 1],
      [2, 3],
    ]);
    await w.finish(n, held[0] as Assignment);
    expect((await w.pollAll(n)).map((a) => a.gpuIndices)).toEqual([[0, 1]]);
    await w.close();
  });

  it('counts cores and memory, and a task asking for neither GPU nor cores takes one core', async () => {
    for (const [resources, fits] of [
      [{ cpuCores: 2 }, 2],
      [{ memoryMiB: 3000 }, 2],
      [{}, 4],
    ] as const) {
      const w = world();
      const n = await w.node(cpuInventory({ cpu: { model: 'Test CPU', cores: 4 }, memoryMiB: 8192 }));
      await w.submit({ command: ['true'], tasks: 6, resources });
      expect(await w.pollAll(n)).toHaveLength(fits);
      await w.close();
    }
  });

  it('frees what an expired, failed or cancelled attempt held', async () => {
    const w = world();
    const n = await w.node(h100Inventory(2));
    const jobId = await w.submit({ command: ['true'], tasks: 2, retries: 5, resources: { gpus: { count: 1 } } });
    const [a, b] = await w.pollAll(n);
    if (a === undefined || b === undefined) throw new Error('expected two assignments');
    expect(await w.pollAll(n)).toHaveLength(0);

    // a fails; b's lease runs out: both come back to the queue and the node may take them again.
    const failed = await n.call('POST', `/v1/nodes/${n.id}/tasks/${a.taskId}/fail`, {
      attempt: a.attempt,
      reason: 'error',
      message: 'boom',
    });
    expect(failed.status).toBe(200);
    w.clock.advance(leaseMs + 1);
    expect((await w.cp.reaper.tick()).leasesExpired).toBe(1);
    await w.cp.scheduler.schedule({ jobId }); // routes the requeued tasks to the pool again
    const again = await w.pollAll(n);
    expect(again).toHaveLength(2);
    expect(gpusOf(again).sort()).toEqual([0, 1]);
    const other = await w.submit({ command: ['true'], tasks: 2, resources: { gpus: { count: 1 } } });
    expect(await w.pollAll(n)).toHaveLength(0);

    // Cancelling the job frees both GPUs for the other job.
    await w.cp.jobs.cancel('default', jobId);
    const theirs = await w.pollAll(n);
    expect(theirs.map((t) => t.jobId)).toEqual([other, other]);
    expect(gpusOf(theirs).sort()).toEqual([0, 1]);
    await w.close();
  });

  it('refuses a hinted claim while the node is full, changing no task', async () => {
    const w = world();
    const n = await w.node(h100Inventory(1));
    const jobId = await w.submit({ command: ['true'], tasks: 2, resources: { gpus: { count: 1 } } });
    const [first] = await w.pollAll(n);
    expect(first?.gpuIndices).toEqual([0]);
    const waiting = (await w.cp.jobs.get('default', jobId)).tasks.find((t) => t.state === 'queued');
    if (waiting === undefined) throw new Error('expected a queued task');
    const before = w.snapshot();
    const response = await n.call('POST', `/v1/nodes/${n.id}/claims`, { taskId: waiting.id });
    expect(response.status).toBe(409);
    expect(((await response.json()) as { error: { code: string } }).error.code).toBe('does_not_fit');
    const unchanged = (rows: unknown[]) => rows.filter((r) => !String((r as { pk: string }).pk).startsWith('NODE#'));
    expect(unchanged(w.snapshot())).toEqual(unchanged(before));
    await w.close();
  });
});
