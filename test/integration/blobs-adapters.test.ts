import { createHash, randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdir, mkdtemp, readdir, readFile, rm, utimes, writeFile } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serve } from '@hono/node-server';
import { Hono } from 'hono';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type BlobRoutesOptions, blobRoutes, LocalBlobs } from '../../functions/adapters/embedded/local-blobs.js';
import type { ErrorBody } from '../../protocol/index.js';
import { blobsContract } from '../contract/blobs-contract.js';
import { ManualClock } from '../contract/store-contract.js';

interface ServedBlobs {
  blobs: LocalBlobs;
  dir: string;
  baseUrl: string;
  secret: Uint8Array;
  clock: ManualClock;
  close(): Promise<void>;
}

/**
 * A {@link LocalBlobs} in a fresh temporary directory, its {@link blobRoutes} served by node's HTTP
 * server on a free loopback port, as the embedded deployment serves them.
 */
async function servedBlobs(options: BlobRoutesOptions = {}): Promise<ServedBlobs> {
  const dir = await mkdtemp(join(tmpdir(), 'gpuai-blobs-'));
  // The presigned URLs need the port, which the server learns only once listening.
  let app = new Hono();
  const server = serve({ fetch: (request) => app.fetch(request), hostname: '127.0.0.1', port: 0 });
  await once(server, 'listening');
  const baseUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const secret = randomBytes(32);
  const clock = new ManualClock();
  const blobs = new LocalBlobs({ dir, baseUrl, secret, clock });
  app = blobRoutes(blobs, options);
  return {
    blobs,
    dir,
    baseUrl,
    secret,
    clock,
    async close() {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        if ('closeAllConnections' in server) server.closeAllConnections();
      });
      await rm(dir, { recursive: true, force: true });
    },
  };
}

blobsContract('LocalBlobs over node:http', async () => {
  const served = await servedBlobs();
  return {
    blobs: served.blobs,
    elapse: async (ms) => served.clock.advance(ms),
    cleanup: () => served.close(),
  };
});

describe('LocalBlobs routes', () => {
  let served: ServedBlobs;

  beforeEach(async () => {
    served = await servedBlobs({ maxUploadBytes: 1024 });
  });

  afterEach(async () => {
    await served.close();
  });

  async function errorOf(response: Response): Promise<ErrorBody['error']> {
    expect(response.headers.get('content-type')).toMatch(/^application\/json/);
    return ((await response.json()) as ErrorBody).error;
  }

  it('refuses bad requests in the API error shape: 404, 400, and 403 for a missing, wrong or expired signature', async () => {
    const { blobs, baseUrl, clock } = served;
    const missing = await fetch((await blobs.presignGet('nothing/here', { expiresInSeconds: 60 })).url);
    expect(missing.status).toBe(404);
    expect(await errorOf(missing)).toMatchObject({ code: 'not_found', message: 'no blob nothing/here' });

    const malformed = await fetch(`${baseUrl}/blobs/a//b?expires=1&signature=x`);
    expect(malformed.status).toBe(400);
    expect(await errorOf(malformed)).toMatchObject({ code: 'invalid_key' });

    await blobs.put('here', Buffer.from('here'));
    const { url } = await blobs.presignGet('here', { expiresInSeconds: 60 });
    const signature = new URL(url).searchParams.get('signature') ?? '';
    const forged = [
      `${baseUrl}/blobs/here`,
      url.replace(/signature=.*/, ''),
      url.replace(signature, `${signature.slice(0, -1)}${signature.endsWith('A') ? 'B' : 'A'}`),
      url.replace(/expires=\d+/, (e) => `expires=${Number(e.slice(8)) + 1000}`),
    ];
    for (const attempt of forged) {
      const response = await fetch(attempt);
      expect(response.status, attempt).toBe(403);
      expect(await errorOf(response)).toMatchObject({ code: 'signature_invalid' });
    }

    clock.advance(60_001);
    const expired = await fetch(url);
    expect(expired.status).toBe(403);
    expect(await errorOf(expired)).toMatchObject({ code: 'url_expired', message: 'the presigned URL has expired' });
  });

  it('refuses uploads over the limit with 413, declared or streamed, leaving the blob and no temporary file', async () => {
    const { blobs, dir } = served;
    await blobs.put('capped', Buffer.from('old'));
    const upload = await blobs.presignPut('capped', { expiresInSeconds: 60 });

    const declared = await fetch(upload.url, { method: 'PUT', body: randomBytes(1025) });
    expect(declared.status).toBe(413);
    expect((await declared.json()) as ErrorBody).toMatchObject({ error: { code: 'body_too_large' } });

    // Chunked, without a Content-Length: only counting the bytes as they arrive can catch it.
    const chunks = [randomBytes(600), randomBytes(600)];
    const streamed = await fetch(upload.url, {
      method: 'PUT',
      body: new ReadableStream<Uint8Array>({
        pull(controller) {
          const chunk = chunks.shift();
          if (chunk === undefined) controller.close();
          else controller.enqueue(chunk);
        },
      }),
      duplex: 'half',
    });
    expect(streamed.status).toBe(413);
    expect(Buffer.from((await blobs.get('capped')) ?? []).toString()).toBe('old');

    const exact = await fetch(upload.url, { method: 'PUT', body: randomBytes(1024) });
    expect(exact.status).toBe(200);
    expect(await blobs.get('capped')).toHaveLength(1024);
    expect(await readdir(join(dir, 'tmp'))).toEqual([]);
  });

  it('refuses an upload whose content type cannot be stored', async () => {
    const upload = await served.blobs.presignPut('typed', { expiresInSeconds: 60 });
    const response = await fetch(upload.url, {
      method: 'PUT',
      body: 'x',
      headers: { 'content-type': 't\u00ebxt/plain' },
    });

    expect(response.status).toBe(400);
    expect(await errorOf(response)).toMatchObject({ code: 'invalid_content_type' });
    expect(await served.blobs.get('typed')).toBeUndefined();
  });

  it("serves a blob with headers that keep a stored page from running as the API's origin", async () => {
    const { blobs } = served;
    await blobs.put('page.html', Buffer.from('<script>alert(1)</script>'), { contentType: 'text/html' });
    const response = await fetch((await blobs.presignGet('page.html', { expiresInSeconds: 60 })).url);

    expect(response.status).toBe(200);
    expect(Object.fromEntries(response.headers)).toMatchObject({
      'content-type': 'text/html',
      'content-length': '25',
      'content-security-policy': 'sandbox',
      'x-content-type-options': 'nosniff',
    });
  });
});

describe('LocalBlobs', () => {
  let served: ServedBlobs;

  beforeEach(async () => {
    served = await servedBlobs();
  });

  afterEach(async () => {
    await served.close();
  });

  it('keeps one file per blob, named by the hash of its key and opening with its header, and no temporary file', async () => {
    const { blobs, dir } = served;
    await blobs.put('tasks/t1/log', Buffer.from('hello\n'), { contentType: 'text/plain' });
    await blobs.put('tasks/t1/log', Buffer.from('hello again\n'), { contentType: 'text/plain' });

    const hash = createHash('sha256').update('tasks/t1/log').digest('hex');
    expect((await readdir(dir)).sort()).toEqual([hash.slice(0, 2), 'tmp']);
    expect(await readFile(join(dir, hash.slice(0, 2), hash), 'utf8')).toBe(
      '{"key":"tasks/t1/log","contentType":"text/plain"}\nhello again\n',
    );
    expect(await readdir(join(dir, 'tmp'))).toEqual([]);
  });

  it('reports a damaged blob file instead of serving it as data', async () => {
    const { blobs, dir } = served;
    await blobs.put('damaged', Buffer.from('fine'));
    const hash = createHash('sha256').update('damaged').digest('hex');
    await writeFile(join(dir, hash.slice(0, 2), hash), 'no header at all');

    await expect(blobs.get('damaged')).rejects.toThrow(/damaged/);
    await expect(blobs.open('damaged')).rejects.toThrow(/damaged/);
  });

  it('serves blobs and honours URLs across instances that share the directory and secret, and no others', async () => {
    const { blobs, dir, baseUrl, secret, clock } = served;
    await blobs.put('shared', Buffer.from('kept'));
    const sibling = new LocalBlobs({ dir, baseUrl, secret, clock });
    const stranger = new LocalBlobs({ dir, baseUrl, secret: randomBytes(32), clock });

    expect(Buffer.from((await sibling.get('shared')) ?? []).toString()).toBe('kept');
    expect((await fetch((await sibling.presignGet('shared', { expiresInSeconds: 60 })).url)).status).toBe(200);
    expect((await fetch((await stranger.presignGet('shared', { expiresInSeconds: 60 })).url)).status).toBe(403);
  });

  it('removes only the temporary files that have sat untouched for a day', async () => {
    const { blobs, dir } = served;
    expect(await blobs.removeAbandonedUploads()).toBe(0);
    await mkdir(join(dir, 'tmp'), { recursive: true });
    await writeFile(join(dir, 'tmp', 'abandoned'), 'x');
    await writeFile(join(dir, 'tmp', 'in-progress'), 'x');
    const twoDaysAgo = new Date(Date.now() - 2 * 24 * 60 * 60 * 1000);
    await utimes(join(dir, 'tmp', 'abandoned'), twoDaysAgo, twoDaysAgo);

    expect(await blobs.removeAbandonedUploads()).toBe(1);
    expect(await readdir(join(dir, 'tmp'))).toEqual(['in-progress']);
  });

  it('refuses a short secret and a base URL with a query', () => {
    const options = { dir: served.dir, baseUrl: 'http://127.0.0.1:1', clock: served.clock };
    expect(() => new LocalBlobs({ ...options, secret: randomBytes(31) })).toThrow(/32 bytes/);
    expect(() => new LocalBlobs({ ...options, baseUrl: 'http://h/?x=1', secret: randomBytes(32) })).toThrow(/query/);
    expect(() => new LocalBlobs({ ...options, baseUrl: 'not a url', secret: randomBytes(32) })).toThrow();
  });

  it('builds presigned URLs under the base URL, its path and trailing slash included', async () => {
    const blobs = new LocalBlobs({
      dir: served.dir,
      baseUrl: 'http://example.test/files/',
      secret: served.secret,
      clock: served.clock,
    });
    const { url, expiresAt } = await blobs.presignGet("a/b!_.*'()-c", { expiresInSeconds: 60 });

    expect(expiresAt).toBe(served.clock.now() + 60_000);
    expect(url).toMatch(/^http:\/\/example\.test\/files\/blobs\/a\/b!_\.\*'\(\)-c\?expires=\d+&signature=[\w-]{43}$/);
    // A URL parser leaves the key as it is, so the server checks the key that was signed.
    expect(new URL(url).pathname).toBe("/files/blobs/a/b!_.*'()-c");
  });
});
