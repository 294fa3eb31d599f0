import { createHash, createHmac, randomUUID, timingSafeEqual } from 'node:crypto';
import { type FileHandle, mkdir, open, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { type Context, Hono } from 'hono';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import type { ErrorBody } from '../../../protocol/index.js';
import {
  assertBlobKey,
  assertContentType,
  assertPresignExpiry,
  BlobKeyError,
  type Blobs,
  defaultBlobContentType,
  type PresignedRequest,
  type PresignOptions,
  type PresignPutOptions,
  type PutOptions,
} from '../../ports/blobs.js';
import type { Clock } from '../../ports/clock.js';

/** HMAC-SHA256 keys shorter than its output weaken it. */
const minSecretBytes = 32;
/** A header line holds a key (at most 1,024 bytes) and a content type (255, at most doubled by escaping). */
const maxHeaderBytes = 2048;
/** How long a temporary file may sit untouched before {@link LocalBlobs.removeAbandonedUploads} takes it for a crash's leftover. */
const abandonedAfterMs = 24 * 60 * 60 * 1000;

export interface LocalBlobsOptions {
  /** The directory that holds the blobs, `<dataDir>/blobs`; created as needed. */
  dir: string;
  /** Where {@link blobRoutes} is served, such as `http://127.0.0.1:8080`: presigned URLs start with it. */
  baseUrl: string;
  /** Signs presigned URLs: at least 32 bytes, kept as secret as the data dir itself. */
  secret: Uint8Array;
  clock: Clock;
}

/** The outcome of checking a presigned request: a bad signature outranks an expiry. */
export type PresignedCheck = 'valid' | 'invalid' | 'expired';

/** A blob opened for streaming; its file stays open until `body` is read to the end or cancelled. */
export interface OpenedBlob {
  contentType: string;
  /** Bytes in `body`. */
  size: number;
  body: ReadableStream<Uint8Array>;
}

/** An upload went past the size limit of {@link LocalBlobs.putStream}; the blob is unchanged. */
export class BlobTooLargeError extends Error {
  override name = 'BlobTooLargeError';
  constructor(readonly maxBytes: number) {
    super(`blob larger than ${maxBytes} bytes`);
  }
}

/**
 * The {@link Blobs} port on the local file system, with presigned URLs that {@link blobRoutes}
 * serves.
 *
 * ```
 * <dir>/3f/3fa2...e1   {"key":"tasks/t1/log","contentType":"text/plain"}\n<the blob's bytes>
 * <dir>/tmp/<uuid>     uploads being written, renamed over the blob's file when complete
 * ```
 *
 * A blob's file is named by the SHA-256 of its key, not by the key itself: S3 keeps `a` and `a/b`
 * apart where a file system cannot have a file and a directory of one name, a key's segment may be
 * longer than a file name may, and macOS and Windows would merge keys that differ only in case.
 * The first line of the file records the key (for whoever reads the data dir) and the content type.
 *
 * A presigned URL carries its expiry (epoch ms) and an HMAC-SHA256 under `secret` of the method,
 * the key, the expiry and, when the upload's content type is fixed, that content type.
 */
export class LocalBlobs implements Blobs {
  readonly #dir: string;
  readonly #baseUrl: string;
  readonly #secret: Uint8Array;
  readonly #clock: Clock;

  constructor(options: LocalBlobsOptions) {
    if (options.secret.length < minSecretBytes) {
      throw new RangeError(
        `the blob signing secret needs at least ${minSecretBytes} bytes, not ${options.secret.length}`,
      );
    }
    const baseUrl = new URL(options.baseUrl);
    if (baseUrl.search !== '' || baseUrl.hash !== '') {
      throw new RangeError(`blob base URL ${options.baseUrl} must not have a query or fragment`);
    }
    this.#dir = options.dir;
    this.#baseUrl = baseUrl.href.replace(/\/+$/, '');
    this.#secret = options.secret;
    this.#clock = options.clock;
  }

  async put(key: string, body: Uint8Array, options: PutOptions = {}): Promise<void> {
    assertBlobKey(key);
    const contentType = options.contentType ?? defaultBlobContentType;
    assertContentType(contentType);
    await this.#write(key, contentType, (file) => file.writeFile(body));
  }

  /**
   * Stores a streamed body, as {@link put} does, without holding it in memory.
   * @throws {@link BlobTooLargeError} as soon as the body passes `maxBytes`; the blob is then unchanged.
   */
  async putStream(
    key: string,
    body: ReadableStream<Uint8Array> | null,
    options: PutOptions & { maxBytes: number },
  ): Promise<void> {
    assertBlobKey(key);
    const contentType = options.contentType ?? defaultBlobContentType;
    assertContentType(contentType);
    await this.#write(key, contentType, async (file) => {
      let size = 0;
      for await (const chunk of body ?? []) {
        size += chunk.byteLength;
        if (size > options.maxBytes) {
          throw new BlobTooLargeError(options.maxBytes);
        }
        await file.writeFile(chunk);
      }
    });
  }

  async get(key: string): Promise<Uint8Array | undefined> {
    assertBlobKey(key);
    let file: Buffer;
    try {
      file = await readFile(this.#path(key));
    } catch (error) {
      if (isMissing(error)) return undefined;
      throw error;
    }
    const { bodyOffset } = parseHeader(file, key);
    return new Uint8Array(file.buffer, file.byteOffset + bodyOffset, file.length - bodyOffset);
  }

  /** The blob under `key` as a stream, or `undefined` when there is none. */
  async open(key: string): Promise<OpenedBlob | undefined> {
    assertBlobKey(key);
    let file: FileHandle;
    try {
      file = await open(this.#path(key), 'r');
    } catch (error) {
      if (isMissing(error)) return undefined;
      throw error;
    }
    try {
      const { size } = await file.stat();
      const { buffer, bytesRead } = await file.read(Buffer.alloc(Math.min(size, maxHeaderBytes)), 0, undefined, 0);
      const { header, bodyOffset } = parseHeader(buffer.subarray(0, bytesRead), key);
      // The stream closes the file when it ends or is destroyed, including when the client goes away.
      const stream = file.createReadStream({ start: bodyOffset });
      return {
        contentType: header.contentType,
        size: size - bodyOffset,
        body: Readable.toWeb(stream),
      };
    } catch (error) {
      await file.close();
      throw error;
    }
  }

  async delete(key: string): Promise<void> {
    assertBlobKey(key);
    await rm(this.#path(key), { force: true });
  }

  async presignPut(key: string, options: PresignPutOptions): Promise<PresignedRequest> {
    assertBlobKey(key);
    assertPresignExpiry(options.expiresInSeconds);
    if (options.contentType !== undefined) {
      assertContentType(options.contentType);
    }
    return this.#presign('PUT', key, options.expiresInSeconds, options.contentType);
  }

  async presignGet(key: string, options: PresignOptions): Promise<PresignedRequest> {
    assertBlobKey(key);
    assertPresignExpiry(options.expiresInSeconds);
    return this.#presign('GET', key, options.expiresInSeconds, undefined);
  }

  /**
   * Checks a request against the presigned URL it claims to come from.
   * @param request.contentType the request's `Content-Type`: it must be the signed one, if one was signed.
   */
  checkPresigned(request: {
    method: 'PUT' | 'GET';
    key: string;
    expires: string | undefined;
    signature: string | undefined;
    contentType: string | undefined;
  }): PresignedCheck {
    const { method, key, expires, signature, contentType } = request;
    if (expires === undefined || signature === undefined || !/^\d{1,15}$/.test(expires)) {
      return 'invalid';
    }
    const expiresAt = Number(expires);
    const given = Buffer.from(signature);
    const matches = (signedType: string | undefined) => {
      const expected = Buffer.from(this.#sign(method, key, expiresAt, signedType));
      return given.length === expected.length && timingSafeEqual(given, expected);
    };
    // A URL signed without a content type accepts any; one signed with a content type only that one.
    if (!matches(undefined) && (contentType === undefined || !matches(contentType))) {
      return 'invalid';
    }
    return this.#clock.now() > expiresAt ? 'expired' : 'valid';
  }

  /**
   * Deletes temporary files that a crash left behind (untouched for a day), and returns how many.
   * Run it at start-up: a live upload writes to its file continually.
   */
  async removeAbandonedUploads(): Promise<number> {
    const directory = join(this.#dir, 'tmp');
    let names: string[];
    try {
      names = await readdir(directory);
    } catch (error) {
      if (isMissing(error)) return 0;
      throw error;
    }
    let removed = 0;
    for (const name of names) {
      const file = join(directory, name);
      const modified = await stat(file).then(
        (s) => s.mtimeMs,
        (error: unknown) => {
          // Finished (renamed) or removed since the listing.
          if (isMissing(error)) return undefined;
          throw error;
        },
      );
      if (modified !== undefined && this.#clock.now() - modified > abandonedAfterMs) {
        await rm(file, { force: true });
        removed++;
      }
    }
    return removed;
  }

  #presign(
    method: 'PUT' | 'GET',
    key: string,
    expiresInSeconds: number,
    contentType: string | undefined,
  ): PresignedRequest {
    const expiresAt = this.#clock.now() + expiresInSeconds * 1000;
    const signature = this.#sign(method, key, expiresAt, contentType);
    return {
      // Every key character is allowed in a URL path as it is (see assertBlobKey).
      url: `${this.#baseUrl}/blobs/${key}?expires=${expiresAt}&signature=${signature}`,
      method,
      headers: contentType === undefined ? {} : { 'content-type': contentType },
      expiresAt,
    };
  }

  #sign(method: 'PUT' | 'GET', key: string, expiresAt: number, contentType: string | undefined): string {
    // One field a line, and no field can hold a newline: two different requests never sign the same text.
    const text = ['gpuai-blob-v1', method, key, String(expiresAt), contentType ?? ''].join('\n');
    return createHmac('sha256', this.#secret).update(text).digest('base64url');
  }

  /**
   * Writes the blob's file beside its final place and renames it there once synced, so a reader
   * (or the next start after a crash) sees the old blob or the new one, never part of one.
   */
  async #write(key: string, contentType: string, writeBody: (file: FileHandle) => Promise<void>): Promise<void> {
    const temporary = join(this.#dir, 'tmp', randomUUID());
    await mkdir(dirname(temporary), { recursive: true });
    try {
      const file = await open(temporary, 'wx', 0o600);
      try {
        await file.writeFile(`${JSON.stringify({ key, contentType } satisfies BlobHeader)}\n`);
        await writeBody(file);
        await file.sync();
      } finally {
        await file.close();
      }
      const target = this.#path(key);
      await mkdir(dirname(target), { recursive: true });
      await rename(temporary, target);
    } catch (error) {
      await rm(temporary, { force: true });
      throw error;
    }
  }

  #path(key: string): string {
    const hash = createHash('sha256').update(key).digest('hex');
    return join(this.#dir, hash.slice(0, 2), hash);
  }
}

/** The first line of a blob's file. */
interface BlobHeader {
  key: string;
  contentType: string;
}

/** Reads the header line at the start of a blob's file, checking that it belongs to `key`. */
function parseHeader(start: Uint8Array, key: string): { header: BlobHeader; bodyOffset: number } {
  const end = start.subarray(0, maxHeaderBytes).indexOf(0x0a);
  let header: unknown;
  try {
    header = JSON.parse(Buffer.from(start.subarray(0, Math.max(end, 0))).toString('utf8'));
  } catch {
    header = undefined;
  }
  if (end < 0 || !isHeader(header) || header.key !== key) {
    throw new Error(`the file of blob ${key} does not start with its header: the blob store is damaged`);
  }
  return { header, bodyOffset: end + 1 };
}

function isHeader(value: unknown): value is BlobHeader {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as Partial<BlobHeader>).key === 'string' &&
    typeof (value as Partial<BlobHeader>).contentType === 'string'
  );
}

function isMissing(error: unknown): boolean {
  return (error as NodeJS.ErrnoException | undefined)?.code === 'ENOENT';
}

/** Uploads through {@link blobRoutes} larger than this are refused unless it is told otherwise. */
export const defaultMaxUploadBytes = 64 * 1024 * 1024;

export interface BlobRoutesOptions {
  /** The largest upload accepted, in bytes; {@link defaultMaxUploadBytes} when absent. */
  maxUploadBytes?: number;
}

/**
 * The HTTP side of {@link LocalBlobs}' presigned URLs: `PUT /blobs/<key>` and `GET /blobs/<key>`,
 * each checked against its signature and expiry (403), then served from the files (404 for a
 * missing blob, 413 for an upload over the limit, streamed to disk). Errors have the API's shape,
 * `{ error: { code, message } }`.
 *
 * Mount it where no body limit of the API applies: uploads are larger than API requests.
 * @example
 * const blobs = new LocalBlobs({ dir: join(dataDir, 'blobs'), baseUrl, secret, clock: systemClock });
 * const root = new Hono();
 * root.route('/', blobRoutes(blobs));
 * root.route('/', api);
 */
export function blobRoutes(blobs: LocalBlobs, options: BlobRoutesOptions = {}): Hono {
  const maxUploadBytes = options.maxUploadBytes ?? defaultMaxUploadBytes;
  const app = new Hono();

  app.put('/blobs/:key{.+}', async (c) => {
    const key = c.req.param('key');
    const contentType = c.req.header('content-type');
    const refused = refusal(c, blobs, 'PUT', key, contentType);
    if (refused !== undefined) return refused;
    const tooLarge = () => errorResponse(c, 413, 'body_too_large', `blob larger than ${maxUploadBytes} bytes`);
    // Refuse a declared oversize body before reading any of it.
    if (Number(c.req.header('content-length') ?? 0) > maxUploadBytes) {
      return tooLarge();
    }
    try {
      await blobs.putStream(key, c.req.raw.body, {
        maxBytes: maxUploadBytes,
        ...(contentType === undefined ? {} : { contentType }),
      });
    } catch (error) {
      if (error instanceof BlobTooLargeError) return tooLarge();
      // The key passed already: the content type is what putStream refused.
      if (error instanceof RangeError) return errorResponse(c, 400, 'invalid_content_type', error.message);
      throw error;
    }
    return c.body(null, 200);
  });

  app.get('/blobs/:key{.+}', async (c) => {
    const key = c.req.param('key');
    const refused = refusal(c, blobs, 'GET', key, undefined);
    if (refused !== undefined) return refused;
    const blob = await blobs.open(key);
    if (blob === undefined) {
      return errorResponse(c, 404, 'not_found', `no blob ${key}`);
    }
    return c.body(blob.body, 200, {
      'content-type': blob.contentType,
      'content-length': String(blob.size),
      // Blobs share the API's origin here (unlike S3's): a stored HTML page must not run as that origin.
      'content-security-policy': 'sandbox',
      'x-content-type-options': 'nosniff',
    });
  });

  return app;
}

/** The response that refuses a request with a malformed key or a bad or expired signature, if it must be refused. */
function refusal(
  c: Context,
  blobs: LocalBlobs,
  method: 'PUT' | 'GET',
  key: string,
  contentType: string | undefined,
): Response | undefined {
  try {
    assertBlobKey(key);
  } catch (error) {
    if (error instanceof BlobKeyError) return errorResponse(c, 400, 'invalid_key', error.message);
    throw error;
  }
  const check = blobs.checkPresigned({
    method,
    key,
    expires: c.req.query('expires'),
    signature: c.req.query('signature'),
    contentType,
  });
  if (check === 'invalid') {
    return errorResponse(c, 403, 'signature_invalid', `the URL's signature does not match this ${method} of ${key}`);
  }
  if (check === 'expired') {
    return errorResponse(c, 403, 'url_expired', 'the presigned URL has expired');
  }
  return undefined;
}

function errorResponse(c: Context, status: ContentfulStatusCode, code: string, message: string): Response {
  return c.json<ErrorBody>({ error: { code, message } }, status);
}
