import { describe, expect, it } from 'vitest';
import { sortableTime } from '../../functions/domain/records.js';
import { PoolSummaries } from '../../functions/domain/resource/pool-summary.js';
import { Reaper, type ReaperSettings } from '../../functions/domain/scheduling/reaper.js';
import { claim } from '../../functions/domain/scheduling/task-machine.js';
import { leaseDueShard, newTaskRecord, putTask } from '../../functions/domain/scheduling/task-record.js';
import type { Write } from '../../functions/ports/store.js';
import type { NodeInventory } from '../../protocol/index.js';
import { generateNodeKeyPair, JobSpec } from '../../protocol/index.js';
import { cpuInventory, inProcessControlPlane, ManualClock } from '../support/in-process.js';

const h100 = (): NodeInventory =>
  cpuInventory({
    region: 'local',
    gpus: [{ index: 0, vendor: 'nvidia', model: 'NVIDIA H100 80GB HBM3', vramMiB: 81559, uuid: 'g' }],
  });

/** A reaper over the harness's control plane with settings of the test's own (the composition root's are fixed). */
function reaperOf(h: ReturnType<typeof inProcessControlPlane>, clock: ManualClock, settings: Partial<ReaperSettings>) {
  return new Reaper(
    h.store,
    h.queue,
    h.cp.nodes,
    h.cp.router,
    h.cp.verifier,
    h.cp.hints,
    clock,
    new PoolSummaries(h.store, clock, 0),
    {
      leaseMs: 30_000,
      bootedAt: 0,
      unroutedAfterMs: 2000,
      batch: 10,
      hintRedriveMs: Number.POSITIVE_INFINITY,
      ...settings,
    },
  );
}

/** `count` tasks, each claimed by a node whose lease ran out an hour ago, written straight to the store. */
async function lostLeases(h: ReturnType<typeof inProcessControlPlane>, clock: ManualClock, count: number) {
  const at = clock.now() - 3_600_000;
  for (let first = 0; first < count; first += 50) {
    const writes: Write[] = [];
    for (let i = first; i < Math.min(count, first + 50); i++) {
      const task = newTaskRecord(`job-${i}`, 0, 1, 3, { gpus: { count: 0 }, needsContainer: false }, 60, undefined, at);
      writes.push(...putTask(claim({ ...task, pool: 'local/cpu' }, 'gone', [], [], at, 30_000), 0));
    }
    await h.store.transact(writes);
  }
}

const assignedCount = async (h: ReturnType<typeof inProcessControlPlane>) =>
  (h.snapshot() as { pk: string; data: string }[]).filter(
    (row) => row.pk.startsWith('JOB#') && JSON.parse(row.data).state === 'assigned',
  ).length;

describe('the reaper above 1,000 nodes', () => {
  it('never takes a live pool for dead, and re-routes a pool whose every node died, from the summaries', async () => {
    const clock = new ManualClock();
    const h = inProcessControlPlane({ clock, settings: { reaperBatch: 100 } });
    const register = async (inventory: NodeInventory) => {
      clock.advance(1); // registrations list in the order they came
      return (await h.cp.nodes.register({ publicKey: generateNodeKeyPair().publicKey, agentVersion: 't', inventory }))
        .node;
    };
    // The pool's first node registers before 1,100 others, its second after them: a reader of the
    // first 1,000 registrations sees only the first.
    const early = await register(h100());
    for (let i = 0; i < 1100; i++) await register(cpuInventory({ cpu: { model: 'c', cores: 2 + (i % 8) } }));
    const late = await register(h100());
    h.cp.router.invalidate();
    const { job } = await h.cp.jobs.submit(
      'default',
      JobSpec.parse({ command: ['true'], tasks: 3, resources: { gpus: { count: 1, vendor: 'nvidia' } } }),
    );
    clock.advance(h.cp.settings.unroutedAfterMs + 1);
    await h.cp.reaper.tick(); // routes what the lost schedule messages left unrouted
    const pools = async () => (await h.cp.jobs.get('default', job.id)).tasks.map((t) => t.pool);
    expect(await pools()).toEqual(['local/h100', 'local/h100', 'local/h100']);

    // Everything but the late node goes silent: the first node of the pool, and the 1,100 others, die.
    clock.advance(2 * h.cp.settings.livenessMs + 1000); // past the due bucket (presence.ts) of the last sign of life
    await h.cp.nodes.touch(late.id);
    let expired = 0;
    for (let tick = 0; tick < 3; tick++) {
      const report = await h.cp.reaper.tick();
      expired += report.nodesExpired;
      expect(report.routed).toBe(0);
    }
    expect(expired).toBe(1101);
    expect(await pools()).toEqual(['local/h100', 'local/h100', 'local/h100']);
    expect(early.pools).toEqual(['local/h100']);

    // Now the late node dies too: the pool is dead, its tasks go back to routing (and wait there).
    clock.advance(2 * h.cp.settings.livenessMs + 1000); // past the due bucket (presence.ts) of the last sign of life
    let moved = 0;
    for (let tick = 0; tick < 2; tick++) moved += (await h.cp.reaper.tick()).routed;
    expect(moved).toBe(3);
    expect(await pools()).toEqual([undefined, undefined, undefined]);
    await h.close();
  });
});

describe('paged, resumable reaper sweeps', () => {
  it('drains a backlog far beyond one page per shard in one tick while time is left', async () => {
    const clock = new ManualClock();
    const h = inProcessControlPlane({ clock });
    await lostLeases(h, clock, 600);
    const report = await reaperOf(h, clock, { batch: 10, tickBudgetMs: 600_000 }).tick();
    expect(report.leasesExpired).toBe(600);
    expect(await assignedCount(h)).toBe(0);
    await h.close();
  });

  it('without time left reads one page per shard a tick, and the next ticks resume', async () => {
    const clock = new ManualClock();
    const h = inProcessControlPlane({ clock });
    await lostLeases(h, clock, 600);
    const reaper = reaperOf(h, clock, { batch: 10, tickBudgetMs: 0 });
    const first = await reaper.tick();
    expect(first.leasesExpired).toBeGreaterThan(0);
    expect(first.leasesExpired).toBeLessThanOrEqual(16 * 10);
    let total = first.leasesExpired;
    for (let tick = 0; tick < 20 && total < 600; tick++) total += (await reaper.tick()).leasesExpired;
    expect(total).toBe(600);
    await h.close();
  });

  it('reaches due items behind a head of items it cannot act on', async () => {
    const clock = new ManualClock();
    const h = inProcessControlPlane({ clock });
    await lostLeases(h, clock, 40);
    // Items at the head of every lease shard that name no task: the reaper skips them, and they stay.
    const ghosts: Write[] = [];
    for (let shard = 0; shard < 16; shard++) {
      for (let i = 0; ghosts.length < (shard + 1) * 30; i++) {
        const id = `ghost-${shard}-${i}`;
        const pk = leaseDueShard(id);
        if (pk !== `DUE#lease#${String(shard).padStart(2, '0')}`) continue;
        ghosts.push({
          kind: 'put',
          key: { pk: `GHOST#${id}`, sk: 'X' },
          data: { id, jobId: id, index: 0, nodeId: 'gone' },
          indexes: { byDue: { pk, sk: `${sortableTime(0)}#${id}` } },
          expectVersion: 0,
        });
      }
    }
    for (let i = 0; i < ghosts.length; i += 100) await h.store.transact(ghosts.slice(i, i + 100));

    const reaper = reaperOf(h, clock, { batch: 10, tickBudgetMs: 0 });
    let total = 0;
    for (let tick = 0; tick < 10 && total < 40; tick++) total += (await reaper.tick()).leasesExpired;
    expect(total).toBe(40);
    await h.close();
  });

  it('lets other work of the process run during a long tick', async () => {
    const clock = new ManualClock();
    const h = inProcessControlPlane({ clock });
    await lostLeases(h, clock, 200);
    let ranDuringTick = false;
    let ticking = true;
    const tick = reaperOf(h, clock, { batch: 10, tickBudgetMs: 600_000, sliceMs: 0 })
      .tick()
      .finally(() => {
        ticking = false;
      });
    setImmediate(() => {
      ranDuringTick = ticking;
    });
    expect((await tick).leasesExpired).toBe(200);
    expect(ranDuringTick).toBe(true);
    await h.close();
  });
});
