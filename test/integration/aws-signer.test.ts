import { createHash, randomBytes } from 'node:crypto';
import {
  CreateKeyCommand,
  KMSClient,
  NotFoundException,
  SignCommand,
  type SignCommandInput,
  type SignCommandOutput,
} from '@aws-sdk/client-kms';
import { N } from 'ethers';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { parseDerSignature } from '../../functions/adapters/aws/der-signature.js';
import { createSigningKey, KmsEvmSigner } from '../../functions/adapters/aws/kms-evm-signer.js';
import { SignerError } from '../../functions/ports/signer.js';
import { signerContract } from '../contract/signer-contract.js';
import { emulatorCredentials } from '../emulators/emulators.js';

const endpoints = inject('awsEndpoints');
if (endpoints === undefined) {
  throw new Error('no emulator endpoints: run with test/emulators/global-setup.ts as a vitest globalSetup');
}

/** Every client this file made, destroyed at the end to close their sockets. */
const clients: KMSClient[] = [];

afterAll(() => {
  for (const client of clients) {
    client.destroy();
  }
});

/** A KMS client of its own for local-kms, so that a test may add middleware that tampers with requests and answers. */
function kmsClient(): KMSClient {
  const client = new KMSClient({ region: 'us-east-1', endpoint: endpoints.kms, credentials: emulatorCredentials });
  clients.push(client);
  return client;
}

const kms = kmsClient();
let signingKey: Promise<string> | undefined;
const sharedKey = () => (signingKey ??= createSigningKey(kms));

signerContract('KmsEvmSigner on local-kms', async () => new KmsEvmSigner(kms, await sharedKey()));

describe('KmsEvmSigner on local-kms', () => {
  it('asks KMS for the public key once, however many callers want the address', async () => {
    const client = kmsClient();
    const requests: (string | undefined)[] = [];
    client.middlewareStack.add(
      (next, context) => (args) => {
        requests.push(context.commandName);
        return next(args);
      },
      { step: 'initialize' },
    );
    const signer = new KmsEvmSigner(client, await sharedKey());

    await Promise.all([signer.address(), signer.address(), signer.signDigest(randomBytes(32))]);
    await signer.signDigest(randomBytes(32));

    expect(requests.filter((command) => command === 'GetPublicKeyCommand')).toHaveLength(1);
    expect(requests.filter((command) => command === 'SignCommand')).toHaveLength(2);
  });

  it('asks again after a failed GetPublicKey instead of keeping the failure', async () => {
    const client = kmsClient();
    let failures = 1;
    client.middlewareStack.add(
      (next, context) => async (args) => {
        if (context.commandName === 'GetPublicKeyCommand' && failures-- > 0) {
          throw new Error('KMS unreachable');
        }
        return next(args);
      },
      { step: 'initialize' },
    );
    const signer = new KmsEvmSigner(client, await sharedKey());

    await expect(signer.address()).rejects.toThrow('KMS unreachable');
    expect(await signer.address()).toBe(await new KmsEvmSigner(kms, await sharedKey()).address());
  });

  it('meets high s from local-kms, so the contract checks the normalisation to low s', async () => {
    const KeyId = await sharedKey();
    const answers = await Promise.all(
      Array.from({ length: 20 }, () =>
        kms.send(
          new SignCommand({
            KeyId,
            Message: randomBytes(32),
            MessageType: 'DIGEST',
            SigningAlgorithm: 'ECDSA_SHA_256',
          }),
        ),
      ),
    );

    // Each signature's s is high with probability one half: none in 20 has odds of one in a million.
    const high = answers.filter(({ Signature }) => parseDerSignature(Signature ?? new Uint8Array()).s > N / 2n);
    expect(high.length).toBeGreaterThan(0);
  });

  it('refuses a key of another curve', async () => {
    const { KeyMetadata } = await kms.send(new CreateKeyCommand({ KeySpec: 'ECC_NIST_P256', KeyUsage: 'SIGN_VERIFY' }));
    const signer = new KmsEvmSigner(kms, KeyMetadata?.KeyId ?? '');

    await expect(signer.address()).rejects.toThrow(SignerError);
    await expect(signer.signDigest(randomBytes(32))).rejects.toThrow(/ECC_NIST_P256/);
  });

  it('refuses a signature of the digest hashed again, as moto makes', async () => {
    const client = kmsClient();
    client.middlewareStack.add(
      (next, context) => (args) => {
        if (context.commandName === 'SignCommand') {
          const input = args.input as SignCommandInput;
          input.Message = createHash('sha256')
            .update(input.Message ?? new Uint8Array())
            .digest();
        }
        return next(args);
      },
      { step: 'initialize' },
    );
    const signer = new KmsEvmSigner(client, await sharedKey());

    await expect(signer.signDigest(randomBytes(32))).rejects.toThrow(/does not recover to the key's address/);
  });

  it('refuses an answer that is not a DER signature', async () => {
    const client = kmsClient();
    client.middlewareStack.add(
      (next, context) => async (args) => {
        const result = await next(args);
        if (context.commandName === 'SignCommand') {
          (result.output as SignCommandOutput).Signature = randomBytes(70);
        }
        return result;
      },
      { step: 'initialize' },
    );
    const signer = new KmsEvmSigner(client, await sharedKey());

    await expect(signer.signDigest(randomBytes(32))).rejects.toThrow(/not a DER SEQUENCE/);
  });

  it("passes KMS's own errors through", async () => {
    const signer = new KmsEvmSigner(kms, 'alias/no-such-key');

    await expect(signer.address()).rejects.toBeInstanceOf(NotFoundException);
  });
});
