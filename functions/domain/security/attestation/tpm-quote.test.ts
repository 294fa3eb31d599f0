import { createHash, generateKeyPairSync, type KeyObject, sign } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { TpmQuoteEvidence } from '../../../../protocol/index.js';
import { refusal } from './refusal.test-support.js';
import { parseQuote, verifyTpmQuote } from './tpm-quote.js';

const nonce = '5a'.repeat(32);
const pcrValues = [0, 1, 7].map((index) => ({
  index,
  value: createHash('sha256').update(`pcr${index}`).digest('hex'),
}));

const u16 = (v: number) => Buffer.from([v >> 8, v & 0xff]);
const u32 = (v: number) => {
  const b = Buffer.alloc(4);
  b.writeUInt32BE(v);
  return b;
};
const sized = (b: Buffer) => Buffer.concat([u16(b.length), b]);

/** A marshalled TPMS_ATTEST of type quote, as a TPM would make it (Part 2, 10.12.12). */
function quoteMessage(options: { extraData?: string; pcrs?: number[]; digestOf?: string[]; type?: number } = {}) {
  const pcrs = options.pcrs ?? pcrValues.map((p) => p.index);
  const bitmap = Buffer.alloc(3);
  for (const i of pcrs) bitmap[i >> 3] = (bitmap[i >> 3] ?? 0) | (1 << (i & 7));
  const digest = createHash('sha256');
  for (const v of options.digestOf ?? pcrValues.map((p) => p.value)) digest.update(Buffer.from(v, 'hex'));
  return Buffer.concat([
    u32(0xff544347),
    u16(options.type ?? 0x8018),
    sized(Buffer.concat([u16(0x000b), Buffer.alloc(32, 7)])),
    sized(Buffer.from(options.extraData ?? nonce, 'hex')),
    Buffer.alloc(8, 1), // clock
    u32(3), // resetCount
    u32(1), // restartCount
    Buffer.from([1]), // safe
    Buffer.alloc(8, 2), // firmwareVersion
    u32(1), // one bank
    u16(0x000b),
    Buffer.from([3]),
    bitmap,
    sized(digest.digest()),
  ]);
}

function ecdsaSignature(key: KeyObject, message: Buffer, hashAlg = 0x000b) {
  const p1363 = sign('sha256', message, { key, dsaEncoding: 'ieee-p1363' });
  return Buffer.concat([u16(0x0018), u16(hashAlg), sized(p1363.subarray(0, 32)), sized(p1363.subarray(32))]);
}

function rsassaSignature(key: KeyObject, message: Buffer) {
  return Buffer.concat([u16(0x0014), u16(0x000b), sized(sign('sha256', message, key))]);
}

const ec = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const rsa = generateKeyPairSync('rsa', { modulusLength: 2048 });
const pem = (key: KeyObject) => key.export({ format: 'pem', type: 'spki' }).toString();

function evidence(message: Buffer, signature: Buffer, akPublicKey = pem(ec.publicKey)): TpmQuoteEvidence {
  return {
    type: 'tpm-quote',
    akPublicKey,
    message: message.toString('base64'),
    signature: signature.toString('base64'),
    pcrBank: 'sha256',
    pcrs: pcrValues,
  };
}

const settings = { requiredPcrs: [0, 7] };

describe('TPM 2.0 quote verifier', () => {
  it('parses a TPMS_ATTEST quote: nonce, PCR selection, digest', () => {
    const parsed = parseQuote(quoteMessage());
    expect(parsed.extraData.toString('hex')).toBe(nonce);
    expect(parsed.selections).toEqual([{ hash: 0x000b, pcrs: [0, 1, 7] }]);
    expect(parsed.resetCount).toBe(3);
  });

  it('accepts an ECDSA and an RSASSA quote over the nonce and returns the key to pin', () => {
    const message = quoteMessage();
    const verdict = verifyTpmQuote(
      evidence(message, ecdsaSignature(ec.privateKey, message)),
      nonce,
      undefined,
      settings,
    );
    expect(verdict).toMatchObject({ level: 'tpm', pcrs: { '0': pcrValues[0]?.value } });
    const rsaVerdict = verifyTpmQuote(
      evidence(message, rsassaSignature(rsa.privateKey, message), pem(rsa.publicKey)),
      nonce,
      undefined,
      settings,
    );
    expect(rsaVerdict.akSpki).not.toBe(verdict.akSpki);
    // The same key pinned: accepted; another pinned: refused before anything else.
    expect(
      verifyTpmQuote(evidence(message, ecdsaSignature(ec.privateKey, message)), nonce, verdict.akSpki, settings).level,
    ).toBe('tpm');
    expect(
      refusal(() =>
        verifyTpmQuote(evidence(message, ecdsaSignature(ec.privateKey, message)), nonce, rsaVerdict.akSpki, settings),
      ),
    ).toBe('ak_mismatch');
  });

  it('refuses a wrong nonce, a wrong PCR value, a missing required PCR and a mismatched selection', () => {
    const other = quoteMessage({ extraData: 'aa'.repeat(32) });
    expect(
      refusal(() => verifyTpmQuote(evidence(other, ecdsaSignature(ec.privateKey, other)), nonce, undefined, settings)),
    ).toBe('tpm_nonce_mismatch');
    const wrongDigest = quoteMessage({
      digestOf: ['00'.repeat(32), pcrValues[1]?.value ?? '', pcrValues[2]?.value ?? ''],
    });
    expect(
      refusal(() =>
        verifyTpmQuote(evidence(wrongDigest, ecdsaSignature(ec.privateKey, wrongDigest)), nonce, undefined, settings),
      ),
    ).toBe('tpm_pcr_digest_mismatch');
    const message = quoteMessage();
    const good = evidence(message, ecdsaSignature(ec.privateKey, message));
    expect(refusal(() => verifyTpmQuote(good, nonce, undefined, { requiredPcrs: [0, 7, 8] }))).toBe(
      'tpm_pcr_selection',
    );
    expect(refusal(() => verifyTpmQuote({ ...good, pcrs: pcrValues.slice(0, 2) }, nonce, undefined, settings))).toBe(
      'tpm_pcr_selection',
    );
    expect(
      refusal(() => verifyTpmQuote(good, nonce, undefined, { ...settings, expectedPcrs: { '7': '00'.repeat(32) } })),
    ).toBe('tpm_pcr_unexpected');
  });

  it('refuses a signature by another key, a non-quote, a SHA-1 signature and malformed bytes', () => {
    const message = quoteMessage();
    const stranger = generateKeyPairSync('ec', { namedCurve: 'P-256' });
    expect(
      refusal(() =>
        verifyTpmQuote(evidence(message, ecdsaSignature(stranger.privateKey, message)), nonce, undefined, settings),
      ),
    ).toBe('tpm_bad_signature');
    const certify = quoteMessage({ type: 0x8017 });
    expect(
      refusal(() =>
        verifyTpmQuote(evidence(certify, ecdsaSignature(ec.privateKey, certify)), nonce, undefined, settings),
      ),
    ).toBe('tpm_not_a_quote');
    expect(
      refusal(() =>
        verifyTpmQuote(evidence(message, ecdsaSignature(ec.privateKey, message, 0x0004)), nonce, undefined, settings),
      ),
    ).toBe('tpm_weak_hash');
    const truncated = message.subarray(0, message.length - 5);
    expect(
      refusal(() =>
        verifyTpmQuote(evidence(truncated, ecdsaSignature(ec.privateKey, truncated)), nonce, undefined, settings),
      ),
    ).toBe('tpm_malformed');
    const weak = generateKeyPairSync('rsa', { modulusLength: 1024 });
    expect(
      refusal(() =>
        verifyTpmQuote(
          evidence(message, rsassaSignature(weak.privateKey, message), pem(weak.publicKey)),
          nonce,
          undefined,
          settings,
        ),
      ),
    ).toBe('tpm_bad_key');
  });
});
