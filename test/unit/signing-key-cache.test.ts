import { describe, expect, it } from 'vitest';
import {
  canonicalRequest,
  generateNodeKeyPair,
  loadNodeKeyPair,
  nodeIdFromPublicKey,
  publicKeyObject,
  signatureHeaders,
  signRequest,
  VerifiedKeyCache,
  verifiedKeys,
  verifySignature,
} from '../../protocol/index.js';

const newPair = () => loadNodeKeyPair(generateNodeKeyPair().privateKeyPem);

function signed(pair: ReturnType<typeof newPair>, body: string) {
  const req = { method: 'POST', pathWithQuery: '/v1/nodes/x/heartbeat', body };
  const h = signRequest(pair, nodeIdFromPublicKey(pair.publicKey), req, 1_700_000_000_000);
  const message = canonicalRequest('POST', req.pathWithQuery, 1_700_000_000_000, h[signatureHeaders.nonce] ?? '', body);
  return { message, signature: h[signatureHeaders.signature] ?? '' };
}

describe('verified key cache', () => {
  it('keeps verifying exactly once a key is cached: other messages and other keys still fail', () => {
    const pair = newPair();
    const first = signed(pair, '{"tasks":[]}');
    expect(verifySignature(pair.publicKey, first.message, first.signature)).toBe(true);
    expect(verifiedKeys.get(pair.publicKey)).toBeDefined();
    // Served from the cache now.
    const second = signed(pair, '{"tasks":[1]}');
    expect(verifySignature(pair.publicKey, second.message, second.signature)).toBe(true);
    expect(verifySignature(pair.publicKey, second.message, first.signature)).toBe(false);
    expect(verifySignature(pair.publicKey, first.message, 'not base64')).toBe(false);
    const other = newPair();
    expect(verifySignature(other.publicKey, first.message, first.signature)).toBe(false);
  });

  it('remembers only keys whose signature verified', () => {
    const pair = newPair();
    const stranger = newPair();
    const { message, signature } = signed(pair, '{}');
    expect(verifySignature(stranger.publicKey, message, signature)).toBe(false);
    expect(verifiedKeys.get(stranger.publicKey)).toBeUndefined();
    // Not a key at all: refused, nothing cached.
    expect(verifySignature('short', message, signature)).toBe(false);
    expect(verifiedKeys.get('short')).toBeUndefined();
  });

  it('holds at most its capacity, dropping the least recently used key first', () => {
    const cache = new VerifiedKeyCache(2);
    const [a, b, c] = [newPair(), newPair(), newPair()].map((p) => p.publicKey) as [string, string, string];
    cache.remember(a, publicKeyObject(a));
    cache.remember(b, publicKeyObject(b));
    expect(cache.get(a)).toBeDefined(); // a is now the most recently used
    cache.remember(c, publicKeyObject(c));
    expect(cache.size).toBe(2);
    expect(cache.get(b)).toBeUndefined();
    expect(cache.get(a)).toBeDefined();
    expect(cache.get(c)).toBeDefined();
  });
});
