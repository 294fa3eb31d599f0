import {
  CreateKeyCommand,
  DecryptCommand,
  GenerateDataKeyCommand,
  IncorrectKeyException,
  InvalidCiphertextException,
  type KMSClient,
} from '@aws-sdk/client-kms';
import { type DataKey, type EncryptionContext, type Keys, KeyUnwrapError } from '../../ports/keys.js';

/** Identifies keys wrapped by this adapter, and the version of its format: `kms1.<base64url ciphertext blob>`. */
const wrappedPrefix = 'kms1.';
const keyBytes = 32;
/** KMS refuses longer ciphertext blobs. */
const maxCiphertextBytes = 6144;

/**
 * The {@link Keys} port on AWS KMS: each data key comes from GenerateDataKey under one symmetric
 * KMS key, with the port's encryption context as the KMS encryption context, so KMS itself
 * refuses to decrypt a wrapped key under any other context (and logs every use in CloudTrail).
 * The plaintext key never leaves the process; the wrapped key is KMS's ciphertext blob.
 */
export class KmsKeys implements Keys {
  readonly #client: KMSClient;
  readonly #keyId: string;

  /**
   * @param client a client for the key's region; the caller owns it and destroys it.
   * @param keyId the id, ARN or alias of a SYMMETRIC_DEFAULT ENCRYPT_DECRYPT key.
   */
  constructor(client: KMSClient, keyId: string) {
    this.#client = client;
    this.#keyId = keyId;
  }

  async generateDataKey(context: EncryptionContext): Promise<DataKey> {
    const { Plaintext, CiphertextBlob } = await this.#client.send(
      new GenerateDataKeyCommand({ KeyId: this.#keyId, KeySpec: 'AES_256', EncryptionContext: context }),
    );
    if (Plaintext?.length !== keyBytes || CiphertextBlob === undefined) {
      throw new Error(`KMS answered GenerateDataKey without a ${keyBytes}-byte key and its ciphertext`);
    }
    return { plaintext: Plaintext, wrapped: wrappedPrefix + Buffer.from(CiphertextBlob).toString('base64url') };
  }

  async unwrap(wrapped: string, context: EncryptionContext): Promise<Uint8Array> {
    const blob = ciphertextBlob(wrapped);
    let plaintext: Uint8Array | undefined;
    try {
      // Naming the key makes KMS refuse a ciphertext of another key instead of using whichever key it names.
      ({ Plaintext: plaintext } = await this.#client.send(
        new DecryptCommand({ KeyId: this.#keyId, CiphertextBlob: blob, EncryptionContext: context }),
      ));
    } catch (error) {
      if (error instanceof InvalidCiphertextException || error instanceof IncorrectKeyException) {
        throw new KeyUnwrapError('KMS refused the wrapped key: tampered, of another key, or of another context', {
          cause: error,
        });
      }
      // Anything else (throttling, access, an unreachable KMS) says nothing about the key itself.
      throw error;
    }
    if (plaintext?.length !== keyBytes) {
      throw new KeyUnwrapError(`wrapped key holds ${plaintext?.length ?? 0} bytes instead of ${keyBytes}`);
    }
    return plaintext;
  }
}

/**
 * The ciphertext blob inside a wrapped key, refusing what KMS would only reject later (or answer
 * with a validation error that is not a {@link KeyUnwrapError}).
 */
function ciphertextBlob(wrapped: string): Buffer {
  if (!wrapped.startsWith(wrappedPrefix)) {
    throw new KeyUnwrapError('not a key wrapped by KmsKeys');
  }
  const encoded = wrapped.slice(wrappedPrefix.length);
  const blob = Buffer.from(encoded, 'base64url');
  // Node's decoder skips characters outside the alphabet; re-encoding catches that and stray padding.
  if (blob.length === 0 || blob.length > maxCiphertextBytes || blob.toString('base64url') !== encoded) {
    throw new KeyUnwrapError('wrapped key is not a well-formed KMS ciphertext');
  }
  return blob;
}

/**
 * Creates a symmetric encryption key to wrap data keys under and returns its id: for tests and
 * local tooling; deployments create the key with the CDK app.
 */
export async function createDataKeyKey(client: KMSClient): Promise<string> {
  const { KeyMetadata } = await client.send(
    new CreateKeyCommand({
      KeySpec: 'SYMMETRIC_DEFAULT',
      KeyUsage: 'ENCRYPT_DECRYPT',
      Description: 'GPUAI data key wrapping',
    }),
  );
  if (KeyMetadata?.KeyId === undefined) {
    throw new Error('KMS answered CreateKey without a key id');
  }
  return KeyMetadata.KeyId;
}
