import { describe, expect, it } from 'vitest';
import {
  generateSealingKeyPair,
  hpkeOpen,
  hpkeSeal,
  isSealedText,
  keyedDigest,
  type NodeSealContext,
  openResultText,
  openSealedEnv,
  SealError,
  type SealedEnv,
  sealDataKeyToNode,
  sealEnvelope,
  sealingPublicKeyOf,
  sealingSuite,
  sealResultText,
} from '../../protocol/index.js';

const ctx: NodeSealContext = { jobId: 'j-1', taskId: 'j-1.0', attempt: 1, nodeId: 'n-1' };
const dataKey = () => new Uint8Array(32).map((_, i) => i + 1);

async function sealedFor(publicKey: string, env: Record<string, string> = { SECRET: 'hunter2' }): Promise<SealedEnv> {
  const envelope = sealEnvelope(dataKey(), Buffer.from(JSON.stringify(env)), ctx.jobId);
  const { enc, key } = await sealDataKeyToNode(dataKey(), publicKey, ctx);
  return { suite: sealingSuite, enc, key, envelope };
}

/** Flips one bit of one byte of a base64url string (decoded, flipped, re-encoded). */
function flip(b64: string, at = 0): string {
  const bytes = Buffer.from(b64, 'base64url');
  bytes[at % bytes.length] = (bytes[at % bytes.length] ?? 0) ^ 0x01;
  return bytes.toString('base64url');
}

describe('HPKE sealing (RFC 9180, X25519 / HKDF-SHA256 / AES-256-GCM)', () => {
  it('generates key pairs whose public key is derived from the private one', () => {
    const pair = generateSealingKeyPair();
    expect(pair.publicKey).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(sealingPublicKeyOf(pair.privateKey)).toBe(pair.publicKey);
  });

  it('round-trips a payload', async () => {
    const pair = generateSealingKeyPair();
    const sealed = await hpkeSeal(pair.publicKey, Buffer.from('hello'), 'info', 'aad');
    expect(Buffer.from(await hpkeOpen(pair.privateKey, sealed.enc, sealed.ciphertext, 'info', 'aad')).toString()).toBe(
      'hello',
    );
  });

  it('opens a sealed env on the node it was sealed to', async () => {
    const node = generateSealingKeyPair();
    const sealed = await sealedFor(node.publicKey);
    expect(JSON.stringify(sealed)).not.toContain('hunter2');
    expect(await openSealedEnv(node.privateKey, sealed, ctx)).toEqual({ SECRET: 'hunter2' });
  });

  it('refuses one flipped byte in the encapsulated key, the sealed key or the envelope', async () => {
    const node = generateSealingKeyPair();
    const sealed = await sealedFor(node.publicKey);
    const [v, iv, ct, tag] = sealed.envelope.split('.') as [string, string, string, string];
    const variants: SealedEnv[] = [
      { ...sealed, enc: flip(sealed.enc) },
      { ...sealed, enc: flip(sealed.enc, 31) },
      { ...sealed, key: flip(sealed.key) },
      { ...sealed, key: flip(sealed.key, 40) },
      { ...sealed, envelope: [v, iv, flip(ct), tag].join('.') },
      { ...sealed, envelope: [v, flip(iv), ct, tag].join('.') },
      { ...sealed, envelope: [v, iv, ct, flip(tag)].join('.') },
    ];
    for (const variant of variants) {
      await expect(openSealedEnv(node.privateKey, variant, ctx)).rejects.toBeInstanceOf(SealError);
    }
  });

  it("refuses to open with another node's key", async () => {
    const node = generateSealingKeyPair();
    const other = generateSealingKeyPair();
    const sealed = await sealedFor(node.publicKey);
    await expect(openSealedEnv(other.privateKey, sealed, ctx)).rejects.toBeInstanceOf(SealError);
  });

  it('refuses to open for another job, task, attempt or node id', async () => {
    const node = generateSealingKeyPair();
    const sealed = await sealedFor(node.publicKey);
    for (const changed of [
      { ...ctx, jobId: 'j-2' },
      { ...ctx, taskId: 'j-1.1' },
      { ...ctx, attempt: 2 },
      { ...ctx, nodeId: 'n-2' },
    ]) {
      await expect(openSealedEnv(node.privateKey, sealed, changed)).rejects.toBeInstanceOf(SealError);
    }
  });

  it('refuses a malformed public key', async () => {
    await expect(hpkeSeal('short', Buffer.from('x'), 'i', 'a')).rejects.toBeInstanceOf(SealError);
  });

  it('seals result texts to a result key, bound to job, task and field, cut to fit', async () => {
    const key = generateSealingKeyPair();
    const rctx = { jobId: 'j-1', taskId: 'j-1.0', field: 'logTail' as const };
    const sealed = await sealResultText(key.publicKey, 'secret log line\n', rctx);
    expect(isSealedText(sealed)).toBe(true);
    expect(sealed).not.toContain('secret');
    expect(await openResultText(key.privateKey, sealed, rctx)).toBe('secret log line\n');
    await expect(openResultText(key.privateKey, sealed, { ...rctx, field: 'message' })).rejects.toBeInstanceOf(
      SealError,
    );
    await expect(openResultText(generateSealingKeyPair().privateKey, sealed, rctx)).rejects.toBeInstanceOf(SealError);
    const long = `${'a'.repeat(5000)}END`;
    const cut = await sealResultText(key.publicKey, long, rctx, 1024);
    expect(cut.length).toBeLessThanOrEqual(1024);
    const opened = await openResultText(key.privateKey, cut, rctx);
    expect(opened.endsWith('END')).toBe(true);
    expect(opened.length).toBeGreaterThan(600);
  });

  it('keyed digests depend on the key', () => {
    expect(keyedDigest(dataKey(), 'p', 'x')).not.toBe(keyedDigest(new Uint8Array(32), 'p', 'x'));
    expect(keyedDigest(dataKey(), 'p', 'x')).toBe(keyedDigest(dataKey(), 'p', 'x'));
  });
});
