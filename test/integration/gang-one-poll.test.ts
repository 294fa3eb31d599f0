import { describe, expect, it } from 'vitest';
import { type GangRecord, gangKey } from '../../functions/domain/scheduling/gang.js';
import { jobPk } from '../../functions/domain/scheduling/job-record.js';
import { type Assignment, JobSpec } from '../../protocol/index.js';
import { CountingStore } from '../support/counting-store.js';
import { inProcessControlPlane, registerNode } from '../support/in-process.js';

const until = async (done: () => boolean | Promise<boolean>) => {
  while (!(await done())) await new Promise((r) => setTimeout(r, 5));
};

/**
 * A node with two slots runs two long polls at once. A gang task bound to that node must be handed
 * out to one of them only: before, both polls joined the gang (the second rewrote the node's
 * member), both found "the task assigned to my node" after the bind, and the agent ran the same
 * attempt twice in one work dir.
 */
describe('a gang member node with two concurrent polls', () => {
  it('gets its gang task once per attempt, and the gang still binds one task per node', async () => {
    const h = inProcessControlPlane({ settings: { livenessMs: 1e12 }, wrapStore: (s) => new CountingStore(s) });
    const register = () => registerNode(h);
    const [a, b, c] = [await register(), await register(), await register()];
    const { job } = await h.cp.jobs.submit('default', JobSpec.parse({ command: ['true'], tasks: 3, gang: true }));
    await h.cp.scheduler.schedule({ jobId: job.id });
    const members = async () => (await h.store.get<GangRecord>(gangKey(job.id)))?.data.members ?? [];
    // Each poll that meets the gang task reads the gang record: a new read is the second poll there.
    const gangRounds = () => h.store.gets.filter((k) => k.pk === jobPk(job.id) && k.sk === 'GANG').length;

    const stop = new AbortController();
    const a1 = h.cp.dispatcher.poll(a, 30, stop.signal);
    await until(async () => (await members()).some((m) => m.nodeId === a));
    const seen = gangRounds();
    const a2 = h.cp.dispatcher.poll(a, 30, stop.signal);
    await until(() => gangRounds() > seen); // the node's second poll has met the gang
    const b1 = h.cp.dispatcher.poll(b, 30, stop.signal);
    await until(async () => (await members()).some((m) => m.nodeId === b));
    const got: (Assignment | undefined)[] = [await h.cp.dispatcher.poll(c, 30, stop.signal), await b1];
    got.push(await Promise.race([a1, a2]));
    // The node's other poll ends now: a poll that ends hands out a gang bound to it, if it is its to hand.
    stop.abort();
    const [r1, r2] = await Promise.all([a1, a2]);
    const handed = [got[0], got[1], r1, r2].filter((x): x is Assignment => x !== undefined);
    const perAttempt = new Map<string, number>();
    for (const x of handed)
      perAttempt.set(`${x.taskId}#${x.attempt}`, (perAttempt.get(`${x.taskId}#${x.attempt}`) ?? 0) + 1);
    expect([...perAttempt.values()]).toEqual([1, 1, 1]);
    const view = await h.cp.jobs.get('default', job.id);
    expect(view.tasks.map((t) => t.state)).toEqual(['assigned', 'assigned', 'assigned']);
    // Each on its own node (docs/scheduling.md: gangs promise distinct nodes).
    expect(new Set(view.tasks.map((t) => t.nodeId))).toEqual(new Set([a, b, c]));
    await h.close();
  });
});
