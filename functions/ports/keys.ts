/**
 * Keys: envelope encryption. A data key is generated per job, used in memory and stored only in
 * wrapped form; the wrapping is bound to an encryption context (KMS semantics) so a wrapped key
 * copied to another job does not unwrap.
 */
export interface DataKey {
  /** 32 bytes; never persisted. */
  plaintext: Uint8Array;
  /** Opaque, safe to store. */
  wrapped: string;
}

export type EncryptionContext = Record<string, string>;

export interface Keys {
  generateDataKey(context: EncryptionContext): Promise<DataKey>;
  /** Throws {@link KeyUnwrapError} when the wrapped key or its context does not match. */
  unwrap(wrapped: string, context: EncryptionContext): Promise<Uint8Array>;
}

export class KeyUnwrapError extends Error {
  override name = 'KeyUnwrapError';
}
