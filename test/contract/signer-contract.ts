import { randomBytes } from 'node:crypto';
import { getAddress, getBytes, N, recoverAddress, Signature, Transaction, Wallet } from 'ethers';
import { describe, expect, it } from 'vitest';
import { digestBytes, type EvmSigner, SignerError } from '../../functions/ports/signer.js';

/** Enough signatures that both recovery ids turn up (all 20 alike has odds of 2 in a million). */
const signatures = 20;

/**
 * The behaviour every {@link EvmSigner} adapter must show. `makeSigner` may hand out the same key
 * each time; every check holds for any key.
 */
export function signerContract(name: string, makeSigner: () => Promise<EvmSigner>): void {
  describe(`EvmSigner contract: ${name}`, () => {
    it('has a checksummed address that does not change', async () => {
      const signer = await makeSigner();
      const address = await signer.address();

      expect(address).toMatch(/^0x[0-9a-fA-F]{40}$/);
      expect(address).toBe(getAddress(address));
      expect(await Promise.all([signer.address(), signer.address()])).toEqual([address, address]);
    });

    it('signs digests with signatures that recover to its address, s in the low half', async () => {
      const signer = await makeSigner();
      const address = await signer.address();
      const digests = Array.from({ length: signatures }, () => randomBytes(digestBytes));

      const signed = await Promise.all(
        digests.map(async (digest) => ({ digest, signature: await signer.signDigest(digest) })),
      );

      for (const { digest, signature } of signed) {
        expect(signature.r).toMatch(/^0x[0-9a-f]{64}$/);
        expect(signature.s).toMatch(/^0x[0-9a-f]{64}$/);
        expect(BigInt(signature.s)).toBeGreaterThan(0n);
        expect(BigInt(signature.s)).toBeLessThanOrEqual(N / 2n);
        expect(getBytes(signature.serialized)).toHaveLength(65);
        expect(Signature.from(signature.serialized)).toMatchObject({ r: signature.r, s: signature.s, v: signature.v });
        expect(recoverAddress(digest, signature)).toBe(address);
        expect(recoverAddress(digest, signature.serialized)).toBe(address);
      }
      // Choosing v is half the work of an adapter over a plain ECDSA signer: both values must occur.
      expect(new Set(signed.map(({ signature }) => signature.v))).toEqual(new Set([27, 28]));
    });

    it('refuses a digest of any length but 32 bytes', async () => {
      const signer = await makeSigner();

      for (const length of [0, 31, 33, 64]) {
        await expect(signer.signDigest(randomBytes(length))).rejects.toBeInstanceOf(SignerError);
      }
    });

    it('signs EVM transactions that nodes attribute to its address', async () => {
      const signer = await makeSigner();
      const address = await signer.address();
      const common = {
        chainId: 31337n,
        nonce: 7,
        gasLimit: 21_000n,
        to: Wallet.createRandom().address,
        value: 10n ** 18n,
      };
      const eip1559 = { ...common, type: 2, maxFeePerGas: 2_000_000_000n, maxPriorityFeePerGas: 1_000_000_000n };
      // A legacy transaction carries the chain id inside v (EIP-155): the recovery id must still be right.
      const legacy = { ...common, type: 0, gasPrice: 1_000_000_000n };

      for (const fields of [eip1559, legacy]) {
        const transaction = Transaction.from(fields);
        const { serialized } = await signer.signDigest(getBytes(transaction.unsignedHash));
        transaction.signature = Signature.from(serialized);

        // Parse the raw transaction as a node would receive it, so the sender comes from the signature alone.
        const received = Transaction.from(transaction.serialized);
        expect(received.from).toBe(address);
        expect(received).toMatchObject({ to: fields.to, value: fields.value, nonce: fields.nonce, chainId: 31337n });
      }
    });
  });
}
