/**
 * Blobs: named byte strings that outlive a task (task logs, job inputs and outputs), with S3's
 * semantics: a put replaces the whole blob atomically, a key and keys "under" it (`a`, `a/b`) are
 * independent, deleting is idempotent. Clients outside the control plane (agents, the CLI) move
 * the bytes themselves through presigned requests, so large payloads never pass through the API.
 *
 * Keys are validated the same way by every adapter (see {@link assertBlobKey}), so a key that
 * works on one deployment works on the other and maps safely onto a URL path and a file system.
 */
export interface Blobs {
  /** Stores `body` under `key`, replacing any blob there. */
  put(key: string, body: Uint8Array, options?: PutOptions): Promise<void>;
  /** The blob's bytes, or `undefined` when there is none. */
  get(key: string): Promise<Uint8Array | undefined>;
  /** Removes the blob; removing a missing blob succeeds. */
  delete(key: string): Promise<void>;
  /**
   * A request that uploads one blob under `key` without credentials, until it expires. The client
   * must send the request's `headers` with it: a signed content type is part of the signature.
   */
  presignPut(key: string, options: PresignPutOptions): Promise<PresignedRequest>;
  /** A request that downloads the blob under `key` without credentials, until it expires. */
  presignGet(key: string, options: PresignOptions): Promise<PresignedRequest>;
}

export interface PutOptions {
  /** The `Content-Type` a presigned GET answers with; `application/octet-stream` when absent. */
  contentType?: string;
}

export interface PresignOptions {
  /** Whole seconds, 1 to {@link maxPresignSeconds}. */
  expiresInSeconds: number;
}

export interface PresignPutOptions extends PresignOptions {
  /**
   * When given, the upload must carry exactly this `Content-Type`. Otherwise the blob keeps
   * whatever the upload sends (S3 stores `binary/octet-stream` when it sends none).
   */
  contentType?: string;
}

/** An HTTP request anyone holding it may send, until `expiresAt`. */
export interface PresignedRequest {
  url: string;
  method: 'PUT' | 'GET';
  /** Headers the request must carry, lowercase names. */
  headers: Record<string, string>;
  /** Epoch milliseconds after which the server refuses the request. */
  expiresAt: number;
}

/** SigV4 refuses presigned requests valid for longer than 7 days; every adapter keeps that limit. */
export const maxPresignSeconds = 7 * 24 * 60 * 60;

/** S3's limit on a key's length (in bytes; keys here are ASCII, so also in characters). */
export const maxBlobKeyLength = 1024;

/**
 * S3's "safe characters": no character of it needs escaping in a URL path, an XML document or a
 * file name.
 */
const keyCharacters = /^[A-Za-z0-9!_.*'()/-]+$/;

/** A key that breaks the rules of {@link assertBlobKey}; nothing was read or written. */
export class BlobKeyError extends Error {
  override name = 'BlobKeyError';
  constructor(
    readonly key: string,
    reason: string,
  ) {
    super(`invalid blob key ${JSON.stringify(key.length > 80 ? `${key.slice(0, 80)}...` : key)}: ${reason}`);
  }
}

/**
 * Checks a key against the rules every adapter shares: 1 to 1024 characters from
 * `[A-Za-z0-9!_.*'()/-]`, `/`-separated segments that are neither empty nor `.` or `..` (so no
 * leading, trailing or doubled `/`). URL parsers collapse `.` and `..` segments, and HTTP
 * intermediaries may merge slashes, so such keys would not reach the server as signed.
 * @throws {@link BlobKeyError} naming the broken rule.
 */
export function assertBlobKey(key: string): void {
  if (key.length === 0 || key.length > maxBlobKeyLength) {
    throw new BlobKeyError(key, `must be 1 to ${maxBlobKeyLength} characters long, not ${key.length}`);
  }
  if (!keyCharacters.test(key)) {
    throw new BlobKeyError(key, "may contain only letters, digits and !_.*'()/-");
  }
  for (const segment of key.split('/')) {
    if (segment === '' || segment === '.' || segment === '..') {
      throw new BlobKeyError(key, "must not start or end with '/' or contain '//', '.' or '..' segments");
    }
  }
}

/** @throws RangeError unless `seconds` is a whole number from 1 to {@link maxPresignSeconds}. */
export function assertPresignExpiry(seconds: number): void {
  if (!Number.isInteger(seconds) || seconds < 1 || seconds > maxPresignSeconds) {
    throw new RangeError(`expiresInSeconds must be a whole number from 1 to ${maxPresignSeconds}, not ${seconds}`);
  }
}

/** Printable ASCII, as an HTTP header value allows everywhere, without surrounding spaces. */
const contentTypePattern = /^[\x21-\x7e](?:[\x20-\x7e]{0,253}[\x21-\x7e])?$/;

/**
 * @throws RangeError unless `contentType` is 1 to 255 printable ASCII characters without
 *   surrounding spaces: anything else cannot be sent back as a `Content-Type` header.
 */
export function assertContentType(contentType: string): void {
  if (!contentTypePattern.test(contentType)) {
    throw new RangeError(`content type ${JSON.stringify(contentType)} is not 1 to 255 printable ASCII characters`);
  }
}

/** What a blob put without a content type is served as, by every adapter (S3's own default differs). */
export const defaultBlobContentType = 'application/octet-stream';
