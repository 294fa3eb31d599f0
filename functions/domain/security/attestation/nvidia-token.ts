import { type JsonWebKey as CryptoJwk, constants, createPublicKey, type KeyObject, verify } from 'node:crypto';
import { AttestationRefusedError } from './errors.js';
import type { JsonWebKey, NvidiaTokenSettings } from './settings.js';

/** The JWS algorithms this verifier can check, with the key type, hash and signature encoding each needs. */
const algorithms: Record<string, { kty: 'EC' | 'RSA'; hash: string; crv?: string; pss?: boolean }> = {
  ES256: { kty: 'EC', hash: 'sha256', crv: 'P-256' },
  ES384: { kty: 'EC', hash: 'sha384', crv: 'P-384' },
  ES512: { kty: 'EC', hash: 'sha512', crv: 'P-521' },
  RS256: { kty: 'RSA', hash: 'sha256' },
  RS384: { kty: 'RSA', hash: 'sha384' },
  RS512: { kty: 'RSA', hash: 'sha512' },
  PS256: { kty: 'RSA', hash: 'sha256', pss: true },
  PS384: { kty: 'RSA', hash: 'sha384', pss: true },
  PS512: { kty: 'RSA', hash: 'sha512', pss: true },
};

/** The claim that carries the challenge nonce in NVIDIA's attestation tokens (an EAT nonce). */
export const nvidiaNonceClaim = 'eat_nonce';
/** The claim that says every GPU's evidence passed NVIDIA's appraisal. */
export const nvidiaResultClaim = 'x-nvidia-overall-att-result';

export interface NvidiaTokenVerdict {
  level: 'gpu';
  claims: Record<string, unknown>;
}

const refuse = (code: string, message: string) => new AttestationRefusedError(code, message, 'nvidia-gpu-token');

/**
 * Verifies an NVIDIA attestation token (the overall JWT of NRAS or the local verifier) for
 * `nonce` at `nowMs`, in this order: three base64url parts with JSON header and payload; `alg` in
 * the allow-list and one this verifier implements (`none` and HMAC never are); `kid` names a key of
 * the configured set whose type, curve and declared `alg` fit; the signature verifies; `exp` is
 * present and not past, `nbf` and `iat` not in the future (with the configured leeway); `iss`
 * equals the configured issuer, if one is set; `eat_nonce` equals the nonce; and
 * `x-nvidia-overall-att-result` is `true`.
 *
 * The per-GPU detached tokens (`submods`) are not checked: the overall result claim covers them.
 */
export function verifyNvidiaToken(
  token: string,
  nonce: string,
  settings: NvidiaTokenSettings,
  nowMs: number,
): NvidiaTokenVerdict {
  const parts = token.split('.');
  if (parts.length !== 3) throw refuse('token_malformed', 'the token is not a compact JWS of three parts');
  const [headerPart = '', payloadPart = '', signaturePart = ''] = parts;
  const header = decodeJson(headerPart, 'header');
  const claims = decodeJson(payloadPart, 'payload');

  const algName = header.alg;
  if (typeof algName !== 'string' || algName.toLowerCase() === 'none' || algName.startsWith('HS')) {
    throw refuse('token_alg_refused', `alg ${JSON.stringify(algName)} is never accepted`);
  }
  const algorithm = algorithms[algName];
  if (!settings.algorithms.includes(algName) || algorithm === undefined) {
    throw refuse('token_alg_refused', `alg ${algName} is not one of the accepted ${settings.algorithms.join(', ')}`);
  }
  if (header.crit !== undefined)
    throw refuse('token_malformed', 'the token has critical header parameters this verifier does not know');
  if (settings.jwks === undefined || settings.jwks.keys.length === 0) {
    throw refuse('token_no_keys', 'this control plane has no NVIDIA attestation key set configured');
  }
  const kid = header.kid;
  if (typeof kid !== 'string') throw refuse('token_unknown_kid', 'the token names no key (kid)');
  const jwk = settings.jwks.keys.find((k) => k.kid === kid);
  if (jwk === undefined)
    throw refuse('token_unknown_kid', `kid ${JSON.stringify(kid)} is not in the configured key set`);
  const key = keyFor(jwk, algName, algorithm);

  const signature = Buffer.from(signaturePart, 'base64url');
  const signingInput = Buffer.from(`${headerPart}.${payloadPart}`, 'ascii');
  let valid = false;
  try {
    valid =
      algorithm.kty === 'EC'
        ? verify(algorithm.hash, signingInput, { key, dsaEncoding: 'ieee-p1363' }, signature)
        : verify(
            algorithm.hash,
            signingInput,
            algorithm.pss
              ? { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_DIGEST }
              : key,
            signature,
          );
  } catch {
    valid = false;
  }
  if (!valid) throw refuse('token_bad_signature', 'the token signature does not verify with its key');

  const now = nowMs / 1000;
  const leeway = settings.leewaySeconds;
  const exp = claims.exp;
  if (typeof exp !== 'number') throw refuse('token_expired', 'the token has no exp claim');
  if (exp + leeway <= now) throw refuse('token_expired', `the token expired at ${new Date(exp * 1000).toISOString()}`);
  if (claims.nbf !== undefined && (typeof claims.nbf !== 'number' || claims.nbf - leeway > now)) {
    throw refuse('token_not_yet_valid', 'the token is not valid yet (nbf)');
  }
  if (claims.iat !== undefined && (typeof claims.iat !== 'number' || claims.iat - leeway > now)) {
    throw refuse('token_not_yet_valid', 'the token was issued in the future (iat)');
  }
  if (settings.issuer !== undefined && claims.iss !== settings.issuer) {
    throw refuse('token_wrong_issuer', `the token's issuer is ${JSON.stringify(claims.iss)}, not ${settings.issuer}`);
  }
  if (claims[nvidiaNonceClaim] !== nonce) {
    throw refuse('token_nonce_mismatch', `the token's ${nvidiaNonceClaim} is not this challenge's nonce`);
  }
  if (claims[nvidiaResultClaim] !== true) {
    throw refuse(
      'token_result_failed',
      `the token's ${nvidiaResultClaim} is not true: the GPU evidence did not pass appraisal`,
    );
  }
  return { level: 'gpu', claims };
}

function decodeJson(part: string, what: string): Record<string, unknown> {
  try {
    const value: unknown = JSON.parse(Buffer.from(part, 'base64url').toString('utf8'));
    if (value !== null && typeof value === 'object' && !Array.isArray(value)) return value as Record<string, unknown>;
  } catch {
    // refused below
  }
  throw refuse('token_malformed', `the token ${what} is not a base64url JSON object`);
}

function keyFor(jwk: JsonWebKey, algName: string, algorithm: { kty: string; crv?: string }): KeyObject {
  if (jwk.kty !== algorithm.kty || (algorithm.crv !== undefined && jwk.crv !== algorithm.crv)) {
    throw refuse('token_key_mismatch', `key ${jwk.kid} (${jwk.kty} ${jwk.crv ?? ''}) cannot verify ${algName}`);
  }
  if ((jwk.alg !== undefined && jwk.alg !== algName) || (jwk.use !== undefined && jwk.use !== 'sig')) {
    throw refuse(
      'token_key_mismatch',
      `key ${jwk.kid} is declared for ${jwk.alg ?? jwk.use}, not ${algName} signatures`,
    );
  }
  try {
    const { kty, crv, x, y, n, e } = jwk;
    const publicOnly = Object.fromEntries(Object.entries({ kty, crv, x, y, n, e }).filter(([, v]) => v !== undefined));
    return createPublicKey({ key: publicOnly as CryptoJwk, format: 'jwk' });
  } catch {
    throw refuse('token_key_mismatch', `key ${jwk.kid} in the configured key set is not a usable public key`);
  }
}
