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
 * so a captured request cannot be replayed (nonce), delayed (date window) or re-aimed (method, path, body).
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

export function verifySignature(publicKeyB64url: string, message: string, signatureB64url: string): boolean {
  try {
    return verify(
      null,
      Buffer.from(message),
      publicKeyObject(publicKeyB64url),
      Buffer.from(signatureB64url, 'base64url'),
    );
  } catch {
    return false;
  }
}
