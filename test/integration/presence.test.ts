import { describe, expect, it } from 'vitest';
import type { ControlPlaneSettings } from '../../functions/control-plane.js';
import { nodeKey } from '../../functions/domain/resource/node-record.js';
import { PoolSummaries } from '../../functions/domain/resource/pool-summary.js';
import { presenceKey } from '../../functions/domain/resource/presence.js';
import { defaultRateLimits } from '../../functions/domain/security/rate-limit.js';
import {
  generateNodeKeyPair,
  JobSpec,
  loadNodeKeyPair,
  type NodeInventory,
  signRequest,
} from '../../protocol/index.js';
import { CountingStore } from '../support/counting-store.js';
import { cpuInventory, inProcessControlPlane, ManualClock, TestNode } from '../support/in-process.js';

/**
 * docs/cost-model.md section 9, step 1: a heartbeat writes the node's small presence item once and
 * nothing else (no nonce, no node item), replays of heartbeats and progress reports are refused by
 * their signed dates, and nodes that stop beating are turned dead by the reaper's sweep, above 1,000
 * nodes too, leaving the pool summaries true.
 */

/** No rate limits: their counters are abuse limits, not what a heartbeat costs (counted apart). */
const noRateLimits = Object.fromEntries(
  Object.entries(defaultRateLimits).map(([scope, limit]) => [scope, { ...limit, limit: 0 }]),
) as typeof defaultRateLimits;

function world(settings: Partial<ControlPlaneSettings> = {}) {
  const clock = new ManualClock();
  const { store, cp, request, queue } = inProcessControlPlane({
    clock,
    settings: { rateLimits: noRateLimits, ...settings },
    wrapStore: (sqlite) => new CountingStore(sqlite),
  });
  const node = async (inventory: NodeInventory = cpuInventory()) => {
    const n = new TestNode(request, clock);
    expect((await n.register(inventory)).status).toBe(201);
    return n;
  };
  const heartbeat = (n: TestNode, tasks: { taskId: string; attempt: number }[] = []) =>
    n.call('POST', `/v1/nodes/${n.id}/heartbeat`, { tasks });
  return { clock, store, cp, request, node, heartbeat, close: () => queue.close() };
}

/** Sends a node request signed with an explicit date (replays and reordering). */
async function signedAt(
  request: (path: string, init?: RequestInit) => Promise<Response>,
  n: TestNode,
  path: string,
  body: unknown,
  date: number,
): Promise<Response> {
  const text = JSON.stringify(body);
  const headers = {
    ...signRequest(n.key, n.id, { method: 'POST', pathWithQuery: path, body: text }, date),
    'content-type': 'application/json',
  };
  return request(path, { method: 'POST', headers, body: text });
}

const errorCode = async (response: Response) => ((await response.json()) as { error: { code: string } }).error.code;

describe('a heartbeat', () => {
  it('is one write, to the presence item alone, with no read where the store is exclusive (embedded)', async () => {
    const w = world({ exclusiveStore: true });
    const n = await w.node();
    expect((await w.heartbeat(n)).status).toBe(200); // reads the node's key once; cached from then on
    w.store.reset();

    const response = await w.heartbeat(n);
    expect(response.status).toBe(200);
    expect(await response.json()).toMatchObject({ abort: [], heartbeatIntervalMs: 30_000, progressIntervalMs: 30_000 });
    expect(w.store.gets).toEqual([]);
    expect(w.store.queries).toEqual([]);
    expect(w.store.transactions.map((writes) => writes.map((write) => write.key))).toEqual([[presenceKey(n.id)]]);
    await w.close();
  });

  it('is one conditional write with no read where instances share the store (Lambda), but for a beat that moves its due item', async () => {
    const w = world({ exclusiveStore: false, heartbeatIdleMs: 30_000 });
    const n = await w.node();
    expect((await w.heartbeat(n)).status).toBe(200); // the first after registration sets the watermark
    const beats: { reads: number; queries: number; writes: string[][] }[] = [];
    for (let beat = 0; beat < 9; beat++) {
      w.clock.advance(30_000);
      w.store.reset();
      expect((await w.heartbeat(n)).status).toBe(200);
      beats.push({
        reads: w.store.gets.length,
        queries: w.store.queries.length,
        writes: w.store.transactions.map((writes) => writes.map((write) => `${write.kind} ${write.key.sk}`)),
      });
    }
    // 90 s due buckets, a beat every 30 s: six beats in nine are one update of the presence item alone...
    const oneWrite = { reads: 0, queries: 0, writes: [['update SEEN']] };
    expect(beats.filter((beat) => JSON.stringify(beat) === JSON.stringify(oneWrite))).toHaveLength(6);
    // ...and the beat that moves the due item reads the presence and writes both in one transaction.
    const movesDue = { reads: 1, queries: 0, writes: [['put SEEN', 'put DUE']] };
    expect(beats.filter((beat) => JSON.stringify(beat) === JSON.stringify(movesDue))).toHaveLength(3);
    // The node item is not rewritten by heartbeats: its version is the registration's.
    expect((await w.store.get(nodeKey(n.id)))?.version).toBe(1);
    // A poll still writes its nonce: it could hand a replayer an assignment.
    w.store.reset();
    expect((await n.poll()).status).toBe(204);
    expect(w.store.transactions.flat().some((write) => write.key.pk.startsWith('NONCE#'))).toBe(true);
    await w.close();
  });

  it('moves the due item only when its live-until bucket changes', async () => {
    const w = world({ exclusiveStore: true, heartbeatIdleMs: 30_000 });
    const n = await w.node();
    const writesPerBeat: number[] = [];
    for (let beat = 0; beat < 9; beat++) {
      w.clock.advance(30_000);
      w.store.reset();
      expect((await w.heartbeat(n)).status).toBe(200);
      writesPerBeat.push(w.store.transactions.flat().length);
    }
    // 90 s buckets, a beat every 30 s: the due item moves on one beat in three.
    expect(writesPerBeat.filter((writes) => writes === 2)).toHaveLength(3);
    expect(writesPerBeat.filter((writes) => writes === 1)).toHaveLength(6);
    await w.close();
  });

  it.each([
    ['instances share the store', false],
    ['the store is exclusive', true],
  ])('is refused when replayed or reordered, and changes nothing then, where %s', async (_, exclusiveStore) => {
    const w = world({ exclusiveStore });
    const n = await w.node();
    const path = `/v1/nodes/${n.id}/heartbeat`;
    const date = w.clock.now() + 10;
    w.store.reset();
    expect((await signedAt(w.request, n, path, { tasks: [] }, date)).status).toBe(200);
    const before = await w.store.get(presenceKey(n.id));

    // The refusal names the watermark, so a restarted agent signs above it at once.
    const replayed = await signedAt(w.request, n, path, { tasks: [] }, date);
    expect(replayed.status).toBe(401);
    expect(await replayed.json()).toMatchObject({ error: { code: 'replayed_request', details: { lastDate: date } } });
    const reordered = await signedAt(w.request, n, path, { tasks: [] }, date - 5);
    expect(reordered.status).toBe(401);
    expect(await errorCode(reordered)).toBe('replayed_request');
    expect((await w.store.get(presenceKey(n.id)))?.version).toBe(before?.version);
    // No nonce item for heartbeats.
    expect(w.store.transactions.flat().some((write) => write.key.pk.startsWith('NONCE#'))).toBe(false);

    expect((await signedAt(w.request, n, path, { tasks: [] }, date + 1)).status).toBe(200);
    await w.close();
  });

  it('tells the busy interval when it lists tasks, and extends their leases', async () => {
    const w = world({ leaseMs: 30_000 });
    const n = await w.node();
    const { job } = await w.cp.jobs.submit('default', JobSpec.parse({ command: ['true'] }));
    await w.cp.scheduler.schedule({ jobId: job.id });
    const a = await w.cp.dispatcher.poll(n.id, 0);
    if (a === undefined) throw new Error('no assignment');
    w.clock.advance(20_000);
    const response = await w.heartbeat(n, [{ taskId: a.taskId, attempt: a.attempt }]);
    expect(await response.json()).toMatchObject({ abort: [], heartbeatIntervalMs: 10_000 });
    const view = (await w.cp.jobs.get('default', job.id)).tasks[0];
    expect(Date.parse(view?.leaseExpiresAt ?? '')).toBe(w.clock.now() + 30_000);
    await w.close();
  });
});

describe('progress reports', () => {
  it('are refused out of order or replayed, per attempt, without a nonce item', async () => {
    const w = world();
    const n = await w.node();
    const { job } = await w.cp.jobs.submit('default', JobSpec.parse({ command: ['true'] }));
    await w.cp.scheduler.schedule({ jobId: job.id });
    const a = await w.cp.dispatcher.poll(n.id, 0);
    if (a === undefined) throw new Error('no assignment');
    const path = `/v1/nodes/${n.id}/tasks/${a.taskId}/progress`;
    const now = w.clock.now();
    w.store.reset();

    expect((await signedAt(w.request, n, path, { attempt: a.attempt, percent: 20 }, now + 20)).status).toBe(200);
    const late = await signedAt(w.request, n, path, { attempt: a.attempt, percent: 10 }, now + 10);
    expect(late.status).toBe(401);
    expect(await errorCode(late)).toBe('replayed_request');
    const replayed = await signedAt(w.request, n, path, { attempt: a.attempt, percent: 20 }, now + 20);
    expect(replayed.status).toBe(401);
    expect((await w.cp.jobs.get('default', job.id)).tasks[0]?.progress?.percent).toBe(20);
    expect((await signedAt(w.request, n, path, { attempt: a.attempt, percent: 30 }, now + 21)).status).toBe(200);
    expect((await w.cp.jobs.get('default', job.id)).tasks[0]?.progress?.percent).toBe(30);
    expect(w.store.transactions.flat().some((write) => write.key.pk.startsWith('NONCE#'))).toBe(false);
    await w.close();
  });
});

describe('sweepDead', () => {
  it('turns nodes unseen for the liveness window dead, above 1,000 nodes, and keeps the pool summaries true', async () => {
    const w = world({ heartbeatIdleMs: 1000, livenessMs: 3000 });
    const total = 1_200;
    const ids: string[] = [];
    for (let i = 0; i < total; i++) {
      const publicKey = loadNodeKeyPair(generateNodeKeyPair().privateKeyPem).publicKey;
      const inventory = cpuInventory({
        gpus: [{ index: 0, vendor: 'nvidia', model: 'NVIDIA H100 80GB HBM3', vramMiB: 81_559, uuid: `GPU-${i}` }],
      });
      ids.push((await w.cp.nodes.register({ publicKey, agentVersion: '0.1.0', inventory })).node.id);
    }
    const pool = (await w.cp.nodes.get(ids[0] ?? '')).pools[0] ?? '';
    // Read afresh each time (the reader's cache is not what this is about).
    const summaries = { get: (name: string) => new PoolSummaries(w.store, w.clock).get(name) };
    expect(await summaries.get(pool)).toMatchObject({ liveNodes: total, liveGpus: total });

    // 200 nodes keep beating; the others stop.
    const kept = new Set(ids.slice(0, 200));
    for (let t = 0; t < 8; t++) {
      w.clock.advance(1000);
      for (const id of kept) await w.cp.nodes.touch(id, { hbDate: w.clock.now() });
    }
    expect(await w.cp.nodes.sweepDead(w.clock.now(), 700)).toBe(700);
    expect(await w.cp.nodes.sweepDead(w.clock.now(), 10_000)).toBe(total - 200 - 700);
    expect(await w.cp.nodes.sweepDead(w.clock.now(), 10_000)).toBe(0);
    expect(await summaries.get(pool)).toMatchObject({ liveNodes: 200, liveGpus: 200 });

    // A dead node that beats again is live and counted again.
    const back = ids.at(-1) ?? '';
    await w.cp.nodes.touch(back, { hbDate: w.clock.now() });
    expect(await summaries.get(pool)).toMatchObject({ liveNodes: 201, liveGpus: 201 });
    const listed = await w.cp.nodes.list(200);
    expect(listed.nodes).toHaveLength(200);
    await w.close();
  }, 120_000);
});

describe('the node list', () => {
  it('pages across its shards with a cursor, every node once', async () => {
    const w = world();
    const ids = new Set<string>();
    for (let i = 0; i < 40; i++) ids.add((await w.node()).id);
    const seen: string[] = [];
    let cursor: string | undefined;
    do {
      const page = await w.cp.nodes.list(7, cursor);
      expect(page.nodes.length).toBeLessThanOrEqual(7);
      seen.push(...page.nodes.map((node) => node.id));
      cursor = page.cursor;
    } while (cursor !== undefined);
    expect(seen.sort()).toEqual([...ids].sort());
    await expect(w.cp.nodes.list(7, 'garbage')).rejects.toMatchObject({ code: 'invalid_cursor' });
    await w.close();
  });

  it('shows when each node was last seen from its presence, and filters by status', async () => {
    const clock = new ManualClock();
    const h = inProcessControlPlane({ clock, settings: { heartbeatIdleMs: 1000, livenessMs: 3000 } });
    const nodes = [new TestNode(h.request, clock), new TestNode(h.request, clock)];
    for (const n of nodes) expect((await n.register()).status).toBe(201);
    clock.advance(5000);
    const [beating, silent] = nodes;
    expect((await beating?.call('POST', `/v1/nodes/${beating.id}/heartbeat`, { tasks: [] }))?.status).toBe(200);
    const list = async (query: string) =>
      (
        (await (await h.api(`/v1/nodes${query}`)).json()) as {
          nodes: { id: string; status: string; lastSeenAt: string }[];
        }
      ).nodes;
    expect((await list('?status=live')).map((n) => n.id)).toEqual([beating?.id]);
    expect((await list('?status=unavailable')).map((n) => n.id)).toEqual([silent?.id]);
    const shown = (await list('')).find((n) => n.id === beating?.id);
    expect(shown).toMatchObject({ status: 'live', lastSeenAt: new Date(clock.now()).toISOString() });
    expect((await h.api('/v1/nodes?status=dead')).status).toBe(400);
    await h.close();
  });

  it('gives opaque cursors that resume only a list with the same status filter', async () => {
    const w = world();
    for (let i = 0; i < 6; i++) await w.node();
    const page = async (limit: number, cursor?: string, status?: string) => w.cp.nodes.list(limit, cursor, status);
    const live = await page(2, undefined, 'live');
    const cursor = live.cursor ?? '';
    // Neither a shard number nor the store's own cursor shows through.
    expect(cursor).toMatch(/^[A-Za-z0-9_-]+$/);
    expect(cursor).not.toMatch(/^\d{2}~/);
    expect((await page(2, cursor, 'live')).nodes).toHaveLength(2);
    for (const status of [undefined, 'unavailable']) {
      await expect(page(2, cursor, status)).rejects.toMatchObject({
        code: 'invalid_cursor',
        message: expect.stringMatching(/^query cursor /),
      });
    }
    const all = await page(2);
    await expect(page(2, all.cursor, 'live')).rejects.toMatchObject({ code: 'invalid_cursor' });
    await expect(page(2, 'garbage')).rejects.toMatchObject({ message: expect.stringMatching(/^query cursor /) });
    await w.close();
  });
});
