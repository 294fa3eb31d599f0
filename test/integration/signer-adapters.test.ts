import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { N, toBeHex, Wallet } from 'ethers';
import { afterAll, describe, expect, it } from 'vitest';
import { LocalEvmSigner } from '../../functions/adapters/embedded/local-evm-signer.js';
import { signerContract } from '../contract/signer-contract.js';

/** Every directory this file made, removed at the end. */
const directories: string[] = [];

afterAll(async () => {
  await Promise.all(directories.map((dir) => rm(dir, { recursive: true, force: true })));
});

async function temporaryDirectory(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'gpuai-signer-'));
  directories.push(dir);
  return dir;
}

signerContract('LocalEvmSigner', async () => LocalEvmSigner.open(await temporaryDirectory()));

describe('LocalEvmSigner', () => {
  it('creates its key file, owner-only, in a data dir that does not exist yet', async () => {
    const dataDir = join(await temporaryDirectory(), 'data');

    LocalEvmSigner.open(dataDir);

    const file = await stat(join(dataDir, 'payout.key'));
    expect(file.mode & 0o777).toBe(0o600);
    expect(file.size).toBe(32);
  });

  it('keeps its address across restarts, and each data dir has a key of its own', async () => {
    const dataDir = await temporaryDirectory();

    const address = await LocalEvmSigner.open(dataDir).address();

    expect(await LocalEvmSigner.open(dataDir).address()).toBe(address);
    expect(await LocalEvmSigner.open(await temporaryDirectory()).address()).not.toBe(address);
  });

  it('uses the key in the file: the address is the one any wallet derives from it', async () => {
    const dataDir = await temporaryDirectory();
    const wallet = Wallet.createRandom();
    await writeFile(join(dataDir, 'payout.key'), Buffer.from(wallet.privateKey.slice(2), 'hex'), { mode: 0o600 });

    expect(await LocalEvmSigner.open(dataDir).address()).toBe(wallet.address);
    expect(await readFile(join(dataDir, 'payout.key'))).toHaveLength(32);
  });

  it('refuses a key file that holds no secp256k1 private key', async () => {
    const dataDir = await temporaryDirectory();
    const file = join(dataDir, 'payout.key');

    for (const [contents, message] of [
      [Buffer.alloc(31, 1), /31 bytes/],
      [Buffer.alloc(32), /not a secp256k1 private key/],
      [Buffer.from(toBeHex(N, 32).slice(2), 'hex'), /not a secp256k1 private key/],
    ] as const) {
      await writeFile(file, contents, { mode: 0o600 });
      expect(() => LocalEvmSigner.open(dataDir)).toThrow(message);
    }
  });

  it('refuses a key file that others may read', async () => {
    const dataDir = await temporaryDirectory();
    const file = join(dataDir, 'payout.key');
    await writeFile(file, Buffer.alloc(32, 1), { mode: 0o644 });
    expect(() => LocalEvmSigner.open(dataDir)).toThrow(/mode 0644.*chmod 600/);
  });
});
