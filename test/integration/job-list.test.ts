import { describe, expect, it, vi } from 'vitest';
import { jobPk } from '../../functions/domain/scheduling/job-record.js';
import { generateNodeKeyPair, JobSpec } from '../../protocol/index.js';
import { cpuInventory, inProcessControlPlane, ManualClock } from '../support/in-process.js';

/**
 * Listing jobs reads one page of the owner's jobs and nothing else: each listed job carries its
 * task counts (kept by `add` writes beside every task transition), so a page costs one query
 * whatever its jobs hold (the N+1 listing of issue 17 read every job's tasks too).
 */
describe('job listing', () => {
  it('costs one query per page and shows what reading each job shows', async () => {
    const clock = new ManualClock();
    const h = inProcessControlPlane({ clock, settings: { livenessMs: 1e12 } });
    await h.cp.nodes.register({
      publicKey: generateNodeKeyPair().publicKey,
      agentVersion: 't',
      inventory: cpuInventory(),
    });
    h.cp.router.invalidate();
    const ids: string[] = [];
    for (let i = 0; i < 12; i++) {
      clock.advance(1000);
      ids.push((await h.cp.jobs.submit('default', JobSpec.parse({ command: ['true'], tasks: 1 + (i % 4) }))).job.id);
    }
    clock.advance(5000);
    await h.cp.reaper.tick(); // routes them (the schedule messages are not consumed here)
    await h.cp.jobs.cancel('default', ids[3] ?? '');
    clock.advance(1000);
    await h.cp.jobs.cancel('default', ids[7] ?? '');

    const query = vi.spyOn(h.store, 'query');
    const get = vi.spyOn(h.store, 'get');
    const first = await h.cp.jobs.list('default', 5);
    expect(query).toHaveBeenCalledTimes(1);
    expect(get).not.toHaveBeenCalled();
    const second = await h.cp.jobs.list('default', 10, first.cursor);
    expect(query).toHaveBeenCalledTimes(2);
    expect(get).not.toHaveBeenCalled();
    query.mockRestore();
    get.mockRestore();

    const listed = [...first.jobs, ...second.jobs];
    expect(listed.map((j) => j.id)).toEqual([...ids].reverse());
    for (const job of listed) {
      const { tasks: _tasks, updatedAt: _updated, ...read } = await h.cp.jobs.get('default', job.id);
      const { updatedAt: _listedUpdated, ...shown } = job;
      expect(shown).toEqual(read);
    }
    expect(listed.find((j) => j.id === ids[3])?.status).toBe('cancelled');
    expect(listed.find((j) => j.id === ids[0])?.taskCounts.queued).toBe(1);
    await h.close();
  });

  it('pages jobs whose counters span many index entries, each job once, one query per page', async () => {
    const clock = new ManualClock();
    const h = inProcessControlPlane({ clock, settings: { livenessMs: 1e12 } });
    const ids: string[] = [];
    for (const tasks of [20, 1, 64, 3, 9, 2, 8, 17]) {
      clock.advance(1000);
      ids.push((await h.cp.jobs.submit('default', JobSpec.parse({ command: ['true'], tasks }))).job.id);
    }
    await h.cp.jobs.cancel('default', ids[2] ?? '');
    // A job stored before the counters (no counter items) is still listed right, read whole.
    const legacy = ids[4] ?? '';
    const counters = await h.store.query({ pk: jobPk(legacy), skPrefix: 'COUNT#' });
    await h.store.transact(counters.items.map((i) => ({ kind: 'delete' as const, key: i, expectVersion: i.version })));

    for (const limit of [1, 2, 3, 200]) {
      const query = vi.spyOn(h.store, 'query');
      const listed: string[] = [];
      let cursor: string | undefined;
      let pages = 0;
      do {
        const page = await h.cp.jobs.list('default', limit, cursor);
        pages++;
        expect(page.jobs.length).toBeLessThanOrEqual(limit);
        for (const job of page.jobs) {
          listed.push(job.id);
          const { tasks: _tasks, updatedAt: _updated, ...read } = await h.cp.jobs.get('default', job.id);
          const { updatedAt: _listedUpdated, ...shown } = job;
          expect(shown).toEqual(read);
        }
        cursor = page.cursor;
      } while (cursor !== undefined);
      expect(listed).toEqual([...ids].reverse());
      // One query per page, one per job read back above, and one for the legacy job's page.
      expect(query).toHaveBeenCalledTimes(pages + listed.length + 1);
      query.mockRestore();
    }
    await h.close();
  });
  it('ties a cursor to its status filter: resumed with another filter or none, it is refused', async () => {
    const clock = new ManualClock();
    const h = inProcessControlPlane({ clock, settings: { livenessMs: 1e12 } });
    const ids: string[] = [];
    for (let i = 0; i < 4; i++) {
      clock.advance(1000);
      ids.push((await h.cp.jobs.submit('default', JobSpec.parse({ command: ['true'] }))).job.id);
      await h.cp.jobs.cancel('default', ids[i] ?? '');
    }
    const first = await h.cp.jobs.list('default', 2, undefined, 'cancelled');
    expect(first.jobs.map((j) => j.id)).toEqual([ids[3], ids[2]]);
    const cursor = first.cursor as string;
    expect(cursor).toBeDefined();
    const second = await h.cp.jobs.list('default', 2, cursor, 'cancelled');
    expect(second.jobs.map((j) => j.id)).toEqual([ids[1], ids[0]]);
    for (const status of [undefined, 'failed']) {
      await expect(h.cp.jobs.list('default', 2, cursor, status)).rejects.toMatchObject({ code: 'invalid_cursor' });
    }
    // An unfiltered list's cursor does not resume a filtered one either.
    const all = await h.cp.jobs.list('default', 2);
    await expect(h.cp.jobs.list('default', 2, all.cursor, 'cancelled')).rejects.toMatchObject({
      code: 'invalid_cursor',
    });
    expect((await h.cp.jobs.list('default', 2, all.cursor)).jobs).toHaveLength(2);
    await h.close();
  });
});
