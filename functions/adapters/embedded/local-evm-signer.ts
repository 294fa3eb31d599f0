import { computeAddress, SigningKey } from 'ethers';
import { digestBytes, type EvmSignature, type EvmSigner, SignerError } from '../../ports/signer.js';
import { readOrCreateKeyFile } from './key-file.js';

const keyBytes = 32;

/**
 * The {@link EvmSigner} port without a KMS: the secp256k1 private key is kept in
 * `<dataDir>/payout.key` as 32 raw bytes, like the master key of `LocalKeys`, readable by the owner
 * only. Whoever can read that file can spend what the payout address holds: the embedded
 * deployment's trust boundary is the machine's account, where the cloud's is KMS.
 */
export class LocalEvmSigner implements EvmSigner {
  readonly #key: SigningKey;
  readonly #address: string;

  private constructor(key: SigningKey) {
    this.#key = key;
    this.#address = computeAddress(key.publicKey);
  }

  /**
   * Loads the payout key of `dataDir`, creating the directory and a fresh random key (mode 0600)
   * when there is none yet. Throws when the file is not a valid secp256k1 private key.
   */
  static open(dataDir: string): LocalEvmSigner {
    const { file, key } = readOrCreateKeyFile(dataDir, 'payout.key', keyBytes);
    try {
      // Deriving the public key is what checks the scalar: 0 and values from the group order up are no key.
      return new LocalEvmSigner(new SigningKey(key));
    } catch (cause) {
      throw new Error(`payout key file ${file} is not a secp256k1 private key`, { cause });
    }
  }

  async address(): Promise<string> {
    return this.#address;
  }

  async signDigest(digest: Uint8Array): Promise<EvmSignature> {
    if (digest.length !== digestBytes) {
      throw new SignerError(`a digest to sign has ${digestBytes} bytes, not ${digest.length}`);
    }
    // ethers signs deterministically (RFC 6979) and already in the low-s form.
    const { r, s, v, serialized } = this.#key.sign(digest);
    return { r, s, v, serialized };
  }
}
