import { afterEach, describe, expect, it } from 'vitest';
import { defaultRateLimits } from '../../functions/domain/security/rate-limit.js';
import { limits } from '../../protocol/index.js';
import { inProcessControlPlane, ManualClock, TestNode } from '../support/in-process.js';
import { assignedTask, expectRefused, type Harness, jsonInit, unchanged } from './support.js';

/**
 * Abuse limits (functions/http/limits.ts, functions/domain/security/rate-limit.ts, the app-wide
 * body limit): an oversized body is 413 and a request over a rate limit is 429 with Retry-After,
 * before anything is parsed or stored.
 */

let h: Harness;
afterEach(() => h?.close());

const oversized = (bytes = limits.maxBodyBytes + 1) => JSON.stringify({ command: ['x'.repeat(bytes)] });

describe('oversized bodies', () => {
  it('refuses a body over the limit with 413 on application and node routes, storing nothing', async () => {
    h = inProcessControlPlane();
    const { node, assignment } = await assignedTask(h);
    const body = oversized();
    expect(Buffer.byteLength(body)).toBeGreaterThan(limits.maxBodyBytes);
    await unchanged(h, async () => {
      await expectRefused(await h.api('/v1/jobs', jsonInit('POST', body)), 413);
      await expectRefused(await h.api('/v1/keys', jsonInit('POST', body)), 413);
      await expectRefused(await h.api(`/v1/jobs/${assignment.jobId}/cancel`, jsonInit('POST', body)), 413);
    });
    // Signed or not, a node route reads no more than the limit either.
    const report = { attempt: assignment.attempt, percent: 1, message: 'x'.repeat(limits.maxBodyBytes) };
    await unchanged(h, async () => {
      await expectRefused(
        await node.call('POST', `/v1/nodes/${node.id}/tasks/${assignment.taskId}/progress`, report),
        413,
      );
      await expectRefused(
        await node.call('POST', `/v1/nodes/${node.id}/heartbeat`, { tasks: [], pad: 'x'.repeat(limits.maxBodyBytes) }),
        413,
      );
      await expectRefused(await h.request('/v1/nodes', jsonInit('POST', body)), 413);
    });
  });

  it('refuses an oversized body sent without a Content-Length (streamed) with 413', async () => {
    h = inProcessControlPlane();
    const chunk = new TextEncoder().encode(oversized());
    const stream = new ReadableStream<Uint8Array>({
      start(controller) {
        for (let i = 0; i < chunk.length; i += 16_384) controller.enqueue(chunk.subarray(i, i + 16_384));
        controller.close();
      },
    });
    await unchanged(h, async () =>
      expectRefused(
        await h.api('/v1/jobs', {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: stream,
          duplex: 'half',
        } as RequestInit),
        413,
      ),
    );
  });

  it('documents 413 on every operation that takes a body', async () => {
    h = inProcessControlPlane();
    const doc = (await (await h.request('/openapi.json')).json()) as {
      paths: Record<string, Record<string, { requestBody?: unknown; responses: Record<string, unknown> }>>;
    };
    const missing = Object.entries(doc.paths).flatMap(([path, item]) =>
      Object.entries(item)
        .filter(([, op]) => op.requestBody !== undefined && op.responses['413'] === undefined)
        .map(([method]) => `${method.toUpperCase()} ${path}`),
    );
    expect(missing).toEqual([]);
  });
});

describe('rate limits', () => {
  it('refuses an API key over its limit with 429 and Retry-After, storing nothing', async () => {
    const clock = new ManualClock(Date.now());
    h = inProcessControlPlane({
      clock,
      settings: { rateLimits: { ...defaultRateLimits, key: { limit: 5, windowSeconds: 60 } } },
    });
    const key = await h.createKey('tenant-a');
    for (let i = 0; i < 5; i++) expect((await h.api('/v1/jobs', {}, key)).status).toBe(200);
    const refused = await unchanged(h, async () => {
      const response = await h.api('/v1/jobs', jsonInit('POST', { command: ['true'] }), key);
      const retryAfter = Number(response.headers.get('retry-after'));
      await expectRefused(response, 429, 'rate_limited');
      return retryAfter;
    });
    expect(refused).toBeGreaterThanOrEqual(1);
    expect(refused).toBeLessThanOrEqual(60);
    expect(((await (await h.api('/v1/jobs', {}, h.adminKey)).json()) as { jobs: unknown[] }).jobs).toEqual([]);
    // Another key is not affected, and the next window accepts this one again.
    expect((await h.api('/v1/jobs', {}, h.adminKey)).status).toBe(200);
    clock.advance(60_000);
    expect((await h.api('/v1/jobs', {}, key)).status).toBe(200);
  });

  it('refuses a node over its limit with 429 and Retry-After, leaving its task as it was', async () => {
    const clock = new ManualClock(Date.now());
    h = inProcessControlPlane({
      clock,
      settings: { rateLimits: { ...defaultRateLimits, node: { limit: 3, windowSeconds: 60 } } },
    });
    const node = new TestNode(h.request, clock);
    const { assignment } = await assignedTask(h, node);
    let status = 200;
    for (let i = 0; i < 10 && status === 200; i++) {
      status = (await node.call('POST', `/v1/nodes/${node.id}/heartbeat`, { tasks: [] })).status;
    }
    expect(status).toBe(429);
    await unchanged(h, async () => {
      const response = await node.call('POST', `/v1/nodes/${node.id}/tasks/${assignment.taskId}/progress`, {
        attempt: assignment.attempt,
        percent: 50,
      });
      expect(Number(response.headers.get('retry-after'))).toBeGreaterThanOrEqual(1);
      await expectRefused(response, 429, 'rate_limited');
    });
  });
});

describe('quotas', () => {
  it("refuses a submission over the tenant's open-task quota, writing nothing; another tenant is not affected", async () => {
    h = inProcessControlPlane({ settings: { quotas: { maxOpenTasks: 3, gpuHoursPerDay: 0 } } });
    const a = await h.createKey('tenant-a');
    const b = await h.createKey('tenant-b');
    expect((await h.api('/v1/jobs', jsonInit('POST', { command: ['true'], tasks: 3 }), a)).status).toBe(201);
    await unchanged(h, async () => {
      const response = await h.api('/v1/jobs', jsonInit('POST', { command: ['true'] }), a);
      expect([403, 429]).toContain(response.status);
      await expectRefused(response, response.status, 'quota_exceeded');
    });
    expect(((await (await h.api('/v1/jobs', {}, a)).json()) as { jobs: unknown[] }).jobs).toHaveLength(1);
    expect((await h.api('/v1/jobs', jsonInit('POST', { command: ['true'] }), b)).status).toBe(201);
  });
});
