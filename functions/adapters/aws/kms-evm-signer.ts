import { CreateKeyCommand, GetPublicKeyCommand, type KMSClient, SignCommand } from '@aws-sdk/client-kms';
import { computeAddress, N, recoverAddress, Signature, toBeHex } from 'ethers';
import { digestBytes, type EvmSignature, type EvmSigner, SignerError } from '../../ports/signer.js';
import { parseDerSignature } from './der-signature.js';

const keySpec = 'ECC_SECG_P256K1';
/**
 * The DER header of a secp256k1 SubjectPublicKeyInfo with an uncompressed point: SEQUENCE,
 * AlgorithmIdentifier (id-ecPublicKey, secp256k1), BIT STRING of 66 bytes, no unused bits. KMS
 * answers GetPublicKey in this form; the 65 bytes after it are the point `04 || x || y`.
 */
const spkiHeader = Buffer.from('3056301006072a8648ce3d020106052b8104000a034200', 'hex');
const pointBytes = 65;
const halfOrder = N / 2n;

/**
 * The {@link EvmSigner} port on AWS KMS: the private key is an asymmetric ECC_SECG_P256K1
 * SIGN_VERIFY KMS key that never leaves KMS. The address is derived once from the key's public key;
 * each signature is one KMS Sign call with `MessageType: DIGEST`, so KMS signs the keccak256 digest
 * as given instead of hashing it with SHA-256 first.
 *
 * KMS answers a plain ECDSA signature: DER-encoded, with whichever s it computed and no recovery
 * id. This adapter turns it into the EVM's form, s in the low half and v found by recovering the
 * address, and refuses (with {@link SignerError}) any answer that does not recover to the key.
 * Errors of KMS itself (access, throttling, an unknown key) pass through unchanged.
 */
export class KmsEvmSigner implements EvmSigner {
  readonly #client: KMSClient;
  readonly #keyId: string;
  #address: Promise<string> | undefined;

  /**
   * @param client a client for the key's region; the caller owns it and destroys it.
   * @param keyId the id, ARN or alias of an ECC_SECG_P256K1 SIGN_VERIFY key.
   */
  constructor(client: KMSClient, keyId: string) {
    this.#client = client;
    this.#keyId = keyId;
  }

  address(): Promise<string> {
    // A key's public key never changes: one GetPublicKey per signer, shared by concurrent callers.
    // A failed one is forgotten, so that a passing KMS error does not break the signer for good.
    this.#address ??= this.#fetchAddress().catch((error: unknown) => {
      this.#address = undefined;
      throw error;
    });
    return this.#address;
  }

  async signDigest(digest: Uint8Array): Promise<EvmSignature> {
    if (digest.length !== digestBytes) {
      throw new SignerError(`a digest to sign has ${digestBytes} bytes, not ${digest.length}`);
    }
    // Side by side, so that a signer's first signature waits for one round trip to KMS, not two.
    const [address, { Signature: der }] = await Promise.all([
      this.address(),
      this.#client.send(
        new SignCommand({
          KeyId: this.#keyId,
          Message: digest,
          MessageType: 'DIGEST',
          SigningAlgorithm: 'ECDSA_SHA_256',
        }),
      ),
    ]);
    if (der === undefined) {
      throw new SignerError('KMS answered Sign without a signature');
    }
    const { r, s } = parseDerSignature(der);
    if (r >= N || s >= N) {
      throw new SignerError('KMS signature has r or s outside the secp256k1 group order');
    }
    // ECDSA is valid with s and with n - s; EIP-2 makes the EVM accept only the lower one.
    const signature = { r: toBeHex(r, 32), s: toBeHex(s > halfOrder ? N - s : s, 32) };
    for (const v of [27, 28] as const) {
      const candidate = Signature.from({ ...signature, v });
      if (recoversTo(digest, candidate, address)) {
        return { ...signature, v, serialized: candidate.serialized };
      }
    }
    // For instance a KMS (or emulator) that hashed the digest again before signing it.
    throw new SignerError(`KMS signature does not recover to the key's address ${address}`);
  }

  async #fetchAddress(): Promise<string> {
    const { KeySpec, KeyUsage, PublicKey } = await this.#client.send(new GetPublicKeyCommand({ KeyId: this.#keyId }));
    if (KeySpec !== keySpec || KeyUsage !== 'SIGN_VERIFY') {
      throw new SignerError(`KMS key ${this.#keyId} is ${KeySpec} ${KeyUsage}, not ${keySpec} SIGN_VERIFY`);
    }
    const spki = Buffer.from(PublicKey ?? []);
    if (spki.length !== spkiHeader.length + pointBytes || !spki.subarray(0, spkiHeader.length).equals(spkiHeader)) {
      throw new SignerError(`KMS public key of ${this.#keyId} is not a secp256k1 SubjectPublicKeyInfo`);
    }
    try {
      // keccak256 of the 64 bytes of x and y, last 20 bytes, checksummed; ethers also checks the point is on the curve.
      return computeAddress(`0x${spki.subarray(spkiHeader.length).toString('hex')}`);
    } catch (cause) {
      throw new SignerError(`KMS public key of ${this.#keyId} is not a point on secp256k1`, { cause });
    }
  }
}

/** Whether `signature` over `digest` recovers to `address`; false also when no key recovers at all (r not on the curve). */
function recoversTo(digest: Uint8Array, signature: Signature, address: string): boolean {
  try {
    return recoverAddress(digest, signature) === address;
  } catch {
    return false;
  }
}

/**
 * Creates a secp256k1 signing key and returns its id: for tests and local tooling; deployments
 * create the key with the CDK app.
 */
export async function createSigningKey(client: KMSClient): Promise<string> {
  const { KeyMetadata } = await client.send(
    new CreateKeyCommand({ KeySpec: keySpec, KeyUsage: 'SIGN_VERIFY', Description: 'GPUAI payout signer' }),
  );
  if (KeyMetadata?.KeyId === undefined) {
    throw new Error('KMS answered CreateKey without a key id');
  }
  return KeyMetadata.KeyId;
}
