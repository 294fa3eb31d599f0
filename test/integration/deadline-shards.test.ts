import { describe, expect, it } from 'vitest';
import { type JobRecord, jobKey } from '../../functions/domain/scheduling/job-record.js';
import { JobSpec } from '../../protocol/index.js';
import { inProcessControlPlane, ManualClock } from '../support/in-process.js';

/**
 * The deadline due list is sharded by job (functions/domain/scheduling/job-record.ts), as the lease
 * list is: no one partition takes every deadline job of the fleet, and the reaper sweeps them all.
 */
describe('the deadline due list', () => {
  it('spreads deadline jobs over its shards, and the reaper enforces the deadlines of every shard and of the old partition', async () => {
    const clock = new ManualClock();
    const h = inProcessControlPlane({ clock });
    const deadline = new Date(clock.now() + 60_000).toISOString();
    const submit = async () =>
      (await h.cp.jobs.submit('default', JobSpec.parse({ command: ['true'], deadline }))).job.id;
    const ids: string[] = [];
    for (let i = 0; i < 40; i++) ids.push(await submit());

    const partitions = new Set<string | undefined>();
    for (const id of ids) partitions.add((await h.store.get(jobKey(id)))?.indexes.byDue?.pk);
    for (const pk of partitions) expect(pk).toMatch(/^DUE#deadline#\d{2}$/);
    expect(partitions.size).toBeGreaterThan(8);

    // A job submitted before the shards: listed in the one partition of old.
    const old = await submit();
    const item = await h.store.get<JobRecord>(jobKey(old));
    const sk = item?.indexes.byDue?.sk ?? '';
    await h.store.transact([
      {
        kind: 'put',
        key: jobKey(old),
        data: item?.data,
        indexes: { ...item?.indexes, byDue: { pk: 'DUE#deadline', sk } },
        expectVersion: item?.version ?? 0,
      },
    ]);

    clock.advance(60_001);
    let enforced = 0;
    for (let tick = 0; tick < 3; tick++) enforced += (await h.cp.reaper.tick()).deadlinesEnforced;
    expect(enforced).toBe(41);
    for (const id of [...ids, old]) expect((await h.cp.jobs.get('default', id)).status).toBe('failed');
    await h.close();
  });
});
