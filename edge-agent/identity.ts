import { randomBytes } from 'node:crypto';
import { chmod, mkdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { generateNodeKeyPair, loadNodeKeyPair, type NodeKeyPair, nodeIdFromPublicKey } from '../protocol/index.js';

/** File names inside the agent's data directory. */
export const identityFiles = {
  /** Ed25519 private key, PKCS#8 PEM, mode 0600. The node's identity: keep it, keep the node id. */
  key: 'node-key.pem',
  /** `{ nodeId, publicKey, api }`, derived from the key, for people and tools that look at the data dir. */
  summary: 'identity.json',
} as const;

/** Who this node is: its id is derived from its public key, so it survives restarts and re-registration. */
export interface NodeIdentity {
  nodeId: string;
  /** Raw public key, base64url. */
  publicKey: string;
  keyPair: NodeKeyPair;
  /** True when this call generated the key (first run with this data dir). */
  created: boolean;
}

const IdentitySummary = z.object({ nodeId: z.string(), publicKey: z.string(), api: z.string() });

/**
 * Loads the node key from `dataDir`, generating it on first run, and keeps `identity.json` in step
 * with it. The key is the source of truth: identity.json is rewritten whenever it disagrees (a new
 * api URL, or a key someone replaced by hand).
 */
export async function loadOrCreateIdentity(dataDir: string, api: string): Promise<NodeIdentity> {
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const { pem, created } = await readOrCreateKey(join(dataDir, identityFiles.key));
  const keyPair = loadNodeKeyPair(pem);
  const nodeId = nodeIdFromPublicKey(keyPair.publicKey);
  await writeSummaryIfChanged(join(dataDir, identityFiles.summary), { nodeId, publicKey: keyPair.publicKey, api });
  return { nodeId, publicKey: keyPair.publicKey, keyPair, created };
}

async function readOrCreateKey(path: string): Promise<{ pem: string; created: boolean }> {
  const existing = await readFile(path, 'utf8').catch((error: unknown) => {
    if (isErrnoException(error) && error.code === 'ENOENT') return undefined;
    throw error;
  });
  if (existing !== undefined) {
    await restrictToOwner(path);
    return { pem: existing, created: false };
  }
  const { privateKeyPem } = generateNodeKeyPair();
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
  if (current?.nodeId === summary.nodeId && current.publicKey === summary.publicKey && current.api === summary.api) {
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
