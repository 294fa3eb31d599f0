import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type PresenceRecord, presenceKey } from '../../functions/domain/resource/presence.js';
import { signRequest } from '../../protocol/index.js';
import { inProcessControlPlane, ManualClock, TestNode } from '../support/in-process.js';
import { assignedTask, expectRefused, type Harness, unchanged } from './support.js';

/**
 * The heartbeat replay watermark (functions/domain/resource/presence.ts): a heartbeat must carry a
 * later signed date than the last one taken, and only a heartbeat that is taken moves it.
 */

let h: Harness;
beforeEach(() => {
  h = inProcessControlPlane();
});
afterEach(() => h.close());

/** A heartbeat of `node` signed at `at`. */
function beat(node: TestNode, tasks: { taskId: string; attempt: number }[], at: number) {
  const path = `/v1/nodes/${node.id}/heartbeat`;
  const body = JSON.stringify({ tasks });
  const headers = {
    ...signRequest(node.key, node.id, { method: 'POST', pathWithQuery: path, body }, at),
    'content-type': 'application/json',
  };
  return h.request(path, { method: 'POST', headers, body });
}

describe('heartbeat replay watermark', () => {
  it('is not moved by a heartbeat refused for a task never given to the node', async () => {
    const { assignment } = await assignedTask(h);
    const x = new TestNode(h.request);
    expect((await x.register()).status).toBe(201);
    const now = Date.now();
    const foreign = [{ taskId: assignment.taskId, attempt: assignment.attempt }];
    await expectRefused(await beat(x, foreign, now + 10_000), 403, 'task_not_assigned');
    // A valid heartbeat dated before the refused one is taken: the refusal moved nothing.
    expect((await beat(x, [], now + 5_000)).status).toBe(200);
    // And the taken one did move it.
    await expectRefused(await beat(x, [], now + 4_000), 401, 'replayed_request');
  });
});

describe('a refused heartbeat writes nothing', () => {
  it('leaves the node presence (SEEN) as it was when the beat lists a task never given to the node', async () => {
    const clock = new ManualClock();
    await h.close();
    h = inProcessControlPlane({ clock });
    const { assignment } = await assignedTask(h, new TestNode(h.request, clock));
    const x = new TestNode(h.request, clock);
    expect((await x.register()).status).toBe(201);
    expect((await x.call('POST', `/v1/nodes/${x.id}/heartbeat`, { tasks: [] })).status).toBe(200);
    clock.advance(30_000);
    const seen = async () => (await h.store.get<PresenceRecord>(presenceKey(x.id)))?.data;
    const before = await seen();
    expect(before?.lastSeenAt).toBeDefined();
    const foreign = [{ taskId: assignment.taskId, attempt: assignment.attempt }];
    await unchanged(h, async () => {
      await expectRefused(
        await x.call('POST', `/v1/nodes/${x.id}/heartbeat`, { tasks: foreign, latencyMs: 40 }),
        403,
        'task_not_assigned',
      );
    });
    expect(await seen()).toEqual(before);
  });
});
