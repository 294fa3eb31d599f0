import {
  createHash,
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
  randomBytes,
  sign,
  verify,
} from 'node:crypto';

/**
 * Node request signing. Every agent request carries these headers; the signature is Ed25519 over
 *
 *   GPUAI-SIG-1 \n METHOD \n PATH?QUERY \n DATE_MS \n NONCE \n SHA256_HEX(BODY)
 *
 * so a captured request cannot be delayed (date window) or re-aimed (method, path, body), nor
 * replayed. How a replay is refused depends on the route:
 *
 * - **Nonce** (registration, work polls, claims, results, failures, credentials, attestation):
 *   the server remembers each nonce for twice the skew window and refuses one it has seen.
 * - **Monotonic date** (heartbeats, progress reports): these are streams, each sent one request at
 *   a time, and the server takes a request only when its date is strictly later than the last one
 *   it took from the same stream: a node's heartbeats (per node), an attempt's progress reports (per
 *   task attempt). It checks that inside the write the request makes anyway, so these frequent
 *   requests write no nonce item. A client signs with `date = max(now, last + 1)`.
 *
 * A single counter per node would not do: heartbeats, claims and the reports of several slots run
 * concurrently and may arrive out of order; each stream alone is sequential.
 */
export const signatureHeaders = {
  node: 'x-gpuai-node',
  date: 'x-gpuai-date',
  nonce: 'x-gpuai-nonce',
  signature: 'x-gpuai-signature',
} as const;

/**
 * The date header is epoch milliseconds in plain decimal digits, exactly as {@link signRequest}
 * writes it: `1795847021833.0`, `+1795847021833` or `1.795847021833e12` name the same number but
 * are other header values carrying the same signature, so they are refused; so is a leading zero
 * (`01795847021833`), for the same reason.
 */
export const signedDatePattern = /^(0|[1-9][0-9]{0,14})$/;

/** How far a request's date may be from the server's clock. */
export const maxClockSkewMs = 5 * 60 * 1000;

const ED25519_SPKI_PREFIX = Buffer.from('302a300506032b6570032100', 'hex');

export const sha256Hex = (data: string | Uint8Array): string => createHash('sha256').update(data).digest('hex');

export function canonicalRequest(
  method: string,
  pathWithQuery: string,
  dateMs: number,
  nonce: string,
  body: string | Uint8Array,
): string {
  return ['GPUAI-SIG-1', method.toUpperCase(), pathWithQuery, String(dateMs), nonce, sha256Hex(body)].join('\n');
}

/** Derives the node id from a raw public key: stable across restarts and re-registration. */
export function nodeIdFromPublicKey(publicKeyB64url: string): string {
  const digest = createHash('sha256').update(Buffer.from(publicKeyB64url, 'base64url')).digest();
  return `node_${base32Lower(digest).slice(0, 26)}`;
}

function base32Lower(bytes: Uint8Array): string {
  const alphabet = 'abcdefghijklmnopqrstuvwxyz234567';
  let bits = 0;
  let value = 0;
  let out = '';
  for (const byte of bytes) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += alphabet[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += alphabet[(value << (5 - bits)) & 31];
  return out;
}

export interface NodeKeyPair {
  /** Raw 32-byte public key, base64url. */
  publicKey: string;
  privateKey: KeyObject;
}

export function generateNodeKeyPair(): { publicKey: string; privateKeyPem: string } {
  const pair = generateKeyPairSync('ed25519');
  return {
    publicKey: rawPublicKey(pair.publicKey),
    privateKeyPem: pair.privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(),
  };
}

export function loadNodeKeyPair(privateKeyPem: string): NodeKeyPair {
  const privateKey = createPrivateKey(privateKeyPem);
  return { privateKey, publicKey: rawPublicKey(createPublicKey(privateKey)) };
}

function rawPublicKey(key: KeyObject): string {
  const der = key.export({ format: 'der', type: 'spki' });
  return der.subarray(ED25519_SPKI_PREFIX.length).toString('base64url');
}

export function publicKeyObject(publicKeyB64url: string): KeyObject {
  const raw = Buffer.from(publicKeyB64url, 'base64url');
  return createPublicKey({ key: Buffer.concat([ED25519_SPKI_PREFIX, raw]), format: 'der', type: 'spki' });
}

/**
 * Public key objects by their base64url text, least recently used first out beyond `capacity`.
 * Building one (createPublicKey from DER) cost more than the Ed25519 verify itself, on every
 * signed request; node ids derive from their keys, so a node's key text never changes meaning.
 */
export class VerifiedKeyCache {
  private readonly keys = new Map<string, KeyObject>();

  constructor(readonly capacity: number) {}

  get size(): number {
    return this.keys.size;
  }

  get(publicKeyB64url: string): KeyObject | undefined {
    const key = this.keys.get(publicKeyB64url);
    if (key === undefined) return undefined;
    // Re-inserted: a Map keeps insertion order, so its first entry is the least recently used.
    this.keys.delete(publicKeyB64url);
    this.keys.set(publicKeyB64url, key);
    return key;
  }

  remember(publicKeyB64url: string, key: KeyObject): void {
    this.keys.set(publicKeyB64url, key);
    if (this.keys.size <= this.capacity) return;
    const oldest = this.keys.keys().next().value;
    if (oldest !== undefined) this.keys.delete(oldest);
  }
}

/**
 * The keys {@link verifySignature} has seen verify. A KeyObject takes about 1 KiB of the process's
 * memory (measured: 1.0-1.2 KiB RSS each), so this holds 64 MiB at most; a control plane process
 * that verifies more distinct nodes than that in turn rebuilds keys, as it did before the cache.
 * Only keys whose signature verified are kept, so made-up keys cannot flush it.
 */
export const verifiedKeys = new VerifiedKeyCache(65_536);

/** Headers for a signed request from `nodeId`. */
export function signRequest(
  key: NodeKeyPair,
  nodeId: string,
  req: { method: string; pathWithQuery: string; body: string },
  nowMs: number = Date.now(),
): Record<string, string> {
  const nonce = randomBytes(16).toString('base64url');
  const message = canonicalRequest(req.method, req.pathWithQuery, nowMs, nonce, req.body);
  return {
    [signatureHeaders.node]: nodeId,
    [signatureHeaders.date]: String(nowMs),
    [signatureHeaders.nonce]: nonce,
    [signatureHeaders.signature]: sign(null, Buffer.from(message), key.privateKey).toString('base64url'),
  };
}

/** Whether `signatureB64url` is the Ed25519 signature of `message` under the raw public key; never throws. */
export function verifySignature(publicKeyB64url: string, message: string, signatureB64url: string): boolean {
  try {
    const cached = verifiedKeys.get(publicKeyB64url);
    const key = cached ?? publicKeyObject(publicKeyB64url);
    const valid = verify(null, Buffer.from(message), key, Buffer.from(signatureB64url, 'base64url'));
    if (valid && cached === undefined) verifiedKeys.remember(publicKeyB64url, key);
    return valid;
  } catch {
    return false;
  }
}
