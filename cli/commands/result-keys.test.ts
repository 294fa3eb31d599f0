import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { generateSealingKeyPair, sealResultText } from '../../protocol/index.js';
import { startTestControlPlane, type TestControlPlane } from '../testing/control-plane.js';
import { runGpuai, type TestRunOptions } from '../testing/run-cli.js';

let cp: TestControlPlane;
let dir: string;
beforeAll(async () => {
  cp = await startTestControlPlane();
});
afterAll(() => cp.stop());
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'gpuai-result-keys-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const gpuai = (args: readonly string[], options: TestRunOptions = {}) =>
  runGpuai(args, { ...options, env: { ...cp.env, ...options.env } });

describe('result keys', () => {
  it('keygen writes an owner-only X25519 JWK, prints the public key, and never overwrites', async () => {
    const file = join(dir, 'result.jwk');
    const run = await gpuai(['jobs', 'keygen', file]);
    expect(run.code).toBe(0);
    const publicKey = run.stdout.trim();
    expect(publicKey).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect((await stat(file)).mode & 0o777).toBe(0o600);
    const jwk = JSON.parse(await readFile(file, 'utf8'));
    expect(jwk).toMatchObject({ kty: 'OKP', crv: 'X25519', x: publicKey });
    expect(jwk.d).toMatch(/^[A-Za-z0-9_-]{43}$/);

    const again = await gpuai(['jobs', 'keygen', file]);
    expect(again.code).not.toBe(0);
    expect(again.stderr).toContain('exists');
    expect(JSON.parse(await readFile(file, 'utf8')).d).toBe(jwk.d);
  });

  it('submit --result-key puts the public key in the spec, from a key file or a bare key', async () => {
    const file = join(dir, 'result.jwk');
    const publicKey = (await gpuai(['jobs', 'keygen', file])).stdout.trim();
    const submitted = await gpuai(['jobs', 'submit', '--result-key', file, '--command', 'true']);
    expect(submitted.code).toBe(0);
    expect((await cp.getJob(submitted.stdout.trim())).spec.resultKey).toBe(publicKey);
    const bare = join(dir, 'result.pub');
    await writeFile(bare, `${publicKey}\n`);
    const dry = await gpuai(['jobs', 'submit', '--dry-run', '--result-key', bare, '--command', 'true']);
    expect(JSON.parse(dry.stdout).resultKey).toBe(publicKey);
    await writeFile(bare, 'not a key');
    const bad = await gpuai(['jobs', 'submit', '--result-key', bare, '--command', 'true']);
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toContain('--result-key');
  });

  it('submit --result-key also takes the public key keygen printed, as a string', async () => {
    const publicKey = (await gpuai(['jobs', 'keygen', join(dir, 'result.jwk')])).stdout.trim();
    const dry = await gpuai(['jobs', 'submit', '--dry-run', '--result-key', publicKey, '--command', 'true']);
    expect(dry.code).toBe(0);
    expect(JSON.parse(dry.stdout).resultKey).toBe(publicKey);
    // Neither a key nor a file: the error says both were tried.
    const bad = await gpuai(['jobs', 'submit', '--result-key', 'nope', '--command', 'true']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toContain('--result-key nope');
    expect(bad.stderr).toMatch(/public key/);
    const help = await gpuai(['jobs', 'submit', '--help']);
    expect(help.stdout).toMatch(/--result-key <file\|key>/);
    expect(help.stdout).toMatch(/printed\s+public\s+key/);
  });

  it('logs --key opens sealed log tails; without it, or with another key, they stay sealed', async () => {
    const file = join(dir, 'result.jwk');
    const publicKey = (await gpuai(['jobs', 'keygen', file])).stdout.trim();
    // The test node seals its log tail to the job's result key, as the agent does.
    const job = await cp.jobIn(
      'succeeded',
      { resultKey: publicKey },
      {
        logTail: ({ jobId, taskId }) =>
          sealResultText(publicKey, 'the secret output\n', { jobId, taskId, field: 'logTail' }),
      },
    );
    expect(JSON.stringify(await cp.getJob(job.id))).not.toContain('the secret output');
    const opened = await gpuai(['jobs', 'logs', job.id, '--key', file]);
    expect(opened.code).toBe(0);
    expect(opened.stdout).toContain('the secret output');

    const json = await gpuai(['jobs', 'logs', job.id, '--key', file, '--json']);
    expect(JSON.parse(json.stdout).tasks[0]).toMatchObject({ logTail: 'the secret output\n', sealed: 'opened' });

    const without = await gpuai(['jobs', 'logs', job.id]);
    expect(without.stdout).toContain('sealed');
    expect(without.stdout).not.toContain('the secret output');

    const other = join(dir, 'other.jwk');
    const otherKey = generateSealingKeyPair();
    await writeFile(
      other,
      JSON.stringify({ kty: 'OKP', crv: 'X25519', x: otherKey.publicKey, d: otherKey.privateKey }),
    );
    const wrong = await gpuai(['jobs', 'logs', job.id, '--key', other]);
    expect(wrong.stdout).toContain('sealed to another key');
    expect(wrong.stdout).not.toContain('the secret output');

    const publicOnly = join(dir, 'public.jwk');
    await writeFile(publicOnly, JSON.stringify({ kty: 'OKP', crv: 'X25519', x: publicKey }));
    const refused = await gpuai(['jobs', 'logs', job.id, '--key', publicOnly]);
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain('public key only');
  });
});
