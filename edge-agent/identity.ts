import { createPrivateKey, randomBytes } from 'node:crypto';
import { chmod, mkdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import {
  generateNodeKeyPair,
  generateSealingKeyPair,
  loadNodeKeyPair,
  type NodeKeyPair,
  nodeIdFromPublicKey,
  type SealingKeyPair,
} from '../protocol/index.js';

/** File names inside the agent's data directory. */
export const identityFiles = {
  /** Ed25519 private key, PKCS#8 PEM, mode 0600. The node's identity: keep it, keep the node id. */
  key: 'node-key.pem',
  /**
   * X25519 private key, PKCS#8 PEM, mode 0600: jobs' data keys are sealed to it (HPKE) at
   * dispatch. Its public half goes into the Ed25519-signed registration, which binds it to the node.
   */
  sealingKey: 'node-sealing-key.pem',
  /** `{ nodeId, publicKey, api }`, derived from the key, for people and tools that look at the data dir. */
  summary: 'identity.json',
} as const;

/** Who this node is: its id is derived from its public key, so it survives restarts and re-registration. */
export interface NodeIdentity {
  nodeId: string;
  /** Raw public key, base64url. */
  publicKey: string;
  keyPair: NodeKeyPair;
  /** The X25519 key pair jobs are sealed to (raw keys, base64url); the private half never leaves the agent. */
  sealing: SealingKeyPair;
  /** True when this call generated the key (first run with this data dir). */
  created: boolean;
}

const IdentitySummary = z.object({
  nodeId: z.string(),
  publicKey: z.string(),
  sealingKey: z.string().optional(),
  api: z.string(),
});

/**
 * Loads the node key from `dataDir`, generating it on first run, and keeps `identity.json` in step
 * with it. The key is the source of truth: identity.json is rewritten whenever it disagrees (a new
 * api URL, or a key someone replaced by hand).
 */
export async function loadOrCreateIdentity(dataDir: string, api: string): Promise<NodeIdentity> {
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const { pem, created } = await readOrCreateKey(
    join(dataDir, identityFiles.key),
    () => generateNodeKeyPair().privateKeyPem,
  );
  const keyPair = loadNodeKeyPair(pem);
  const nodeId = nodeIdFromPublicKey(keyPair.publicKey);
  const sealingPem = await readOrCreateKey(join(dataDir, identityFiles.sealingKey), newSealingKeyPem);
  const sealing = loadSealingKeyPair(sealingPem.pem);
  await writeSummaryIfChanged(join(dataDir, identityFiles.summary), {
    nodeId,
    publicKey: keyPair.publicKey,
    sealingKey: sealing.publicKey,
    api,
  });
  return { nodeId, publicKey: keyPair.publicKey, keyPair, sealing, created };
}

function newSealingKeyPem(): string {
  const { publicKey, privateKey } = generateSealingKeyPair();
  return createPrivateKey({ key: { kty: 'OKP', crv: 'X25519', x: publicKey, d: privateKey }, format: 'jwk' })
    .export({ type: 'pkcs8', format: 'pem' })
    .toString();
}

/** Reads an X25519 PKCS#8 PEM into raw base64url keys; refuses any other kind of key. */
export function loadSealingKeyPair(pem: string): SealingKeyPair {
  const key = createPrivateKey(pem);
  if (key.asymmetricKeyType !== 'x25519') throw new Error(`${identityFiles.sealingKey} is not an X25519 key`);
  const jwk = key.export({ format: 'jwk' });
  if (typeof jwk.d !== 'string' || typeof jwk.x !== 'string') throw new Error('X25519 key export failed');
  return { publicKey: jwk.x, privateKey: jwk.d };
}

async function readOrCreateKey(path: string, generate: () => string): Promise<{ pem: string; created: boolean }> {
  const existing = await readFile(path, 'utf8').catch((error: unknown) => {
    if (isErrnoException(error) && error.code === 'ENOENT') return undefined;
    throw error;
  });
  if (existing !== undefined) {
    await restrictToOwner(path);
    return { pem: existing, created: false };
  }
  const privateKeyPem = generate();
  try {
    // 'wx' fails when the file exists, so two agents started at once cannot overwrite each other's key.
    await writeFile(path, privateKeyPem, { mode: 0o600, flag: 'wx' });
    return { pem: privateKeyPem, created: true };
  } catch (error) {
    if (!isErrnoException(error) || error.code !== 'EEXIST') throw error;
    return { pem: await readFile(path, 'utf8'), created: false };
  }
}

/** A key copied around with a permissive umask is readable by others: tighten it like ssh would insist. */
async function restrictToOwner(path: string): Promise<void> {
  if (process.platform === 'win32') return;
  const { mode } = await stat(path);
  if ((mode & 0o077) !== 0) await chmod(path, 0o600);
}

async function writeSummaryIfChanged(path: string, summary: z.infer<typeof IdentitySummary>): Promise<void> {
  const current = await readSummary(path);
  if (
    current?.nodeId === summary.nodeId &&
    current.publicKey === summary.publicKey &&
    current.sealingKey === summary.sealingKey &&
    current.api === summary.api
  ) {
    return;
  }
  // Unique per writer, so that agents starting at once never rename each other's half-written file.
  const temporary = `${path}.${process.pid}-${randomBytes(4).toString('hex')}.tmp`;
  await writeFile(temporary, `${JSON.stringify(summary, null, 2)}\n`, { mode: 0o600 });
  await rename(temporary, path);
}

async function readSummary(path: string): Promise<z.infer<typeof IdentitySummary> | undefined> {
  try {
    const parsed = IdentitySummary.safeParse(JSON.parse(await readFile(path, 'utf8')));
    return parsed.success ? parsed.data : undefined;
  } catch {
    // Missing or unreadable: it is rewritten from the key.
    return undefined;
  }
}

function isErrnoException(error: unknown): error is NodeJS.ErrnoException {
  return error instanceof Error && 'code' in error;
}
