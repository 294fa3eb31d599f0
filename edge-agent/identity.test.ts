import { chmod, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { nodeIdFromPublicKey, openResultText, sealingPublicKeyOf, sealResultText } from '../protocol/index.js';
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
      sealingKey: identity.sealing.publicKey,
      api: 'http://127.0.0.1:8080/',
    });
  });

  it('keeps an owner-only X25519 sealing key beside the node key, reused across restarts', async () => {
    const first = await loadOrCreateIdentity(dataDir, 'http://a.example/');
    const path = join(dataDir, identityFiles.sealingKey);
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    expect(first.sealing.publicKey).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(sealingPublicKeyOf(first.sealing.privateKey)).toBe(first.sealing.publicKey);
    expect(await readFile(path, 'utf8')).toContain('BEGIN PRIVATE KEY');
    await chmod(path, 0o644);
    const second = await loadOrCreateIdentity(dataDir, 'http://a.example/');
    expect(second.sealing).toEqual(first.sealing);
    expect(second.sealing.publicKey).not.toBe(second.publicKey);
    // A loose mode is tightened, as for the node key.
    expect((await stat(path)).mode & 0o777).toBe(0o600);
    // The key sealed to opens with the key loaded after the restart.
    const sealed = await sealResultText(first.sealing.publicKey, 'x', { jobId: 'j', taskId: 't', field: 'logTail' });
    expect(await openResultText(second.sealing.privateKey, sealed, { jobId: 'j', taskId: 't', field: 'logTail' })).toBe(
      'x',
    );
  });

  it('refuses a sealing key file that holds another kind of key', async () => {
    await loadOrCreateIdentity(dataDir, 'http://a.example/');
    await writeFile(join(dataDir, identityFiles.sealingKey), await readFile(join(dataDir, identityFiles.key)));
    await expect(loadOrCreateIdentity(dataDir, 'http://a.example/')).rejects.toThrow(/not an X25519 key/);
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
