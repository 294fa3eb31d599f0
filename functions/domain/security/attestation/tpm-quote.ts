import { constants, createHash, createPublicKey, type KeyObject, timingSafeEqual, verify } from 'node:crypto';
import type { TpmQuoteEvidence } from '../../../../protocol/index.js';
import { AttestationRefusedError } from './errors.js';
import type { TpmQuoteSettings } from './settings.js';

/** TPM_GENERATED_VALUE: every structure the TPM signs itself starts with it. */
const tpmGenerated = 0xff544347;
/** TPM_ST_ATTEST_QUOTE. */
const attestQuote = 0x8018;
/** TPM_ALG_* identifiers (TPM 2.0 Library, Part 2, table 9). */
const alg = {
  sha1: 0x0004,
  sha256: 0x000b,
  sha384: 0x000c,
  sha512: 0x000d,
  rsassa: 0x0014,
  rsapss: 0x0016,
  ecdsa: 0x0018,
};
const hashNames: Record<number, string> = {
  [alg.sha1]: 'sha1',
  [alg.sha256]: 'sha256',
  [alg.sha384]: 'sha384',
  [alg.sha512]: 'sha512',
};

/** The parts of a TPMS_ATTEST of type quote that a verifier checks. */
export interface ParsedQuote {
  /** The TPM2B_NAME of the signing key as the TPM names it. */
  qualifiedSigner: Buffer;
  /** The qualifying data the quote was asked for: the challenge nonce. */
  extraData: Buffer;
  clock: bigint;
  resetCount: number;
  restartCount: number;
  safe: boolean;
  firmwareVersion: bigint;
  /** The PCR selection, one entry per bank. */
  selections: { hash: number; pcrs: number[] }[];
  pcrDigest: Buffer;
}

/** A TPMT_SIGNATURE of the schemes a quote key may use. */
export type ParsedSignature =
  | { scheme: 'rsassa' | 'rsapss'; hash: string; signature: Buffer }
  | { scheme: 'ecdsa'; hash: string; r: Buffer; s: Buffer };

/** Big-endian reader over a marshalled TPM structure; every overrun is a refusal, never an exception. */
class Reader {
  private offset = 0;
  constructor(
    private readonly bytes: Buffer,
    private readonly what: string,
  ) {}
  u8(): number {
    this.need(1);
    return this.bytes.readUInt8(this.offset++);
  }
  u16(): number {
    this.need(2);
    const v = this.bytes.readUInt16BE(this.offset);
    this.offset += 2;
    return v;
  }
  u32(): number {
    this.need(4);
    const v = this.bytes.readUInt32BE(this.offset);
    this.offset += 4;
    return v;
  }
  u64(): bigint {
    this.need(8);
    const v = this.bytes.readBigUInt64BE(this.offset);
    this.offset += 8;
    return v;
  }
  take(n: number): Buffer {
    this.need(n);
    const v = this.bytes.subarray(this.offset, this.offset + n);
    this.offset += n;
    return Buffer.from(v);
  }
  /** A TPM2B: a 16-bit size and that many bytes. */
  sized(max: number): Buffer {
    const size = this.u16();
    if (size > max) throw malformed(this.what, `a sized field of ${size} bytes (at most ${max})`);
    return this.take(size);
  }
  end(): void {
    if (this.offset !== this.bytes.length) {
      throw malformed(this.what, `${this.bytes.length - this.offset} trailing bytes`);
    }
  }
  private need(n: number): void {
    if (this.offset + n > this.bytes.length) throw malformed(this.what, 'it ends early');
  }
}

const malformed = (what: string, why: string) =>
  new AttestationRefusedError('tpm_malformed', `the ${what} is not well-formed: ${why}`, 'tpm-quote');

/** Parses a marshalled TPMS_ATTEST and refuses anything but a TPM-generated quote. */
export function parseQuote(message: Buffer): ParsedQuote {
  const r = new Reader(message, 'TPMS_ATTEST');
  if (r.u32() !== tpmGenerated) {
    throw new AttestationRefusedError(
      'tpm_not_generated',
      'the quote does not start with TPM_GENERATED_VALUE (ff544347)',
      'tpm-quote',
    );
  }
  if (r.u16() !== attestQuote) {
    throw new AttestationRefusedError(
      'tpm_not_a_quote',
      'the attestation structure is not a quote (type 8018)',
      'tpm-quote',
    );
  }
  const qualifiedSigner = r.sized(2 + 64);
  const extraData = r.sized(64);
  const clock = r.u64();
  const resetCount = r.u32();
  const restartCount = r.u32();
  const safe = r.u8() === 1;
  const firmwareVersion = r.u64();
  const count = r.u32();
  if (count > 16) throw malformed('TPMS_ATTEST', `${count} PCR banks selected`);
  const selections: ParsedQuote['selections'] = [];
  for (let i = 0; i < count; i++) {
    const hash = r.u16();
    const size = r.u8();
    if (size > 8) throw malformed('TPMS_ATTEST', `a PCR bitmap of ${size} bytes`);
    const bitmap = r.take(size);
    const pcrs: number[] = [];
    for (let byte = 0; byte < size; byte++) {
      for (let bit = 0; bit < 8; bit++) if (((bitmap[byte] ?? 0) >> bit) & 1) pcrs.push(byte * 8 + bit);
    }
    selections.push({ hash, pcrs });
  }
  const pcrDigest = r.sized(64);
  r.end();
  return { qualifiedSigner, extraData, clock, resetCount, restartCount, safe, firmwareVersion, selections, pcrDigest };
}

/** Parses a TPMT_SIGNATURE (RSASSA, RSAPSS or ECDSA). */
export function parseSignature(bytes: Buffer): ParsedSignature {
  const r = new Reader(bytes, 'TPMT_SIGNATURE');
  const scheme = r.u16();
  const hash = hashNames[r.u16()];
  if (hash === undefined || hash === 'sha1') {
    throw new AttestationRefusedError('tpm_weak_hash', 'the quote signature must use SHA-256 or stronger', 'tpm-quote');
  }
  let parsed: ParsedSignature;
  if (scheme === alg.rsassa || scheme === alg.rsapss) {
    parsed = { scheme: scheme === alg.rsassa ? 'rsassa' : 'rsapss', hash, signature: r.sized(1024) };
  } else if (scheme === alg.ecdsa) {
    parsed = { scheme: 'ecdsa', hash, r: r.sized(128), s: r.sized(128) };
  } else {
    throw new AttestationRefusedError(
      'tpm_unsupported_signature',
      `signature scheme 0x${scheme.toString(16)} is not RSASSA, RSAPSS or ECDSA`,
      'tpm-quote',
    );
  }
  r.end();
  return parsed;
}

/** The attestation key from its SPKI PEM; RSA of at least 2048 bits or EC P-256/P-384. */
export function parseAttestationKey(pem: string): KeyObject {
  let key: KeyObject;
  try {
    key = createPublicKey({ key: pem, format: 'pem' });
  } catch {
    throw new AttestationRefusedError(
      'tpm_bad_key',
      'the attestation key is not a readable SPKI public key',
      'tpm-quote',
    );
  }
  const details = key.asymmetricKeyDetails ?? {};
  const ok =
    (key.asymmetricKeyType === 'rsa' && (details.modulusLength ?? 0) >= 2048) ||
    (key.asymmetricKeyType === 'ec' && ['prime256v1', 'secp384r1'].includes(details.namedCurve ?? ''));
  if (!ok) {
    throw new AttestationRefusedError(
      'tpm_bad_key',
      'the attestation key must be RSA >= 2048 bits or EC P-256/P-384',
      'tpm-quote',
    );
  }
  return key;
}

/** The key's SPKI DER, base64: what is pinned to the node and compared later. */
export const spkiOf = (key: KeyObject): string => key.export({ format: 'der', type: 'spki' }).toString('base64');

/** Checks the signature over the quote message with the attestation key. */
export function verifyQuoteSignature(message: Buffer, signature: ParsedSignature, key: KeyObject): boolean {
  try {
    if (signature.scheme === 'ecdsa') {
      if (key.asymmetricKeyType !== 'ec') return false;
      const size = key.asymmetricKeyDetails?.namedCurve === 'secp384r1' ? 48 : 32;
      if (signature.r.length > size || signature.s.length > size) return false;
      const p1363 = Buffer.concat([leftPad(signature.r, size), leftPad(signature.s, size)]);
      return verify(signature.hash, message, { key, dsaEncoding: 'ieee-p1363' }, p1363);
    }
    if (key.asymmetricKeyType !== 'rsa') return false;
    if (signature.scheme === 'rsapss') {
      return verify(
        signature.hash,
        message,
        { key, padding: constants.RSA_PKCS1_PSS_PADDING, saltLength: constants.RSA_PSS_SALTLEN_AUTO },
        signature.signature,
      );
    }
    return verify(signature.hash, message, key, signature.signature);
  } catch {
    return false;
  }
}

const leftPad = (bytes: Buffer, size: number): Buffer =>
  bytes.length >= size ? bytes : Buffer.concat([Buffer.alloc(size - bytes.length), bytes]);

export interface TpmQuoteVerdict {
  level: 'tpm';
  /** The key to pin (first quote) or that was found pinned. */
  akSpki: string;
  /** The attested sha256 PCR values by index. */
  pcrs: Record<string, string>;
}

/**
 * Verifies a TPM 2.0 quote answering `nonce`, in this order: the attestation key is readable and
 * is the one pinned to the node (if one is); the TPMT_SIGNATURE verifies over the TPMS_ATTEST with
 * that key; the TPMS_ATTEST is a TPM-generated quote whose extraData is the nonce; it selects
 * exactly the sha256 PCRs given, covering every required one; sha256 over their values in index
 * order equals its pcrDigest; and each value with a reference value equals it.
 *
 * What this does not prove: that the key lives in a genuine TPM. That takes the EK certificate
 * chain to the manufacturer's CA and a credential activation (tpm2_makecredential /
 * tpm2_activatecredential) binding the AK to the EK; both are out of scope. The first accepted
 * key is pinned to the node instead (trust on first use), so a later quote from another key is
 * refused.
 */
export function verifyTpmQuote(
  evidence: TpmQuoteEvidence,
  nonce: string,
  pinnedSpki: string | undefined,
  settings: TpmQuoteSettings,
): TpmQuoteVerdict {
  const key = parseAttestationKey(evidence.akPublicKey);
  const akSpki = spkiOf(key);
  if (pinnedSpki !== undefined && pinnedSpki !== akSpki) {
    throw new AttestationRefusedError(
      'ak_mismatch',
      'the quote is signed by an attestation key other than the one pinned to this node on its first quote',
      'tpm-quote',
    );
  }
  const message = Buffer.from(evidence.message, 'base64');
  const signature = parseSignature(Buffer.from(evidence.signature, 'base64'));
  if (!verifyQuoteSignature(message, signature, key)) {
    throw new AttestationRefusedError(
      'tpm_bad_signature',
      'the quote signature does not verify with the attestation key',
      'tpm-quote',
    );
  }
  const quote = parseQuote(message);
  const expected = Buffer.from(nonce, 'hex');
  if (quote.extraData.length !== expected.length || !timingSafeEqual(quote.extraData, expected)) {
    throw new AttestationRefusedError(
      'tpm_nonce_mismatch',
      "the quote's qualifying data is not this challenge's nonce",
      'tpm-quote',
    );
  }
  const banks = quote.selections.filter((s) => s.pcrs.length > 0);
  const bank = banks[0];
  if (banks.length !== 1 || bank === undefined || bank.hash !== alg.sha256) {
    throw new AttestationRefusedError(
      'tpm_pcr_selection',
      'the quote must select PCRs of the sha256 bank only',
      'tpm-quote',
    );
  }
  const given = [...evidence.pcrs].sort((a, b) => a.index - b.index);
  const givenIndices = given.map((p) => p.index);
  if (givenIndices.join(',') !== bank.pcrs.join(',')) {
    throw new AttestationRefusedError(
      'tpm_pcr_selection',
      `the quote selects PCRs ${bank.pcrs.join(',')} but values were given for ${givenIndices.join(',')}`,
      'tpm-quote',
    );
  }
  const missing = settings.requiredPcrs.filter((i) => !bank.pcrs.includes(i));
  if (missing.length > 0) {
    throw new AttestationRefusedError(
      'tpm_pcr_selection',
      `the quote must cover PCRs ${missing.join(',')}`,
      'tpm-quote',
    );
  }
  const digest = createHash('sha256');
  for (const pcr of given) digest.update(Buffer.from(pcr.value, 'hex'));
  if (!digest.digest().equals(quote.pcrDigest)) {
    throw new AttestationRefusedError(
      'tpm_pcr_digest_mismatch',
      "the PCR values given do not hash to the quote's pcrDigest",
      'tpm-quote',
    );
  }
  const pcrs = Object.fromEntries(given.map((p) => [String(p.index), p.value]));
  for (const [index, value] of Object.entries(settings.expectedPcrs ?? {})) {
    if (pcrs[index] !== undefined && pcrs[index] !== value.toLowerCase()) {
      throw new AttestationRefusedError(
        'tpm_pcr_unexpected',
        `PCR ${index} is ${pcrs[index]}, not its reference value ${value.toLowerCase()}`,
        'tpm-quote',
      );
    }
    if (pcrs[index] === undefined) {
      throw new AttestationRefusedError(
        'tpm_pcr_selection',
        `the quote must cover PCR ${index}, which has a reference value`,
        'tpm-quote',
      );
    }
  }
  return { level: 'tpm', akSpki, pcrs };
}
