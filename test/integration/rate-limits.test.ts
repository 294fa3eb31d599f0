import { afterEach, describe, expect, it } from 'vitest';
import { defaultRateLimits, type RateLimitSettings } from '../../functions/domain/security/rate-limit.js';
import { createApp } from '../../functions/http/app.js';
import { apiGatewaySourceAddress } from '../../functions/http/limits.js';
import { inProcessControlPlane, ManualClock, TestNode } from '../support/in-process.js';

/**
 * Rate limits over HTTP, in-process. The app is built with a source-address function that reads
 * a test header, standing in for the socket peer (embedded) or API Gateway's sourceIp (cloud).
 */
function harness(rateLimits: Partial<RateLimitSettings> = {}) {
  const clock = new ManualClock();
  const h = inProcessControlPlane({
    clock,
    settings: { enrollment: 'open', rateLimits: { ...defaultRateLimits, ...rateLimits } },
  });
  const app = createApp({ cp: h.cp, log: () => undefined, sourceAddress: (c) => c.req.header('x-test-source') });
  const from =
    (address: string) =>
    (path: string, init: RequestInit = {}): Promise<Response> => {
      const headers = new Headers(init.headers);
      headers.set('x-test-source', address);
      return Promise.resolve(app.request(`http://gpuai.test${path}`, { ...init, headers }));
    };
  const nodeCount = () => (h.snapshot() as { pk: string; sk: string }[]).filter((i) => i.sk === 'NODE').length;
  return { ...h, clock, app, from, nodeCount };
}

let h: ReturnType<typeof harness>;
afterEach(async () => {
  await h?.close();
});

async function expectLimited(response: Response) {
  expect(response.status).toBe(429);
  const retryAfter = Number(response.headers.get('retry-after'));
  expect(Number.isInteger(retryAfter)).toBe(true);
  expect(retryAfter).toBeGreaterThanOrEqual(1);
  expect(retryAfter).toBeLessThanOrEqual(60);
  const body = (await response.json()) as { error: { code: string; message: string } };
  expect(body.error.code).toBe('rate_limited');
  return retryAfter;
}

describe('registration rate limits', () => {
  it('accepts the default 10 registrations a minute from one address and refuses the flood, writing nothing', async () => {
    h = harness();
    const request = h.from('203.0.113.7');
    const statuses: number[] = [];
    for (let i = 0; i < 200; i++) statuses.push((await new TestNode(request, h.clock).register()).status);
    expect(statuses.filter((s) => s === 201)).toHaveLength(defaultRateLimits.register.limit);
    expect(statuses.filter((s) => s === 429)).toHaveLength(200 - defaultRateLimits.register.limit);
    expect(h.nodeCount()).toBe(defaultRateLimits.register.limit);
    await expectLimited(await new TestNode(request, h.clock).register());

    // Another address is not affected, and the next window accepts the first address again.
    expect((await new TestNode(h.from('198.51.100.1'), h.clock).register()).status).toBe(201);
    h.clock.advance(60_000);
    expect((await new TestNode(request, h.clock).register()).status).toBe(201);
  });

  it('caps registrations from all addresses together at the global limit', async () => {
    h = harness();
    let accepted = 0;
    let refused = 0;
    for (let i = 0; i < 400; i++) {
      // 400 addresses, one registration each: the per-address limit never trips, the global one does.
      const status = (await new TestNode(h.from(`10.0.${i >> 8}.${i & 255}`), h.clock).register()).status;
      if (status === 201) accepted++;
      if (status === 429) refused++;
    }
    expect(accepted).toBe(defaultRateLimits.registerGlobal.limit);
    expect(refused).toBe(400 - defaultRateLimits.registerGlobal.limit);
    expect(h.nodeCount()).toBe(defaultRateLimits.registerGlobal.limit);
  });

  it('counts unsigned and malformed registration attempts too', async () => {
    h = harness({ register: { limit: 3, windowSeconds: 60 } });
    const post = () =>
      h.from('203.0.113.9')('/v1/nodes', {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: '{"junk":true}',
      });
    for (let i = 0; i < 3; i++) expect((await post()).status).toBe(400);
    await expectLimited(await post());
  });
});

describe('per source address, key and node', () => {
  it('limits every route per source address and answers again after Retry-After', async () => {
    h = harness({ address: { limit: 5, windowSeconds: 60 } });
    const request = h.from('192.0.2.44');
    for (let i = 0; i < 5; i++) expect((await request('/healthz')).status).toBe(200);
    h.clock.advance(15_000);
    const retryAfter = await expectLimited(await request('/v1/jobs'));
    await expectLimited(await request('/healthz'));
    expect(retryAfter).toBe(45);
    expect((await h.from('192.0.2.45')('/healthz')).status).toBe(200);
    h.clock.advance(retryAfter * 1000);
    expect((await request('/healthz')).status).toBe(200);
  });

  it("counts API Gateway's sourceIp in the cloud, never the client's X-Forwarded-For", async () => {
    h = harness({ address: { limit: 3, windowSeconds: 60 } });
    const app = createApp({ cp: h.cp, log: () => undefined, sourceAddress: apiGatewaySourceAddress });
    const call = (sourceIp: string, forwardedFor: string) =>
      app.request(
        'http://gpuai.test/healthz',
        { headers: { 'x-forwarded-for': forwardedFor } },
        { requestContext: { http: { sourceIp } } },
      );
    for (let i = 0; i < 3; i++) expect((await call('198.51.100.7', `10.0.0.${i}`)).status).toBe(200);
    await expectLimited(await call('198.51.100.7', '10.0.0.99'));
    expect((await call('198.51.100.8', '198.51.100.7')).status).toBe(200);
  });

  it('limits per API key, whatever address the key is used from', async () => {
    h = harness({ key: { limit: 4, windowSeconds: 60 } });
    const withKey = (address: string, key: string) =>
      h.from(address)('/v1/jobs', { headers: { authorization: `Bearer ${key}` } });
    const statuses: number[] = [];
    for (let i = 0; i < 4; i++) statuses.push((await withKey(`198.51.100.${i}`, 'gpuai_key_one')).status);
    // Whatever the key's own answer (the API keys may refuse a made-up key), it is not 429 yet.
    expect(statuses).not.toContain(429);
    await expectLimited(await withKey('198.51.100.99', 'gpuai_key_one'));
    expect((await withKey('198.51.100.99', 'gpuai_key_two')).status).not.toBe(429);
  });

  it('limits per signed node, and an unsigned caller cannot spend a node its budget', async () => {
    h = harness({ node: { limit: 3, windowSeconds: 60 } });
    const node = new TestNode(h.from('192.0.2.10'), h.clock);
    expect((await node.register()).status).toBe(201);
    // Unsigned requests naming the node are refused as unauthenticated and do not count.
    for (let i = 0; i < 10; i++) {
      const forged = await h.from('192.0.2.66')(`/v1/nodes/${node.id}/heartbeat`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: '{"tasks":[]}',
      });
      expect(forged.status).toBe(401);
    }
    for (let i = 0; i < 3; i++)
      expect((await node.call('POST', `/v1/nodes/${node.id}/heartbeat`, { tasks: [] })).status).toBe(200);
    await expectLimited(await node.call('POST', `/v1/nodes/${node.id}/heartbeat`, { tasks: [] }));
    // The same node from another address is still the same node.
    const moved = new TestNode(h.from('192.0.2.11'), h.clock);
    Object.assign(moved, { key: node.key, id: node.id });
    await expectLimited(await moved.call('POST', `/v1/nodes/${node.id}/heartbeat`, { tasks: [] }));
  });

  it('documents 429 with Retry-After on every route of the OpenAPI document', async () => {
    h = harness();
    const doc = (await (await h.app.request('http://gpuai.test/openapi.json')).json()) as {
      paths: Record<string, Record<string, { responses: Record<string, { headers?: Record<string, unknown> }> }>>;
    };
    const operations = Object.entries(doc.paths).flatMap(([path, ops]) =>
      Object.entries(ops).map(([method, op]) => ({ route: `${method} ${path}`, op })),
    );
    expect(operations.length).toBeGreaterThan(5);
    for (const { route, op } of operations) {
      expect(op.responses['429'], route).toBeDefined();
      expect(op.responses['429']?.headers?.['Retry-After'], route).toBeDefined();
    }
  });
});
