import { randomBytes } from 'node:crypto';
import { canonicalJson } from '../../../protocol/canonical-json.js';
import { openEnvelope, sealEnvelope } from '../../../protocol/envelope.js';
import { type DataKey, type EncryptionContext, type Keys, KeyUnwrapError } from '../../ports/keys.js';
import { readOrCreateKeyFile } from './key-file.js';

/** Identifies keys wrapped by this adapter, and the version of its format. */
const wrappedPrefix = 'local1.';
const keyBytes = 32;
/** AES-GCM's full tag. */
const tagBytes = 16;

/**
 * The {@link Keys} port without a KMS: data keys are wrapped with AES-256-GCM under a master key
 * kept in `<dataDir>/master.key`, readable by the owner only. The encryption context, as canonical
 * JSON (so the order of its keys does not matter, as with KMS), is the additional authenticated
 * data: a wrapped key only unwraps with the context it was made for.
 */
export class LocalKeys implements Keys {
  readonly #masterKey: Uint8Array;

  private constructor(masterKey: Uint8Array) {
    this.#masterKey = masterKey;
  }

  /**
   * Loads the master key of `dataDir`, creating the directory and a fresh key (mode 0600) when
   * there is none yet.
   */
  static open(dataDir: string): LocalKeys {
    const { key: masterKey } = readOrCreateKeyFile(dataDir, 'master.key', keyBytes);
    return new LocalKeys(masterKey);
  }

  /** A key ring with a random master key that lives as long as the object: for tests. */
  static inMemory(): LocalKeys {
    return new LocalKeys(randomBytes(keyBytes));
  }

  async generateDataKey(context: EncryptionContext): Promise<DataKey> {
    const plaintext = randomBytes(keyBytes);
    const wrapped = wrappedPrefix + sealEnvelope(this.#masterKey, plaintext, canonicalJson(context));
    return { plaintext, wrapped };
  }

  async unwrap(wrapped: string, context: EncryptionContext): Promise<Uint8Array> {
    if (!wrapped.startsWith(wrappedPrefix)) {
      throw new KeyUnwrapError('not a key wrapped by LocalKeys');
    }
    const envelope = wrapped.slice(wrappedPrefix.length);
    // Node's AES-GCM accepts a truncated tag, which would let a shortened wrapped key through.
    const tag = envelope.slice(envelope.lastIndexOf('.') + 1);
    if (Buffer.from(tag, 'base64url').length !== tagBytes) {
      throw new KeyUnwrapError('wrapped key is malformed or its authentication tag is truncated');
    }
    let plaintext: Buffer;
    try {
      plaintext = openEnvelope(this.#masterKey, envelope, canonicalJson(context));
    } catch (cause) {
      throw new KeyUnwrapError('wrapped key does not open with this master key and context', { cause });
    }
    if (plaintext.length !== keyBytes) {
      throw new KeyUnwrapError(`wrapped key holds ${plaintext.length} bytes instead of ${keyBytes}`);
    }
    return plaintext;
  }
}
