import { randomBytes } from 'node:crypto';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { type JobWithTasks, resultHash, sha256Hex } from '../../protocol/index.js';
import {
  Api,
  adminKeyOf,
  freePort,
  type Proc,
  runCli,
  startAgent,
  startControlPlane,
  tempDir,
  waitFor,
} from '../support/processes.js';

/**
 * Jobs sealed to the node, end to end over real HTTP: the embedded control plane, a real agent
 * process and the CLI. The job's secret env reaches the task's process (its stdout is the secret)
 * but no file of the control plane, none of its output, and no response; its log tail is sealed
 * to the result key given at submit, and `gpuai jobs logs --key` opens it.
 */
const dir = tempDir('sealed-env');
const cpDir = join(dir.path, 'cp');
const procs: Proc[] = [];
const secret = `s3cret-${randomBytes(8).toString('hex')}`;

afterAll(async () => {
  await Promise.all(procs.map((p) => p.kill('SIGKILL')));
  dir.remove();
});

const filesUnder = (root: string): string[] =>
  readdirSync(root, { withFileTypes: true, recursive: true })
    .filter((e) => e.isFile())
    .map((e) => join(e.parentPath, e.name));

describe('a job with a secret env and a result key', () => {
  it('runs with its env on the node, and only the result key reads its log', async () => {
    const port = await freePort();
    const controlPlane = startControlPlane(port, cpDir);
    procs.push(controlPlane);
    const api = new Api(`http://127.0.0.1:${port}`, () => adminKeyOf(cpDir));
    await waitFor('the control plane', () => api.healthy(), 30_000);
    procs.push(startAgent(api.url, join(dir.path, 'agent'), 'sealer'));
    await waitFor('a live node', async () => ((await api.liveNodes()) === 1 ? true : undefined), 30_000);

    const env = { GPUAI_API: api.url, GPUAI_API_KEY: adminKeyOf(cpDir), TOKEN: secret };
    const keyFile = join(dir.path, 'result.jwk');
    const keygen = await runCli(['jobs', 'keygen', keyFile], env);
    expect(keygen.code).toBe(0);
    const submitted = await runCli(
      ['jobs', 'submit', '--json', '--env', 'TOKEN', '--result-key', keyFile, '--command', 'printf "%s" "$TOKEN"'],
      env,
    );
    expect(submitted.code).toBe(0);
    const job = JSON.parse(submitted.stdout) as JobWithTasks;
    expect(job.spec.env).toEqual({ TOKEN: '[sealed]' });
    expect(job.spec.resultKey).toBe(keygen.stdout.trim());

    const [done] = await api.finished([job], 60_000);
    expect(done?.status).toBe('succeeded');
    const result = done?.tasks[0]?.result;
    // The process printed the secret: it got the env, opened on the node.
    const stdout = { name: 'stdout', sha256: sha256Hex(secret), bytes: Buffer.byteLength(secret) };
    expect(result?.resultHash).toBe(resultHash([stdout]));
    expect(result?.logTail).toMatch(/^hpke1\./);

    const sealedLogs = await runCli(['jobs', 'logs', job.id], env);
    expect(sealedLogs.stdout).not.toContain(secret);
    expect(sealedLogs.stdout).toContain('pass --key FILE');
    const logs = await runCli(['jobs', 'logs', job.id, '--key', keyFile], env);
    expect(logs.code).toBe(0);
    expect(logs.stdout).toContain(secret);

    // The control plane holds it nowhere in the clear: not in its files, its output or its answers.
    expect(JSON.stringify(done)).not.toContain(secret);
    expect(JSON.stringify(await api.jobs())).not.toContain(secret);
    expect(controlPlane.output.join('')).not.toContain(secret);
    for (const file of filesUnder(cpDir)) expect(readFileSync(file).includes(secret), file).toBe(false);
  }, 120_000);
});
