import { request } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { ControlPlaneClient } from '../../edge-agent/client.js';
import { testProbe } from '../../edge-agent/test-support/fixtures.js';
import { startControlPlane } from '../../embedded/control-plane-server.js';
import { generateNodeKeyPair, limits, loadNodeKeyPair, nodeIdFromPublicKey, sha256Hex } from '../../protocol/index.js';
import { adminKeyOf, tempDir } from '../support/processes.js';

/**
 * The body limit on the embedded server's real HTTP stack (@hono/node-server), where a body with a
 * Content-Length is checked from the header and then read by the server's direct path, and a
 * chunked one is counted as it streams (functions/http/body-limit.ts).
 */
const cleanups: (() => unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function served() {
  const dir = tempDir('body-limit-cp');
  cleanups.push(dir.remove);
  const cp = await startControlPlane({
    port: 0,
    host: '127.0.0.1',
    dataDir: dir.path,
    reaperIntervalMs: 1000,
    settings: { enrollment: 'open' },
    log: () => undefined,
  });
  cleanups.push(() => cp.stop());
  return { url: cp.url, adminKey: adminKeyOf(dir.path) };
}

/** POSTs `body` in chunks without a Content-Length (Transfer-Encoding: chunked). */
function postChunked(url: string, path: string, headers: Record<string, string>, body: string) {
  return new Promise<{ status: number; text: string }>((resolve, reject) => {
    const req = request(`${url}${path}`, { method: 'POST', headers }, (res) => {
      let text = '';
      res.on('data', (chunk: Buffer) => {
        text += chunk.toString();
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
    });
    req.on('error', reject);
    for (let i = 0; i < body.length; i += 16_384) req.write(body.slice(i, i + 16_384));
    req.end();
  });
}

describe('body limit over real HTTP', () => {
  it('refuses an oversized body with 413, with a Content-Length or streamed, and takes one within it', async () => {
    const { url, adminKey } = await served();
    const headers = { authorization: `Bearer ${adminKey}`, 'content-type': 'application/json' };
    const big = JSON.stringify({ command: ['echo', 'x'.repeat(limits.maxBodyBytes)] });

    const stated = await fetch(`${url}/v1/jobs`, { method: 'POST', headers, body: big });
    expect(stated.status).toBe(413);
    expect(((await stated.json()) as { error: { code: string } }).error.code).toBe('body_too_large');

    const streamed = await postChunked(url, '/v1/jobs', headers, big);
    expect(streamed.status).toBe(413);

    const small = JSON.stringify({ command: ['echo', 'x'.repeat(1000)] });
    const chunkedOk = await postChunked(url, '/v1/jobs', headers, small);
    expect(chunkedOk.status).toBe(201);
    const ok = await fetch(`${url}/v1/jobs`, { method: 'POST', headers, body: small });
    expect(ok.status).toBe(201);
    const job = (await ok.json()) as { id: string };
    const read = (await (await fetch(`${url}/v1/jobs/${job.id}`, { headers })).json()) as {
      spec: { command: string[] };
    };
    expect(read.spec.command).toEqual(['echo', 'x'.repeat(1000)]);
  });

  it('verifies signed agent bodies read by the direct path: register, heartbeat, poll, progress, result', async () => {
    const { url, adminKey } = await served();
    const keyPair = loadNodeKeyPair(generateNodeKeyPair().privateKeyPem);
    const client = new ControlPlaneClient({ api: url, nodeId: nodeIdFromPublicKey(keyPair.publicKey), keyPair });
    const { inventory } = await testProbe();
    await client.register({ publicKey: keyPair.publicKey, agentVersion: '0.0.0-test', inventory });
    expect(await client.heartbeat({ tasks: [] })).toMatchObject({ abort: [] });
    const submitted = await fetch(`${url}/v1/jobs`, {
      method: 'POST',
      headers: { authorization: `Bearer ${adminKey}`, 'content-type': 'application/json' },
      body: JSON.stringify({ command: ['true'] }),
    });
    expect(submitted.status).toBe(201);
    const assignment = await client.pollWork(5);
    expect(assignment).toBeDefined();
    const { taskId, attempt } = assignment ?? { taskId: '', attempt: 0 };
    await client.reportProgress(taskId, { attempt, percent: 50 });
    const done = await client.reportResult(taskId, {
      attempt,
      exitCode: 0,
      resultHash: sha256Hex(''),
      outputs: [],
      metrics: { wallMs: 1 },
    });
    expect(['reported', 'succeeded']).toContain(done.state);
  });
});
