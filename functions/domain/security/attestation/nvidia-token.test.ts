import { generateKeyPairSync, type KeyObject, sign } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { verifyNvidiaToken } from './nvidia-token.js';
import { refusal } from './refusal.test-support.js';
import type { JsonWebKey, NvidiaTokenSettings } from './settings.js';

const now = Date.parse('2026-11-28T09:00:00Z');
const nonce = 'c0ffee'.repeat(10).slice(0, 64);

/** A fixture verifier key pair, as NRAS would hold one: P-384, published by kid. */
function fixtureKey(kid: string) {
  const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-384' });
  const jwk = { ...(publicKey.export({ format: 'jwk' }) as JsonWebKey), kid, alg: 'ES384', use: 'sig' };
  return { privateKey, jwk };
}

const b64 = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');

function token(
  key: KeyObject,
  claims: Record<string, unknown>,
  header: Record<string, unknown> = { alg: 'ES384', kid: 'nras-1', typ: 'JWT' },
) {
  const input = `${b64(header)}.${b64(claims)}`;
  const signature = sign('sha384', Buffer.from(input), { key, dsaEncoding: 'ieee-p1363' });
  return `${input}.${signature.toString('base64url')}`;
}

const goodClaims = (overrides: Record<string, unknown> = {}) => ({
  iss: 'https://nras.attestation.nvidia.com',
  iat: now / 1000 - 5,
  nbf: now / 1000 - 5,
  exp: now / 1000 + 3600,
  eat_nonce: nonce,
  'x-nvidia-overall-att-result': true,
  'x-nvidia-ver': '2.0',
  ...overrides,
});

const signer = fixtureKey('nras-1');
const settings: NvidiaTokenSettings = {
  jwks: { keys: [signer.jwk] },
  algorithms: ['ES384'],
  issuer: 'https://nras.attestation.nvidia.com',
  leewaySeconds: 30,
};

describe('NVIDIA attestation token verifier', () => {
  it('accepts a token signed by a known key for this nonce with a passing overall result', () => {
    const verdict = verifyNvidiaToken(token(signer.privateKey, goodClaims()), nonce, settings, now);
    expect(verdict.level).toBe('gpu');
    expect(verdict.claims['x-nvidia-ver']).toBe('2.0');
  });

  it('refuses a token for another nonce', () => {
    const other = token(signer.privateKey, goodClaims({ eat_nonce: 'ab'.repeat(32) }));
    expect(refusal(() => verifyNvidiaToken(other, nonce, settings, now))).toBe('token_nonce_mismatch');
  });

  it('refuses an expired token, and one without exp', () => {
    const expired = token(signer.privateKey, goodClaims({ exp: now / 1000 - 31 }));
    expect(refusal(() => verifyNvidiaToken(expired, nonce, settings, now))).toBe('token_expired');
    const noExp = token(signer.privateKey, goodClaims({ exp: undefined }));
    expect(refusal(() => verifyNvidiaToken(noExp, nonce, settings, now))).toBe('token_expired');
    // Within the leeway it still holds.
    const justExpired = token(signer.privateKey, goodClaims({ exp: now / 1000 - 10 }));
    expect(verifyNvidiaToken(justExpired, nonce, settings, now).level).toBe('gpu');
  });

  it('refuses a token that is not valid yet', () => {
    const future = token(signer.privateKey, goodClaims({ nbf: now / 1000 + 600 }));
    expect(refusal(() => verifyNvidiaToken(future, nonce, settings, now))).toBe('token_not_yet_valid');
  });

  it('refuses an unknown kid, and a token signed by a key outside the set under a known kid', () => {
    const unknown = token(signer.privateKey, goodClaims(), { alg: 'ES384', kid: 'someone-else' });
    expect(refusal(() => verifyNvidiaToken(unknown, nonce, settings, now))).toBe('token_unknown_kid');
    const impostor = fixtureKey('nras-1');
    expect(refusal(() => verifyNvidiaToken(token(impostor.privateKey, goodClaims()), nonce, settings, now))).toBe(
      'token_bad_signature',
    );
  });

  it('refuses alg none, HMAC and algorithms outside the allow-list', () => {
    const unsigned = `${b64({ alg: 'none', kid: 'nras-1' })}.${b64(goodClaims())}.`;
    expect(refusal(() => verifyNvidiaToken(unsigned, nonce, settings, now))).toBe('token_alg_refused');
    const noneAllowed = { ...settings, algorithms: ['none', 'ES384'] };
    expect(refusal(() => verifyNvidiaToken(unsigned, nonce, noneAllowed, now))).toBe('token_alg_refused');
    const hmac = `${b64({ alg: 'HS256', kid: 'nras-1' })}.${b64(goodClaims())}.c2ln`;
    expect(refusal(() => verifyNvidiaToken(hmac, nonce, { ...settings, algorithms: ['HS256'] }, now))).toBe(
      'token_alg_refused',
    );
    const es256 = token(signer.privateKey, goodClaims(), { alg: 'ES256', kid: 'nras-1' });
    expect(refusal(() => verifyNvidiaToken(es256, nonce, settings, now))).toBe('token_alg_refused');
  });

  it('refuses a tampered payload', () => {
    const [header, , signature] = token(signer.privateKey, goodClaims()).split('.');
    const tampered = `${header}.${b64(goodClaims({ 'x-nvidia-overall-att-result': true, eat_nonce: nonce, hwmodel: 'H100' }))}.${signature}`;
    expect(refusal(() => verifyNvidiaToken(tampered, nonce, settings, now))).toBe('token_bad_signature');
    const parts = token(signer.privateKey, goodClaims()).split('.');
    const flipped = Buffer.from(parts[2] ?? '', 'base64url');
    flipped[0] = (flipped[0] ?? 0) ^ 1;
    const badSig = `${parts[0]}.${parts[1]}.${flipped.toString('base64url')}`;
    expect(refusal(() => verifyNvidiaToken(badSig, nonce, settings, now))).toBe('token_bad_signature');
  });

  it('refuses a failed overall result, a wrong issuer, no key set, and garbage', () => {
    const failed = token(signer.privateKey, goodClaims({ 'x-nvidia-overall-att-result': false }));
    expect(refusal(() => verifyNvidiaToken(failed, nonce, settings, now))).toBe('token_result_failed');
    const issuer = token(signer.privateKey, goodClaims({ iss: 'https://evil.example' }));
    expect(refusal(() => verifyNvidiaToken(issuer, nonce, settings, now))).toBe('token_wrong_issuer');
    const good = token(signer.privateKey, goodClaims());
    const { jwks: _ignored, ...noKeys } = settings;
    expect(refusal(() => verifyNvidiaToken(good, nonce, noKeys, now))).toBe('token_no_keys');
    expect(refusal(() => verifyNvidiaToken('a.b.c', nonce, settings, now))).toBe('token_malformed');
    expect(refusal(() => verifyNvidiaToken('abc', nonce, settings, now))).toBe('token_malformed');
  });

  it('refuses a key of the set declared for another algorithm or curve', () => {
    const p256 = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    const jwk = { ...(p256.publicKey.export({ format: 'jwk' }) as JsonWebKey), kid: 'p256' };
    const withP256 = { ...settings, jwks: { keys: [signer.jwk, jwk] } };
    const t = token(p256.privateKey, goodClaims(), { alg: 'ES384', kid: 'p256' });
    expect(refusal(() => verifyNvidiaToken(t, nonce, withP256, now))).toBe('token_key_mismatch');
  });
});
