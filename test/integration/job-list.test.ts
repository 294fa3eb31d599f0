import { describe, expect, it, vi } from 'vitest';
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
});
