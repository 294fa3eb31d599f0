import {
  createHmac,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  generateKeyPairSync,
  timingSafeEqual,
} from 'node:crypto';
import { Aes256Gcm, CipherSuite, DhkemX25519HkdfSha256, HkdfSha256 } from '@hpke/core';
import { z } from 'zod';
import { canonicalJson } from './canonical-json.js';
import { openEnvelope } from './envelope.js';

/**
 * Sealing to a recipient's X25519 key with HPKE (RFC 9180), base mode, suite
 * DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / AES-256-GCM. Two uses:
 *
 * - Jobs sealed to the node: the job's env stays in its at-rest envelope (protocol/envelope.ts,
 *   AES-256-GCM under the per-job data key); at dispatch the control plane HPKE-seals the data key
 *   to the claiming node's sealing key, with `info` and `aad` binding job, task, attempt and node.
 *   Only that node's private key opens it; the control plane keeps only wrapped keys.
 * - Results sealed to the submitter: when a job names a `resultKey`, the agent seals log tails and
 *   progress messages to it, so the control plane only ever holds ciphertext of them.
 *
 * Lives in protocol/ because the control plane, the agent and the CLI all speak it; it is pure
 * computation (WebCrypto through @hpke/core, node:crypto), no I/O.
 */
const suite = new CipherSuite({ kem: new DhkemX25519HkdfSha256(), kdf: new HkdfSha256(), aead: new Aes256Gcm() });

/** Identifies the suite and the framing in sealed payloads, so a later suite can be told apart. */
export const sealingSuite = 'hpke-x25519-sha256-aes256gcm-v1';

/**
 * Whether an X25519 public key can be sealed to: a trial Diffie-Hellman with a throwaway key,
 * which OpenSSL refuses for the all-zero and other low-order points (their shared secret is
 * all zeros, so HPKE could not seal to them and the agent would fail after running the task).
 */
export function isUsableSealingKey(x: string): boolean {
  try {
    const publicKey = createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x }, format: 'jwk' });
    diffieHellman({ privateKey: trialKey, publicKey });
    return true;
  } catch {
    return false;
  }
}
const trialKey = generateKeyPairSync('x25519').privateKey;

/** Raw 32-byte X25519 public key, base64url without padding. */
export const SealingPublicKey = z
  .string()
  .regex(/^[A-Za-z0-9_-]{43}$/)
  .refine(isUsableSealingKey, { message: 'not a usable X25519 public key (a low-order point)' })
  .meta({ id: 'SealingPublicKey', description: 'X25519 public key: raw 32 bytes, base64url without padding.' });

/** A job's env as a node receives it: the at-rest envelope plus its data key sealed to the node. */
export const SealedEnv = z
  .strictObject({
    suite: z.literal(sealingSuite),
    enc: z
      .string()
      .regex(/^[A-Za-z0-9_-]{43}$/)
      .meta({ description: 'HPKE encapsulated key (X25519, 32 bytes).' }),
    key: z
      .string()
      .regex(/^[A-Za-z0-9_-]{1,128}$/)
      .meta({ description: "The job's data key, HPKE-sealed to the node's sealing key." }),
    envelope: z.string().max(2_000_000).meta({ description: 'The env map, AES-256-GCM under the data key.' }),
  })
  .meta({ id: 'SealedEnv' });
export type SealedEnv = z.infer<typeof SealedEnv>;

/** What a sealed data key is bound to: opened under any other value, it does not open. */
export interface NodeSealContext {
  jobId: string;
  taskId: string;
  attempt: number;
  nodeId: string;
}

/** What a sealed result text is bound to. */
export interface ResultSealContext {
  jobId: string;
  taskId: string;
  /** Which field the text travels in. */
  field: 'logTail' | 'message';
}

export class SealError extends Error {
  override name = 'SealError';
}

export interface SealingKeyPair {
  /** Raw public key, base64url. */
  publicKey: string;
  /** Raw private scalar, base64url. Secret. */
  privateKey: string;
}

/** A fresh X25519 key pair (node sealing keys, result keys). */
export function generateSealingKeyPair(): SealingKeyPair {
  const { publicKey, privateKey } = generateKeyPairSync('x25519');
  const jwk = privateKey.export({ format: 'jwk' });
  const pub = publicKey.export({ format: 'jwk' });
  if (typeof jwk.d !== 'string' || typeof pub.x !== 'string') throw new Error('x25519 key export failed');
  return { publicKey: pub.x, privateKey: jwk.d };
}

/** The public key of a raw private key (both base64url). */
export function sealingPublicKeyOf(privateKey: string): string {
  const raw = decodeKey(privateKey, 'private key');
  // PKCS#8 prefix of an X25519 private key (RFC 8410), followed by the 32 raw bytes.
  const der = Buffer.concat([Buffer.from('302e020100300506032b656e04220420', 'hex'), raw]);
  const jwk = createPublicKey(createPrivateKey({ key: der, format: 'der', type: 'pkcs8' })).export({ format: 'jwk' });
  if (typeof jwk.x !== 'string') throw new SealError('not an X25519 private key');
  return jwk.x;
}

/** HPKE base-mode seal to `recipientPublicKey`. */
export async function hpkeSeal(
  recipientPublicKey: string,
  plaintext: Uint8Array,
  info: string,
  aad: string,
): Promise<{ enc: string; ciphertext: string }> {
  const publicKey = await suite.kem.deserializePublicKey(toArrayBuffer(decodeKey(recipientPublicKey, 'public key')));
  const sender = await suite.createSenderContext({ recipientPublicKey: publicKey, info: utf8(info) });
  const ciphertext = await sender.seal(toArrayBuffer(plaintext), utf8(aad));
  return { enc: b64(new Uint8Array(sender.enc)), ciphertext: b64(new Uint8Array(ciphertext)) };
}

/** Opens what {@link hpkeSeal} sealed; throws {@link SealError} for any key, context or byte that differs. */
export async function hpkeOpen(
  recipientPrivateKey: string,
  enc: string,
  ciphertext: string,
  info: string,
  aad: string,
): Promise<Uint8Array> {
  try {
    const privateKey = await suite.kem.deserializePrivateKey(
      toArrayBuffer(decodeKey(recipientPrivateKey, 'private key')),
    );
    const recipient = await suite.createRecipientContext({
      recipientKey: privateKey,
      enc: toArrayBuffer(Buffer.from(enc, 'base64url')),
      info: utf8(info),
    });
    return new Uint8Array(await recipient.open(toArrayBuffer(Buffer.from(ciphertext, 'base64url')), utf8(aad)));
  } catch (cause) {
    throw new SealError('sealed payload does not open with this key and context', { cause });
  }
}

const nodeInfo = (ctx: NodeSealContext) =>
  `gpuai/seal-to-node/v1 ${canonicalJson({ attempt: ctx.attempt, jobId: ctx.jobId, nodeId: ctx.nodeId, taskId: ctx.taskId })}`;

/** Seals a job's data key to a node for one attempt of one task (the control plane, at dispatch). */
export async function sealDataKeyToNode(
  dataKey: Uint8Array,
  nodeSealingKey: string,
  ctx: NodeSealContext,
): Promise<{ enc: string; key: string }> {
  const info = nodeInfo(ctx);
  const { enc, ciphertext } = await hpkeSeal(nodeSealingKey, dataKey, info, info);
  return { enc, key: ciphertext };
}

/**
 * Opens a sealed env on the node, in memory: the data key with the node's sealing key, then the
 * envelope with the data key (bound to the job id).
 *
 * @throws {@link SealError} when any part does not open (another node's key, another task or
 *   attempt, a flipped byte).
 */
export async function openSealedEnv(
  nodePrivateKey: string,
  sealed: SealedEnv,
  ctx: NodeSealContext,
): Promise<Record<string, string>> {
  if (sealed.suite !== sealingSuite) throw new SealError(`unknown sealing suite ${String(sealed.suite)}`);
  const info = nodeInfo(ctx);
  const dataKey = await hpkeOpen(nodePrivateKey, sealed.enc, sealed.key, info, info);
  try {
    const env = JSON.parse(openEnvelope(dataKey, sealed.envelope, ctx.jobId).toString('utf8')) as unknown;
    const parsed = z.record(z.string(), z.string()).safeParse(env);
    if (!parsed.success) throw new SealError('sealed env is not a map of strings');
    return parsed.data;
  } catch (cause) {
    if (cause instanceof SealError) throw cause;
    throw new SealError('sealed env does not open with its data key', { cause });
  } finally {
    dataKey.fill(0);
  }
}

/** Prefix of a text sealed to a result key: `hpke1.<enc>.<ciphertext>`, base64url parts. */
export const sealedTextPrefix = 'hpke1.';

export const isSealedText = (text: string): boolean => /^hpke1\.[A-Za-z0-9_-]{43}\.[A-Za-z0-9_-]+$/.test(text);

const resultInfo = (ctx: ResultSealContext) =>
  `gpuai/result/v1 ${canonicalJson({ field: ctx.field, jobId: ctx.jobId, taskId: ctx.taskId })}`;

/** Length of a sealed text for a plaintext of `bytes` bytes. */
export const sealedTextLength = (bytes: number): number =>
  sealedTextPrefix.length + 43 + 1 + Math.ceil(((bytes + 16) * 4) / 3);

/**
 * Seals a text (a log tail, a progress message) to the job's result key. When `maxLength` is
 * given, the plaintext is cut from the start (log tails keep their end) so the sealed text fits.
 */
export async function sealResultText(
  resultKey: string,
  text: string,
  ctx: ResultSealContext,
  maxLength?: number,
): Promise<string> {
  let bytes = Buffer.from(text, 'utf8');
  if (maxLength !== undefined) {
    let keep = bytes.length;
    while (keep > 0 && sealedTextLength(keep) > maxLength) keep--;
    bytes = bytes.subarray(bytes.length - keep);
  }
  const info = resultInfo(ctx);
  const { enc, ciphertext } = await hpkeSeal(resultKey, bytes, info, info);
  return `${sealedTextPrefix}${enc}.${ciphertext}`;
}

/** Opens a text sealed by {@link sealResultText}; throws {@link SealError} if it does not open. */
export async function openResultText(
  resultPrivateKey: string,
  sealed: string,
  ctx: ResultSealContext,
): Promise<string> {
  if (!isSealedText(sealed)) throw new SealError('not a sealed text');
  const [, enc, ciphertext] = sealed.split('.') as [string, string, string];
  const info = resultInfo(ctx);
  return Buffer.from(await hpkeOpen(resultPrivateKey, enc, ciphertext, info, info)).toString('utf8');
}

/** HMAC-SHA-256, hex: a keyed digest for comparisons whose input holds secrets. */
export function keyedDigest(key: Uint8Array, purpose: string, data: string): string {
  return createHmac('sha256', key).update(purpose).update('\0').update(data).digest('hex');
}

/** Constant-time comparison of two hex digests. */
export function sameDigest(a: string, b: string): boolean {
  const x = Buffer.from(a, 'utf8');
  const y = Buffer.from(b, 'utf8');
  return x.length === y.length && timingSafeEqual(x, y);
}

function decodeKey(key: string, what: string): Buffer {
  const raw = Buffer.from(key, 'base64url');
  if (raw.length !== 32 || raw.toString('base64url') !== key) throw new SealError(`malformed X25519 ${what}`);
  return raw;
}

const b64 = (bytes: Uint8Array): string => Buffer.from(bytes).toString('base64url');
const utf8 = (text: string): ArrayBuffer => toArrayBuffer(Buffer.from(text, 'utf8'));

function toArrayBuffer(bytes: Uint8Array): ArrayBuffer {
  const copy = new Uint8Array(bytes.byteLength);
  copy.set(bytes);
  return copy.buffer;
}
