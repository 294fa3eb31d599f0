/**
 * EvmSigner: the payout signer, the one key that sends the control plane's transactions to the
 * token contracts. In the cloud its private key lives in KMS and never enters a Lambda's memory or
 * environment; embedded, it is a key file in the data dir. Either way callers see only this port.
 *
 * It signs a 32-byte digest, never a transaction or a message: building and hashing what is signed
 * (an EIP-1559 transaction's `unsignedHash`, an EIP-712 or EIP-191 hash) stays with the caller and
 * ethers, because KMS can only sign a digest it is given, and a port that took whole transactions
 * would have to re-implement each encoding per adapter. The price is that a signer signs whatever
 * 32 bytes it is handed: only code that builds the digest itself may hold one.
 *
 * Signatures are secp256k1 ECDSA in Ethereum's form: `s` in the low half of the curve order (EIP-2;
 * transactions with a high `s` are invalid) and the recovery id as `v`, so that `ecrecover` and
 * ethers' `recoverAddress` give back {@link EvmSigner.address} without the public key.
 */
export interface EvmSigner {
  /** The signer's Ethereum address, EIP-55 checksummed; the same for the signer's whole life. */
  address(): Promise<string>;
  /**
   * Signs a digest of exactly {@link digestBytes} bytes as it is, without hashing it again.
   * Throws {@link SignerError} for a digest of another length, or when the key's service answers
   * with something that is not a valid signature of this key.
   */
  signDigest(digest: Uint8Array): Promise<EvmSignature>;
}

/** An ECDSA signature over secp256k1 as the EVM takes it. */
export interface EvmSignature {
  /** 32 bytes, 0x-prefixed lowercase hex. */
  r: string;
  /** 32 bytes, 0x-prefixed lowercase hex; never above half the curve order. */
  s: string;
  /** 27 + the recovery id: which of the two points with x = r is the signer's public key. */
  v: 27 | 28;
  /** `r || s || v` as 65 bytes of 0x-prefixed hex, the form `ecrecover` wrappers and ethers take. */
  serialized: string;
}

/** The length of a keccak256 digest, the only length an {@link EvmSigner} signs. */
export const digestBytes = 32;

export class SignerError extends Error {
  override name = 'SignerError';
}
