import { randomBytes } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { BlobKeyError, type Blobs, maxPresignSeconds, type PresignedRequest } from '../../functions/ports/blobs.js';

/** What a {@link blobsContract} factory hands the suite for one test. */
export interface BlobsFixture {
  /** A store of its own: the suite writes the same keys in every test. */
  blobs: Blobs;
  /**
   * Lets `ms` pass as the server behind the presigned URLs sees it: the local adapter advances the
   * manual clock it checks expiry by (no waiting); a real S3 can only be waited for.
   */
  elapse(ms: number): Promise<void>;
  /**
   * Set when the server behind the presigned URLs does not check them (moto checks no signature,
   * expiry or signed header): the tests of those refusals are skipped with this reason, and the
   * fixture's own test file should pin the gap. Absent for a server that checks.
   */
  uncheckedPresigning?: string;
  /** Releases everything the fixture made. */
  cleanup(): Promise<void>;
}

/** Sends a presigned request as a client would, with its required headers unless overridden. */
function send(
  request: PresignedRequest,
  init: { body?: Uint8Array; headers?: Record<string, string>; url?: string; method?: string } = {},
): Promise<Response> {
  return fetch(init.url ?? request.url, {
    method: init.method ?? request.method,
    headers: { ...request.headers, ...init.headers },
    ...(init.body === undefined ? {} : { body: init.body }),
  });
}

async function bytesOf(response: Response): Promise<Buffer> {
  return Buffer.from(await response.arrayBuffer());
}

/** Equality of bytes whatever their view (Buffer or Uint8Array), with a readable failure. */
function expectBytes(actual: Uint8Array | undefined, expected: Uint8Array): void {
  expect(actual).toBeDefined();
  expect(Buffer.from(actual ?? []).toString('hex')).toBe(Buffer.from(expected).toString('hex'));
}

/** Every byte value, so an adapter that treats the body as text shows it. */
const binary = Uint8Array.from({ length: 256 }, (_, i) => i);

/** The behaviour every {@link Blobs} adapter must show, presigned requests sent over real HTTP. */
export function blobsContract(name: string, makeBlobs: () => Promise<BlobsFixture>): void {
  describe(`Blobs contract: ${name}`, () => {
    let fixture: BlobsFixture;
    let blobs: Blobs;

    beforeEach(async () => {
      fixture = await makeBlobs();
      blobs = fixture.blobs;
    });

    afterEach(async () => {
      await fixture.cleanup();
    });

    /** Skips a test of refusals where the fixture says nothing refuses. */
    const needsChecks = (context: { skip: (note?: string) => void }) => {
      if (fixture.uncheckedPresigning !== undefined) {
        context.skip(fixture.uncheckedPresigning);
      }
    };

    it('returns the bytes put, binary, empty and 1 MiB alike', async () => {
      const large = randomBytes(1 << 20);
      await blobs.put('round/binary', binary);
      await blobs.put('round/empty', new Uint8Array());
      await blobs.put('round/large.bin', large, { contentType: 'application/octet-stream' });

      expectBytes(await blobs.get('round/binary'), binary);
      expectBytes(await blobs.get('round/empty'), new Uint8Array());
      expectBytes(await blobs.get('round/large.bin'), large);
    });

    it('replaces a blob on put, and keeps a key apart from the keys under it', async () => {
      await blobs.put('a', Buffer.from('first'));
      await blobs.put('a', Buffer.from('second'));
      await blobs.put('a/b', Buffer.from('under a'));
      await blobs.put('A', Buffer.from('upper case'));

      expectBytes(await blobs.get('a'), Buffer.from('second'));
      expectBytes(await blobs.get('a/b'), Buffer.from('under a'));
      expectBytes(await blobs.get('A'), Buffer.from('upper case'));
    });

    it('answers undefined for a missing blob, and deletes idempotently', async () => {
      expect(await blobs.get('never/written')).toBeUndefined();
      await blobs.delete('never/written');

      await blobs.put('doomed', binary);
      await blobs.delete('doomed');
      expect(await blobs.get('doomed')).toBeUndefined();
      await blobs.delete('doomed');
    });

    it('refuses invalid keys in every method, before any effect', async () => {
      const invalid = [
        '',
        '/lead',
        'trail/',
        'a//b',
        'a/../b',
        '..',
        'a/./b',
        'sp ace',
        'ü',
        'a?b',
        'a#b',
        'x'.repeat(1025),
      ];
      for (const key of invalid) {
        await expect(blobs.put(key, binary), key).rejects.toBeInstanceOf(BlobKeyError);
        await expect(blobs.get(key), key).rejects.toBeInstanceOf(BlobKeyError);
        await expect(blobs.delete(key), key).rejects.toBeInstanceOf(BlobKeyError);
        await expect(blobs.presignPut(key, { expiresInSeconds: 60 }), key).rejects.toBeInstanceOf(BlobKeyError);
        await expect(blobs.presignGet(key, { expiresInSeconds: 60 }), key).rejects.toBeInstanceOf(BlobKeyError);
      }
      // The longest and the most unusual keys allowed work.
      const longest = `${'k/'.repeat(511)}ab`;
      await blobs.put(longest, binary);
      await blobs.put("x!_.*'()-y/.hidden/...", binary);
      expectBytes(await blobs.get(longest), binary);
      expectBytes(await blobs.get("x!_.*'()-y/.hidden/..."), binary);
    });

    it('refuses expiries and content types that S3 would not sign', async () => {
      for (const expiresInSeconds of [0, -1, 1.5, maxPresignSeconds + 1, Number.NaN]) {
        await expect(blobs.presignGet('k', { expiresInSeconds })).rejects.toBeInstanceOf(RangeError);
        await expect(blobs.presignPut('k', { expiresInSeconds })).rejects.toBeInstanceOf(RangeError);
      }
      for (const contentType of ['', ' text/plain', 'text/plain\n', 'tëxt/plain']) {
        await expect(blobs.presignPut('k', { expiresInSeconds: 60, contentType })).rejects.toBeInstanceOf(RangeError);
        await expect(blobs.put('k', binary, { contentType })).rejects.toBeInstanceOf(RangeError);
      }
      await expect(blobs.presignGet('k', { expiresInSeconds: maxPresignSeconds })).resolves.toMatchObject({
        method: 'GET',
      });
    });

    it('uploads through a presigned PUT and downloads through a presigned GET, over HTTP', async () => {
      const body = randomBytes(1 << 20);
      const before = Date.now();
      const upload = await blobs.presignPut('jobs/j1/outputs/result.bin', {
        expiresInSeconds: 300,
        contentType: 'application/x-gpuai-result',
      });
      expect(upload).toMatchObject({ method: 'PUT', headers: { 'content-type': 'application/x-gpuai-result' } });
      expect(upload.expiresAt).toBeGreaterThan(before + 298_000);
      expect(upload.expiresAt).toBeLessThanOrEqual(Date.now() + 300_000);

      const put = await send(upload, { body });
      expect(put.status, await put.clone().text()).toBe(200);
      expectBytes(await blobs.get('jobs/j1/outputs/result.bin'), body);

      const download = await blobs.presignGet('jobs/j1/outputs/result.bin', { expiresInSeconds: 60 });
      expect(download).toMatchObject({ method: 'GET', headers: {} });
      const got = await send(download);
      expect(got.status).toBe(200);
      expect(got.headers.get('content-type')).toBe('application/x-gpuai-result');
      expectBytes(await bytesOf(got), body);
    });

    it('serves what put stored, with its content type, and lets a presigned PUT replace it', async () => {
      await blobs.put('logs/t1', Buffer.from('line 1\n'), { contentType: 'text/plain; charset=utf-8' });
      const download = await blobs.presignGet('logs/t1', { expiresInSeconds: 60 });
      let got = await send(download);
      expect(got.headers.get('content-type')).toBe('text/plain; charset=utf-8');
      expect(await got.text()).toBe('line 1\n');

      // Without a signed content type the upload may send any, or none; an empty body is a blob too.
      const upload = await blobs.presignPut('logs/t1', { expiresInSeconds: 60 });
      expect(upload.headers).toEqual({});
      expect((await send(upload, { body: new Uint8Array() })).status).toBe(200);
      got = await send(download);
      expect(got.status).toBe(200);
      expect(await bytesOf(got)).toHaveLength(0);
      expectBytes(await blobs.get('logs/t1'), new Uint8Array());
    });

    it('refuses a presigned GET of a missing blob', async () => {
      const download = await blobs.presignGet('missing/blob', { expiresInSeconds: 60 });
      const got = await send(download);
      // S3 answers 404, or 403 to a signer without s3:ListBucket; either way no body is served.
      expect([403, 404]).toContain(got.status);
    });

    it('refuses an expired presigned request, and the upload changes nothing', async (context) => {
      needsChecks(context);
      await blobs.put('expiring', binary);
      const download = await blobs.presignGet('expiring', { expiresInSeconds: 1 });
      const upload = await blobs.presignPut('expiring', { expiresInSeconds: 1 });
      await fixture.elapse(2_500);

      expect((await send(download)).status).toBe(403);
      expect((await send(upload, { body: Buffer.from('late') })).status).toBe(403);
      expectBytes(await blobs.get('expiring'), binary);
    });

    it('refuses a presigned request sent for another key or with another method', async (context) => {
      needsChecks(context);
      await blobs.put('mine', Buffer.from('mine'));
      await blobs.put('theirs', Buffer.from('theirs'));
      const download = await blobs.presignGet('mine', { expiresInSeconds: 60 });
      const upload = await blobs.presignPut('mine', { expiresInSeconds: 60 });
      const elsewhere = (request: PresignedRequest) => {
        const url = new URL(request.url);
        url.pathname = url.pathname.replace(/mine$/, 'theirs');
        return url.href;
      };

      const stolen = await send(download, { url: elsewhere(download) });
      expect(stolen.status).toBe(403);
      expect(await stolen.text()).not.toBe('theirs');
      expect((await send(upload, { url: elsewhere(upload), body: Buffer.from('overwritten') })).status).toBe(403);
      // A URL signed for an upload does not download, nor one signed for a download upload.
      expect((await send(upload, { method: 'GET' })).status).toBe(403);
      expect((await send(download, { method: 'PUT', body: Buffer.from('overwritten') })).status).toBe(403);
      expectBytes(await blobs.get('theirs'), Buffer.from('theirs'));
      expectBytes(await blobs.get('mine'), Buffer.from('mine'));
    });

    it('refuses a presigned PUT without the content type it was signed with', async (context) => {
      needsChecks(context);
      const upload = await blobs.presignPut('typed', { expiresInSeconds: 60, contentType: 'text/plain' });

      const other = await send(upload, { body: Buffer.from('<script>'), headers: { 'content-type': 'text/html' } });
      expect(other.status).toBe(403);
      const none = await fetch(upload.url, { method: 'PUT', body: Buffer.from('untyped') });
      expect(none.status).toBe(403);
      expect(await blobs.get('typed')).toBeUndefined();
    });
  });
}
