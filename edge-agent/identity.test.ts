import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { nodeIdFromPublicKey } from '../protocol/index.js';
import { identityFiles, loadOrCreateIdentity } from './identity.js';

let dataDir: string;

beforeEach(async () => {
  dataDir = join(await mkdtemp(join(tmpdir(), 'gpuai-agent-identity-')), 'nested', 'data');
});

afterEach(async () => {
  await rm(join(dataDir, '..', '..'), { recursive: true, force: true });
});

describe('loadOrCreateIdentity', () => {
  it('creates an owner-only key and a summary on first run', async () => {
    const identity = await loadOrCreateIdentity(dataDir, 'http://127.0.0.1:8080/');
    expect(identity.created).toBe(true);
    expect(identity.nodeId).toBe(nodeIdFromPublicKey(identity.publicKey));
    expect((await stat(join(dataDir, identityFiles.key))).mode & 0o777).toBe(0o600);
    expect(JSON.parse(await readFile(join(dataDir, identityFiles.summary), 'utf8'))).toEqual({
      nodeId: identity.nodeId,
      publicKey: identity.publicKey,
      api: 'http://127.0.0.1:8080/',
    });
  });

  it('keeps the node id across restarts, and follows a new api URL', async () => {
    const first = await loadOrCreateIdentity(dataDir, 'http://a.example/');
    const second = await loadOrCreateIdentity(dataDir, 'http://b.example/');
    expect(second).toMatchObject({ nodeId: first.nodeId, publicKey: first.publicKey, created: false });
    expect(JSON.parse(await readFile(join(dataDir, identityFiles.summary), 'utf8'))).toMatchObject({
      nodeId: first.nodeId,
      api: 'http://b.example/',
    });
  });

  it('takes the key as the truth when identity.json disagrees with it', async () => {
    const first = await loadOrCreateIdentity(dataDir, 'http://a.example/');
    await writeFile(join(dataDir, identityFiles.summary), '{"nodeId":"node_someone_else"');
    const again = await loadOrCreateIdentity(dataDir, 'http://a.example/');
    expect(again.nodeId).toBe(first.nodeId);
    expect(JSON.parse(await readFile(join(dataDir, identityFiles.summary), 'utf8')).nodeId).toBe(first.nodeId);
  });

  it('gives one identity to agents started at the same time', async () => {
    const identities = await Promise.all([1, 2, 3].map(() => loadOrCreateIdentity(dataDir, 'http://a.example/')));
    expect(new Set(identities.map((identity) => identity.nodeId)).size).toBe(1);
  });
});
