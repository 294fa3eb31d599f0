import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';

/**
 * The payload envelope: AES-256-GCM under a 32-byte data key, with additional authenticated data
 * binding it to its context (job id). Serialised as `v1.<iv>.<ciphertext>.<tag>` in base64url.
 * The same format is used whichever Keys adapter wrapped the data key.
 */
export function sealEnvelope(dataKey: Uint8Array, plaintext: Uint8Array, aad: string): string {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', dataKey, iv);
  cipher.setAAD(Buffer.from(aad));
  const ct = Buffer.concat([cipher.update(plaintext), cipher.final()]);
  return ['v1', iv, ct, cipher.getAuthTag()]
    .map((p) => (typeof p === 'string' ? p : p.toString('base64url')))
    .join('.');
}

export class EnvelopeError extends Error {
  override name = 'EnvelopeError';
}

export function openEnvelope(dataKey: Uint8Array, envelope: string, aad: string): Buffer {
  const [version, iv, ct, tag, ...rest] = envelope.split('.');
  if (version !== 'v1' || iv === undefined || ct === undefined || tag === undefined || rest.length > 0) {
    throw new EnvelopeError('malformed envelope');
  }
  try {
    // Without an explicit tag length, node accepts a truncated tag, which weakens the authentication.
    const decipher = createDecipheriv('aes-256-gcm', dataKey, Buffer.from(iv, 'base64url'), { authTagLength: 16 });
    decipher.setAAD(Buffer.from(aad));
    decipher.setAuthTag(Buffer.from(tag, 'base64url'));
    return Buffer.concat([decipher.update(Buffer.from(ct, 'base64url')), decipher.final()]);
  } catch (cause) {
    throw new EnvelopeError('envelope does not open with this key and context', { cause });
  }
}
