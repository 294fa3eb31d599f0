import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type FaultProxy, startFaultProxy } from './fault-proxy.js';

/** An upstream that echoes what it got, and can hold a request open (a long poll). */
let upstream: Server;
let upstreamUrl: string;
let proxy: FaultProxy;
const seenUpstream: string[] = [];

beforeEach(async () => {
  seenUpstream.length = 0;
  upstream = createServer((req, res) => {
    let body = '';
    req.on('data', (c) => {
      body += c;
    });
    req.on('end', () => {
      seenUpstream.push(`${req.method} ${req.url}`);
      const reply = () =>
        res
          .writeHead(201, { 'content-type': 'application/json', 'x-upstream': 'yes' })
          .end(JSON.stringify({ method: req.method, url: req.url, host: req.headers.host, body }));
      if (req.url?.startsWith('/slow')) setTimeout(reply, 300);
      else reply();
    });
  });
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  upstreamUrl = `http://127.0.0.1:${(upstream.address() as AddressInfo).port}`;
  proxy = await startFaultProxy(upstreamUrl);
});

afterEach(async () => {
  await proxy.close();
  upstream.closeAllConnections();
  await new Promise((r) => upstream.close(r));
});

describe('fault proxy', () => {
  it('forwards method, path, query, body and headers both ways, with the target as Host', async () => {
    const res = await fetch(`${proxy.url}/v1/jobs?limit=2`, { method: 'POST', body: '{"a":1}' });
    expect(res.status).toBe(201);
    expect(res.headers.get('x-upstream')).toBe('yes');
    expect(await res.json()).toEqual({
      method: 'POST',
      url: '/v1/jobs?limit=2',
      host: new URL(upstreamUrl).host,
      body: '{"a":1}',
    });
    expect(proxy.requests).toMatchObject([
      { method: 'POST', path: '/v1/jobs?limit=2', outcome: 'forwarded', status: 201 },
    ]);
  });

  it('failNext answers the given status and error body without forwarding, then forwards again', async () => {
    proxy.failNext(2, 503);
    const first = await fetch(`${proxy.url}/a`);
    expect(first.status).toBe(503);
    expect(await first.json()).toEqual({ error: { code: 'injected_fault', message: 'fault proxy answered 503' } });
    expect((await fetch(`${proxy.url}/b`)).status).toBe(503);
    expect((await fetch(`${proxy.url}/c`)).status).toBe(201);
    expect(seenUpstream).toEqual(['GET /c']);
    expect(proxy.requests.map((r) => r.outcome)).toEqual(['failed', 'failed', 'forwarded']);
  });

  it('failNext takes a custom body and a matcher: only matching requests fail', async () => {
    proxy.failNext(1, 409, { error: { code: 'x', message: 'y' } }, (r) => r.path.includes('/heartbeat'));
    expect((await fetch(`${proxy.url}/work`)).status).toBe(201);
    const hit = await fetch(`${proxy.url}/nodes/n/heartbeat`, { method: 'POST' });
    expect(hit.status).toBe(409);
    expect(await hit.json()).toEqual({ error: { code: 'x', message: 'y' } });
    expect((await fetch(`${proxy.url}/nodes/n/heartbeat`)).status).toBe(201);
  });

  it('logs each request body it forwarded', async () => {
    await fetch(`${proxy.url}/r`, { method: 'POST', body: '{"tasks":[]}' });
    expect(proxy.requests).toMatchObject([{ path: '/r', body: '{"tasks":[]}' }]);
  });

  it('rewriteNext forwards and hands the client the rewritten answer, with the target status', async () => {
    proxy.rewriteNext(
      1,
      (body, request) => JSON.stringify({ ...JSON.parse(body), tampered: request.path }),
      (r) => r.path === '/t',
    );
    expect(await (await fetch(`${proxy.url}/u`)).json()).not.toHaveProperty('tampered');
    const res = await fetch(`${proxy.url}/t`, { method: 'POST', body: 'x' });
    expect(res.status).toBe(201);
    expect(await res.json()).toMatchObject({ url: '/t', body: 'x', tampered: '/t' });
    expect(await (await fetch(`${proxy.url}/t`)).json()).not.toHaveProperty('tampered');
    expect(seenUpstream).toEqual(['GET /u', 'POST /t', 'GET /t']);
    expect(proxy.requests.map((r) => r.outcome)).toEqual(['forwarded', 'rewritten', 'forwarded']);
  });

  it('garbleNext answers 200 with a body that does not parse as JSON', async () => {
    proxy.garbleNext(1);
    const res = await fetch(`${proxy.url}/x`);
    expect(res.status).toBe(200);
    await expect(res.json()).rejects.toThrow(SyntaxError);
    expect(seenUpstream).toEqual([]);
    expect((await fetch(`${proxy.url}/x`)).status).toBe(201);
  });

  it('cut() makes requests fail at once until restore()', async () => {
    proxy.cut();
    await expect(fetch(`${proxy.url}/x`)).rejects.toThrow();
    await expect(fetch(`${proxy.url}/y`)).rejects.toThrow();
    expect(seenUpstream).toEqual([]);
    expect(proxy.connectionsCut).toBeGreaterThanOrEqual(2);
    proxy.restore();
    expect((await fetch(`${proxy.url}/z`)).status).toBe(201);
    expect(seenUpstream).toEqual(['GET /z']);
  });

  it("cut('hang') holds requests unanswered; restore() closes them and later requests pass", async () => {
    proxy.cut('hang');
    const hung = fetch(`${proxy.url}/x`);
    const outcome = await Promise.race([
      hung.then(
        () => 'answered',
        () => 'failed',
      ),
      new Promise((r) => setTimeout(() => r('still hanging'), 200)),
    ]);
    expect(outcome).toBe('still hanging');
    proxy.restore();
    await expect(hung).rejects.toThrow();
    expect((await fetch(`${proxy.url}/z`)).status).toBe(201);
    expect(seenUpstream).toEqual(['GET /z']);
  });

  it('a cut drops a request already in flight upstream (a long poll) instead of answering it', async () => {
    const inFlight = fetch(`${proxy.url}/slow`);
    await expect.poll(() => proxy.requests.length).toBe(1);
    proxy.cut();
    await expect(inFlight).rejects.toThrow();
  });

  it('delayMs holds each request that long before forwarding it', async () => {
    proxy.delayMs = 150;
    const started = Date.now();
    expect((await fetch(`${proxy.url}/x`)).status).toBe(201);
    expect(Date.now() - started).toBeGreaterThanOrEqual(140);
  });

  it('a target that is down reads as a failed connection, logged as upstream-error', async () => {
    upstream.closeAllConnections();
    await new Promise((r) => upstream.close(r));
    await expect(fetch(`${proxy.url}/x`)).rejects.toThrow();
    expect(proxy.requests).toMatchObject([{ outcome: 'upstream-error' }]);
    // afterEach closes it again
    upstream = createServer();
    await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  });
});
