import { chmodSync, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { parseCredentials, resolveApiKey } from './credentials.js';
import { startTestControlPlane, type TestControlPlane } from './testing/control-plane.js';
import { runGpuai } from './testing/run-cli.js';

const key = (c: string) => `gpk_${c.repeat(20)}_${c.toUpperCase().repeat(43)}`;
const [flagKey, envKey, fileKey, hostKey, adminKey] = ['a', 'b', 'c', 'd', 'e'].map(key) as [
  string,
  string,
  string,
  string,
  string,
];

let root: string;
let env: Record<string, string>;

function writeCredentials(text: string, mode = 0o600): string {
  const dir = join(root, 'config', 'gpuai');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, 'credentials');
  writeFileSync(file, text);
  chmodSync(file, mode);
  return file;
}

function writeAdminKey(mode = 0o600, key = adminKey): string {
  const dir = join(root, 'data');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, 'admin-key');
  writeFileSync(file, `${key}\n`);
  chmodSync(file, mode);
  return file;
}

beforeEach(() => {
  root = mkdtempSync(join(tmpdir(), 'gpuai-credentials-'));
  env = { XDG_CONFIG_HOME: join(root, 'config'), GPUAI_DATA_DIR: join(root, 'data') };
});
afterEach(() => rmSync(root, { recursive: true, force: true }));

const local = 'http://127.0.0.1:8787';

describe('where the CLI finds its API key', () => {
  it('takes --api-key, then GPUAI_API_KEY, then the credentials file, then the local admin key', () => {
    writeAdminKey();
    expect(resolveApiKey(undefined, env, local)).toMatchObject({ key: adminKey, source: 'admin-key' });
    writeCredentials(`# mine\napi_key = ${fileKey}\n`);
    expect(resolveApiKey(undefined, env, local)).toMatchObject({ key: fileKey, source: 'credentials-file' });
    expect(resolveApiKey(undefined, { ...env, GPUAI_API_KEY: envKey }, local)).toEqual({ key: envKey, source: 'env' });
    expect(resolveApiKey(flagKey, { ...env, GPUAI_API_KEY: envKey }, local)).toEqual({ key: flagKey, source: 'flag' });
  });

  it('honours XDG_CONFIG_HOME, else ~/.config', () => {
    writeCredentials(`api_key = ${fileKey}\n`);
    expect(resolveApiKey(undefined, { HOME: root }, local).source).toBe('none');
    mkdirSync(join(root, '.config', 'gpuai'), { recursive: true });
    writeFileSync(join(root, '.config', 'gpuai', 'credentials'), `api_key = ${hostKey}\n`, { mode: 0o600 });
    expect(resolveApiKey(undefined, { HOME: root }, local).key).toBe(hostKey);
  });

  it('picks the section of the control plane in use over the general key', () => {
    const text = `api_key = ${fileKey}\n\n[https://gpuai.example.com/]\napi_key = ${hostKey}\n`;
    expect(parseCredentials(text, 'https://gpuai.example.com')).toBe(hostKey);
    expect(parseCredentials(text, 'https://other.example.com')).toBe(fileKey);
    expect(parseCredentials(`[https://gpuai.example.com]\napi_key = ${hostKey}\n`, local)).toBeUndefined();
    expect(() => parseCredentials('token: abc\n', local, 'creds')).toThrow(/creds:1: expected "api_key = gpk_..."/);
  });

  it('refuses a credentials file that group or others can read, naming the fix', () => {
    const file = writeCredentials(`api_key = ${fileKey}\n`, 0o644);
    expect(() => resolveApiKey(undefined, env, local)).toThrow(
      `${file} is readable by others (mode 0644); run: chmod 600 ${file}`,
    );
    // An explicit key does not even look at the file.
    expect(resolveApiKey(flagKey, env, local).key).toBe(flagKey);
  });

  it('sends the local admin key only to a control plane on this machine, warning when its mode is wide', () => {
    const file = writeAdminKey(0o640);
    expect(resolveApiKey(undefined, env, 'https://gpuai.example.com')).toMatchObject({ source: 'none' });
    expect(resolveApiKey(undefined, env, 'https://gpuai.example.com').key).toBeUndefined();
    expect(resolveApiKey(undefined, env, 'http://localhost:9000').key).toBe(adminKey);
    expect(resolveApiKey(undefined, env, 'http://[::1]:8787').key).toBe(adminKey);
    expect(resolveApiKey(undefined, env, local).warning).toBe(
      `${file} is readable by others (mode 640); run: chmod 600 ${file}`,
    );
  });

  it('counts as this machine only loopback IP literals, localhost, [::1] and 0.0.0.0, never a name that starts with 127.', () => {
    writeAdminKey();
    for (const url of [
      'http://127.0.0.1:8787',
      'http://127.1.2.3:8787',
      'http://LOCALHOST:8787',
      'http://[::1]:8787',
      'http://0.0.0.0:8787',
    ]) {
      expect(resolveApiKey(undefined, env, url).key, url).toBe(adminKey);
    }
    for (const url of [
      'http://127.attacker.example',
      'http://127.0.0.1.nip.io:8787',
      'http://127.0.0.1.attacker.example',
      'http://127.0.0.256:8787',
      'http://localhost.attacker.example:8787',
      'http://10.0.0.1:8787',
    ]) {
      expect(resolveApiKey(undefined, env, url).key, url).toBeUndefined();
    }
  });

  it('says where it looked when it finds no key', () => {
    const none = resolveApiKey(undefined, env, local);
    expect(none.source).toBe('none');
    const text = (none.tried ?? []).join('\n');
    expect(text).toContain('--api-key');
    expect(text).toContain('GPUAI_API_KEY');
    expect(text).toContain(join(root, 'config', 'gpuai', 'credentials'));
    expect(text).toContain(join(root, 'data', 'admin-key'));
    const remote = resolveApiKey(undefined, env, 'https://gpuai.example.com');
    expect((remote.tried ?? []).join('\n')).toMatch(/not used, it is only sent to a control plane on this machine/);
  });
});

describe('gpuai sends the key it found', () => {
  /** The real control plane; each source below holds a key it issued. */
  let cp: TestControlPlane;
  const real: Record<'flag' | 'env' | 'file', string> = { flag: '', env: '', file: '' };
  beforeAll(async () => {
    cp = await startTestControlPlane();
    for (const source of ['flag', 'env', 'file'] as const) {
      const created = await cp.api<{ key: string }>('/v1/keys', {
        method: 'POST',
        body: JSON.stringify({ scopes: ['read'], name: source }),
      });
      real[source] = created.key;
    }
  });
  afterAll(() => cp.stop());

  const gpuai = (args: string[], runEnv: Record<string, string>) =>
    runGpuai(['nodes', 'list', '--api', cp.url, ...args], { env: runEnv, io: { fetch: cp.fetch } });
  const sent = async (args: string[], runEnv: Record<string, string>) => {
    const before = cp.sent.length;
    const run = await gpuai(args, runEnv);
    return { run, authorization: cp.sent[before]?.headers.get('authorization') ?? undefined };
  };

  it('as a bearer token, from each source in order, and the server takes it', async () => {
    writeAdminKey(0o600, cp.adminKey);
    const steps: [string[], Record<string, string>, string][] = [
      [[], env, cp.adminKey],
      [[], env, real.file],
      [[], { ...env, GPUAI_API_KEY: real.env }, real.env],
      [['--api-key', real.flag], { ...env, GPUAI_API_KEY: real.env }, real.flag],
    ];
    for (const [index, [args, runEnv, expected]] of steps.entries()) {
      if (index === 1) writeCredentials(`api_key = ${real.file}\n`);
      const { run, authorization } = await sent(args, runEnv);
      expect(authorization).toBe(`Bearer ${expected}`);
      expect(run).toMatchObject({ code: 0, stderr: '' });
    }
  });

  it('stops with exit 2 and the chmod to run when the credentials file is readable by others', async () => {
    const file = writeCredentials(`api_key = ${fileKey}\n`, 0o604);
    const before = cp.sent.length;
    const { code, stderr } = await gpuai([], env);
    expect(code).toBe(2);
    expect(stderr).toContain(`run: chmod 600 ${file}`);
    expect(cp.sent.length).toBe(before);
    const json = await gpuai(['--json'], env);
    expect(JSON.parse(json.stderr)).toMatchObject({ error: { code: 'credentials_error' } });
  });

  it('sends none when there is none; on 401 missing_api_key, says which sources it tried and what to do', async () => {
    const { authorization, run } = await sent([], env);
    expect(authorization).toBeUndefined();
    expect(run.code).toBe(4);
    expect(run.stderr).toContain('HTTP 401 missing_api_key');
    expect(run.stderr).toContain('no API key found');
    expect(run.stderr).toContain('--api-key');
    expect(run.stderr).toContain('GPUAI_API_KEY');
    expect(run.stderr).toContain(join(root, 'config', 'gpuai', 'credentials'));
    expect(run.stderr).toContain(join(root, 'data', 'admin-key'));
    expect(run.stderr).toContain('GPUAI_DATA_DIR');
    // --json keeps the server's body as it was sent.
    const json = await gpuai(['--json'], env);
    expect(JSON.parse(json.stderr)).toEqual({
      error: { code: 'missing_api_key', message: expect.any(String), requestId: expect.any(String) },
    });
  });

  it('reports a key the server refuses as the server words it, with no hint about finding one', async () => {
    const { run } = await sent(['--api-key', fileKey], env);
    expect(run.code).toBe(4);
    expect(run.stderr).toMatch(/HTTP 401 \w+/);
    expect(run.stderr).not.toContain('no API key found');
  });
});
