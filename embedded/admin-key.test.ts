import { chmodSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { openDatabase } from '../functions/adapters/embedded/sqlite.js';
import { SqliteStore } from '../functions/adapters/embedded/sqlite-store.js';
import { ApiKeys } from '../functions/domain/security/api-keys.js';
import { ensureAdminKey } from './admin-key.js';
import { startControlPlane } from './control-plane-server.js';

const dirs: string[] = [];
const tempDir = () => {
  const dir = mkdtempSync(join(tmpdir(), 'gpuai-admin-key-'));
  dirs.push(dir);
  return dir;
};
afterEach(() => {
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

const mode = (file: string) => statSync(file).mode & 0o777;

async function start(dataDir: string, lines: string[]) {
  return startControlPlane({
    port: 0,
    host: '127.0.0.1',
    dataDir,
    reaperIntervalMs: 60_000,
    log: (entry) => lines.push(JSON.stringify(entry)),
  });
}

describe('the embedded admin key', () => {
  it('is made on first start in <dataDir>/admin-key (0600), works, and survives a restart unchanged', async () => {
    const dataDir = tempDir();
    const lines: string[] = [];
    const first = await start(dataDir, lines);
    const file = join(dataDir, 'admin-key');
    const key = readFileSync(file, 'utf8').trim();
    try {
      expect(mode(file)).toBe(0o600);
      expect(key).toMatch(/^gpk_[a-z2-7]{20}_[A-Za-z0-9_-]{43}$/);
      const ok = await fetch(`${first.url}/v1/keys`, { headers: { authorization: `Bearer ${key}` } });
      expect(ok.status).toBe(200);
      expect(((await ok.json()) as { keys: { tenant: string; scopes: string[] }[] }).keys).toEqual([
        expect.objectContaining({ tenant: 'default', scopes: ['admin', 'submit', 'read'], status: 'active' }),
      ]);
      expect((await fetch(`${first.url}/v1/jobs`)).status).toBe(401);
    } finally {
      await first.stop();
    }
    expect(lines.join('\n')).toContain(file);
    expect(lines.join('\n')).not.toContain(key.slice(25));

    const second = await start(dataDir, lines);
    try {
      expect(readFileSync(file, 'utf8').trim()).toBe(key);
      expect((await fetch(`${second.url}/v1/jobs`, { headers: { authorization: `Bearer ${key}` } })).status).toBe(200);
    } finally {
      await second.stop();
    }
  });

  it('replaces a key the store refuses, and tightens a file readable by others', async () => {
    const dataDir = tempDir();
    const store = new SqliteStore(openDatabase(':memory:'));
    const apiKeys = new ApiKeys(store, { now: () => Date.now() });
    const log = () => {};
    const file = join(dataDir, 'admin-key');

    writeFileSync(file, `gpk_${'a'.repeat(20)}_${'b'.repeat(43)}\n`, { mode: 0o644 });
    expect((await ensureAdminKey(apiKeys, dataDir, log)).created).toBe(true);
    const made = readFileSync(file, 'utf8').trim();
    expect(mode(file)).toBe(0o600);
    await expect(apiKeys.authenticate(made)).resolves.toMatchObject({ tenant: 'default' });

    chmodSync(file, 0o644);
    expect((await ensureAdminKey(apiKeys, dataDir, log)).created).toBe(false);
    expect(readFileSync(file, 'utf8').trim()).toBe(made);
    expect(mode(file)).toBe(0o600);

    await apiKeys.revoke(made.slice(4, 24));
    expect((await ensureAdminKey(apiKeys, dataDir, log)).created).toBe(true);
    expect(readFileSync(file, 'utf8').trim()).not.toBe(made);
  });
});
