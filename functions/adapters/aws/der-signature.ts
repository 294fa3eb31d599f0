/**
 * A strict reader of the DER form KMS answers ECDSA signatures in: `SEQUENCE { INTEGER r,
 * INTEGER s }` (RFC 3279). Strict because a lenient reader lets one signature take several
 * encodings, and because anything else from KMS means the answer is not what was asked for.
 *
 * @module
 */
import { SignerError } from '../../ports/signer.js';

const sequenceTag = 0x30;
const integerTag = 0x02;
/** r and s are below the order of a 256-bit curve. */
const maxValueBytes = 32;

/**
 * Reads `r` and `s` from a DER-encoded ECDSA signature of a 256-bit curve. Refuses, with
 * {@link SignerError}, anything but exactly that: another tag, a length that is not minimal or
 * does not match, a negative or zero-padded integer, an integer over 256 bits, trailing bytes.
 * Whether r and s lie in the curve's range is the caller's check.
 */
export function parseDerSignature(der: Uint8Array): { r: bigint; s: bigint } {
  const reader = new DerReader(der);
  const sequence = new DerReader(reader.read(sequenceTag));
  reader.end();
  const r = sequence.readPositiveInteger();
  const s = sequence.readPositiveInteger();
  sequence.end();
  return { r, s };
}

/** Reads tag-length-value elements one after the other from a byte string. */
class DerReader {
  readonly #bytes: Uint8Array;
  #offset = 0;

  constructor(bytes: Uint8Array) {
    this.#bytes = bytes;
  }

  /** The contents of the next element, which must have `tag`. */
  read(tag: number): Uint8Array {
    const [actualTag, length] = [this.#byte(), this.#byte()];
    if (actualTag !== tag) {
      throw malformed(`expected tag 0x${tag.toString(16)}, found 0x${actualTag.toString(16)}`);
    }
    // Long form is only DER for lengths of 128 and more, and no 256-bit signature is that long.
    if (length >= 0x80) {
      throw malformed('length in long form');
    }
    if (this.#offset + length > this.#bytes.length) {
      throw malformed('length runs past the end');
    }
    const contents = this.#bytes.subarray(this.#offset, this.#offset + length);
    this.#offset += length;
    return contents;
  }

  /** The next element as an INTEGER greater than zero of at most 256 bits. */
  readPositiveInteger(): bigint {
    const contents = this.read(integerTag);
    const [first, second] = contents;
    if (first === undefined) {
      throw malformed('empty integer');
    }
    if (first & 0x80) {
      throw malformed('negative integer');
    }
    // A leading zero byte is only allowed to keep the next byte's top bit from reading as a sign.
    if (first === 0 && (second === undefined || !(second & 0x80))) {
      throw malformed(second === undefined ? 'zero integer' : 'integer with a redundant leading zero');
    }
    const magnitude = first === 0 ? contents.subarray(1) : contents;
    if (magnitude.length > maxValueBytes) {
      throw malformed('integer longer than 256 bits');
    }
    return BigInt(`0x${Buffer.from(magnitude).toString('hex')}`);
  }

  /** Checks that nothing follows the elements read. */
  end(): void {
    if (this.#offset !== this.#bytes.length) {
      throw malformed(`${this.#bytes.length - this.#offset} trailing bytes`);
    }
  }

  #byte(): number {
    const byte = this.#bytes[this.#offset];
    if (byte === undefined) {
      throw malformed('ends early');
    }
    this.#offset += 1;
    return byte;
  }
}

function malformed(reason: string): SignerError {
  return new SignerError(`KMS signature is not a DER SEQUENCE of two integers: ${reason}`);
}
