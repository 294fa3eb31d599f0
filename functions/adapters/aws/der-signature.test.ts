import { generateKeyPairSync, randomBytes, sign, verify } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { SignerError } from '../../ports/signer.js';
import { parseDerSignature } from './der-signature.js';

/** Bytes from hex written with spaces between the DER elements, for reading. */
const bytes = (hex: string) => Buffer.from(hex.replaceAll(' ', ''), 'hex');
const ff32 = 'ff'.repeat(32);

describe('parseDerSignature', () => {
  it('reads r and s', () => {
    expect(parseDerSignature(bytes('30 06 0201 01 0201 7f'))).toEqual({ r: 1n, s: 127n });
  });

  it('reads integers whose top bit is set behind the leading zero DER requires', () => {
    expect(parseDerSignature(bytes(`30 46 0221 00${ff32} 0221 00${ff32}`))).toEqual({
      r: 2n ** 256n - 1n,
      s: 2n ** 256n - 1n,
    });
    expect(parseDerSignature(bytes('30 08 0202 0080 0202 00ff'))).toEqual({ r: 128n, s: 255n });
  });

  it('reads what an ECDSA signer produces, whatever the lengths of r and s', () => {
    const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'secp256k1' });
    for (let i = 0; i < 200; i++) {
      const message = randomBytes(32);
      const { r, s } = parseDerSignature(sign('sha256', message, { key: privateKey, dsaEncoding: 'der' }));
      // The same signature in fixed-width form verifies only if r and s were read right.
      const fixedWidth = Buffer.from(r.toString(16).padStart(64, '0') + s.toString(16).padStart(64, '0'), 'hex');
      expect(verify('sha256', message, { key: publicKey, dsaEncoding: 'ieee-p1363' }, fixedWidth)).toBe(true);
    }
  });

  it.each([
    ['empty input', '', /ends early/],
    ['a lone tag', '30', /ends early/],
    ['another tag than SEQUENCE', '31 06 0201 01 0201 01', /expected tag 0x30, found 0x31/],
    ['another tag than INTEGER', '30 06 0301 01 0201 01', /expected tag 0x2, found 0x3/],
    ['a single integer', '30 03 0201 01', /ends early/],
    ['an empty integer', '30 05 0200 0201 01', /empty integer/],
    ['a zero', '30 06 0201 00 0201 01', /zero integer/],
    ['a negative integer', '30 06 0201 80 0201 01', /negative integer/],
    ['a redundant leading zero', '30 07 0202 007f 0201 01', /redundant leading zero/],
    ['two leading zeros', `30 27 0222 0000${ff32} 0201 01`, /redundant leading zero/],
    ['an integer over 256 bits', `30 26 0221 01${ff32} 0201 01`, /longer than 256 bits/],
    ['a sequence length past the end', '30 07 0201 01 0201 01', /runs past the end/],
    ['a sequence length short of the end', '30 05 0201 01 0201 01', /1 trailing bytes/],
    ['an integer length past the sequence', '30 06 0201 01 0202 01', /runs past the end/],
    ['a length in long form', '30 8106 0201 01 0201 01', /long form/],
    ['an indefinite length', '30 80 0201 01 0201 01 0000', /long form/],
    ['a third integer', '30 09 0201 01 0201 01 0201 01', /3 trailing bytes/],
    ['trailing bytes', '30 06 0201 01 0201 01 00', /1 trailing bytes/],
  ])('refuses %s', (_, hex, reason) => {
    const parse = () => parseDerSignature(bytes(hex));
    expect(parse).toThrow(SignerError);
    expect(parse).toThrow(reason);
  });
});
