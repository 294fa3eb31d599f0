import { describe, expect, it } from 'vitest';
import { maxJobCounterShards } from '../../functions/domain/scheduling/job-record.js';
import { shardCount } from '../../functions/domain/shards.js';
import type { Write } from '../../functions/ports/store.js';
import { JobSpec, limits } from '../../protocol/index.js';
import { inProcessControlPlane, ManualClock, TestNode } from '../support/in-process.js';

/**
 * DynamoDB cancels transactions that touch one item concurrently (TransactionConflict), so an item
 * written by the claim of every task of a job, or of a pool, is a hot key: many nodes claiming a big
 * job's tasks at once would collide on it. Here N nodes claim the N tasks of one job, and every
 * item those claim transactions write is counted: besides each claim's own task and node, no item
 * (job counters, pool counters, anything else) may be written by more than ceil(N / shards) + a
 * few of them.
 */
describe('claims of one big job', () => {
  it('write no item shared by more than ceil(N / shards) + 2 of its N claims', async () => {
    const n = limits.maxTasksPerJob;
    const clock = new ManualClock();
    const h = inProcessControlPlane({ clock, settings: { livenessMs: 1e12 } });
    const nodes: TestNode[] = [];
    for (let i = 0; i < n; i++) {
      const node = new TestNode(h.request, clock);
      expect((await node.register()).status).toBe(201);
      nodes.push(node);
    }
    h.cp.router.invalidate();
    const { job } = await h.cp.jobs.submit('default', JobSpec.parse({ command: ['true'], tasks: n }));
    await h.cp.scheduler.schedule({ jobId: job.id });

    const claims: Write[][] = [];
    const transact = h.store.transact.bind(h.store);
    h.store.transact = async (writes) => {
      await transact(writes);
      const claimed = writes.some(
        (w) => w.kind === 'put' && w.key.sk.startsWith('TASK#') && (w.data as { state?: string }).state === 'assigned',
      );
      if (claimed) claims.push([...writes]);
    };
    for (const node of nodes) expect((await node.poll(0)).status).toBe(200);
    h.store.transact = transact;
    expect(claims).toHaveLength(n);

    const writers = new Map<string, number>();
    for (const writes of claims) {
      const items = new Set(writes.map((w) => `${w.key.pk} ${w.key.sk}`));
      for (const item of items) writers.set(item, (writers.get(item) ?? 0) + 1);
    }
    const own = (item: string) => item.includes(' TASK#') || item.startsWith('NODE#');
    const shared = [...writers].filter(([item]) => !own(item));
    const bound = Math.ceil(n / Math.min(maxJobCounterShards, shardCount)) + 2;
    expect(shared.filter(([, count]) => count > bound)).toEqual([]);
    // Each task and each node is written by its one claim.
    expect([...writers].filter(([item, count]) => own(item) && count > 1)).toEqual([]);
    // The job's task counters are spread over their shards (the job item itself is never written).
    expect(writers.get(`JOB#${job.id} JOB`)).toBeUndefined();
    expect(shared.filter(([item]) => item.includes(' COUNT#')).length).toBe(maxJobCounterShards);
    const list = await h.cp.jobs.list('default', 10);
    expect(list.jobs[0]?.taskCounts.assigned).toBe(n);
    expect(list.jobs[0]?.status).toBe('running');
    await h.close();
  });
});
