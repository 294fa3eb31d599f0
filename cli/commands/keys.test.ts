import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ApiKeyList, CreatedApiKey } from '../../protocol/api-keys.js';
import type { JobWithTasks } from '../../protocol/job.js';
import { startTestControlPlane, type TestControlPlane } from '../testing/control-plane.js';
import { runGpuai } from '../testing/run-cli.js';

/** `gpuai keys` against the real embedded control plane on a local port. */

let cp: TestControlPlane;
let url: string;
let emptyDataDir: string;

beforeAll(async () => {
  cp = await startTestControlPlane();
  url = cp.url;
  emptyDataDir = mkdtempSync(join(tmpdir(), 'gpuai-keys-cli-'));
});
afterAll(async () => {
  await cp.stop();
  rmSync(emptyDataDir, { recursive: true, force: true });
});

/** Runs gpuai with only the given key (no credentials file, no local admin key). */
const gpuai = (args: string[], key?: string) =>
  runGpuai([...args, '--api', url], {
    env: { GPUAI_DATA_DIR: emptyDataDir, ...(key === undefined ? {} : { GPUAI_API_KEY: key }) },
  });

describe('gpuai keys', () => {
  it('creates a key, printing only the key on stdout; the key works with its tenant and scopes', async () => {
    const created = await gpuai(
      ['keys', 'create', '--tenant', 'acme', '--scopes', 'submit,read', '--expires', '30d', '--name', 'ci'],
      cp.adminKey,
    );
    expect(created.code).toBe(0);
    const key = created.stdout.trim();
    expect(key).toMatch(/^gpk_[a-z2-7]{20}_[A-Za-z0-9_-]{43}$/);
    expect(created.stderr).toContain('for tenant acme, scopes submit, read, expires ');
    expect(created.stderr).toContain('shown only this once');

    const submitted = await gpuai(['jobs', 'submit', '--command', 'true', '--gpus', '0'], key);
    expect(submitted.code).toBe(0);
    const jobId = submitted.stdout.trim();
    const seen = await fetch(`${url}/v1/jobs/${jobId}`, { headers: { authorization: `Bearer ${key}` } });
    expect(((await seen.json()) as JobWithTasks).id).toBe(jobId);

    // A submit+read key cannot manage keys.
    const refused = await gpuai(['keys', 'list'], key);
    expect(refused.code).toBe(4);
    expect(refused.stderr).toContain('HTTP 403 insufficient_scope');
  });

  it('lists keys without secrets, as a table or the API JSON', async () => {
    const made = JSON.parse(
      (await gpuai(['keys', 'create', '--tenant', 'beta', '--scopes', 'read', '--json'], cp.adminKey)).stdout,
    ) as CreatedApiKey;
    const table = await gpuai(['keys', 'list'], cp.adminKey);
    expect(table.code).toBe(0);
    expect(table.stdout).toMatch(/^ID\s+TENANT\s+SCOPES\s+NAME\s+STATUS\s+CREATED\s+EXPIRES/);
    expect(table.stdout).toContain(made.id);
    expect(table.stdout).not.toContain(made.key.slice(25));

    const json = await gpuai(['keys', 'list', '--tenant', 'beta', '--json'], cp.adminKey);
    const list = JSON.parse(json.stdout) as ApiKeyList;
    expect(list.keys.map((k) => [k.id, k.tenant, k.scopes, k.status])).toEqual([[made.id, 'beta', ['read'], 'active']]);
    expect(json.stdout).not.toContain('key":');
  });

  it('revokes a key: its next command fails with api_key_revoked', async () => {
    const key = (await gpuai(['keys', 'create', '--tenant', 'gamma'], cp.adminKey)).stdout.trim();
    const id = key.slice(4, 24);
    const revoked = await gpuai(['keys', 'revoke', id], cp.adminKey);
    expect(revoked.code).toBe(0);
    expect(revoked.stdout).toContain(`revoked ${id}`);
    const after = await gpuai(['jobs', 'list'], key);
    expect(after.code).toBe(4);
    expect(after.stderr).toContain('HTTP 401 api_key_revoked');
    const unknown = await gpuai(['keys', 'revoke', 'a'.repeat(20), '--json'], cp.adminKey);
    expect(unknown.code).toBe(4);
    expect(JSON.parse(unknown.stderr)).toMatchObject({ error: { code: 'api_key_not_found' } });
  });

  it('refuses bad flags before sending anything (exit 2)', async () => {
    for (const [args, message] of [
      [['--scopes', 'root'], '"root" is not a scope'],
      [['--scopes', ','], 'at least one of submit, read, admin'],
      [['--expires', 'tomorrow'], '--expires expects a lifetime like 30d'],
      [['--tenant', 'a#b'], 'is not a tenant id'],
    ] as const) {
      const run = await gpuai(['keys', 'create', ...args], cp.adminKey);
      expect({ code: run.code, stderr: run.stderr }).toEqual({ code: 2, stderr: expect.stringContaining(message) });
    }
  });

  it('without any key, says that the route needs one', async () => {
    const run = await gpuai(['jobs', 'list']);
    expect(run.code).toBe(4);
    expect(run.stderr).toContain('this route needs an API key');
    expect(run.stderr).toContain('HTTP 401 missing_api_key');
  });

  it('explains where keys come from in its help', async () => {
    const help = await runGpuai(['keys', '--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('$GPUAI_API_KEY');
    expect(help.stdout).toContain('must be mode 0600');
    expect(help.stdout).toContain('admin-key');
  });

  it('says in keys create --help that an admin key operates the whole deployment, whatever its tenant', async () => {
    const help = await runGpuai(['keys', 'create', '--help']);
    expect(help.code).toBe(0);
    const text = help.stdout.replace(/\s+/g, ' ');
    expect(text).toContain('operator of the whole deployment');
    expect(text).toContain("every tenant's keys and join tokens");
    expect(text).toContain('whatever its tenant');
  });
});
