import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { type JobWithTasks, resultHash, sha256Hex } from '../../protocol/index.js';
import { Api, freePort, Proc, repoRoot, runCli, tempDir, waitFor } from '../support/processes.js';

/** The README's first minutes, as a new user runs them: `npm start`, submit, wait. */

const dataDir = tempDir('quickstart');
const stateDir = join(dataDir.path, 'state');
let start: Proc | undefined;

afterAll(async () => {
  await start?.kill('SIGKILL');
  dataDir.remove();
});

describe('quickstart', () => {
  it('npm start serves the API with a local agent that runs a submitted job', async () => {
    const port = await freePort();
    start = new Proc(
      spawn('npm', ['start', '--silent'], {
        cwd: repoRoot,
        env: { ...process.env, PORT: String(port), GPUAI_DATA_DIR: stateDir },
        stdio: ['ignore', 'pipe', 'pipe'],
        detached: true,
      }),
    );
    const api = new Api(`http://127.0.0.1:${port}`);
    await waitFor('npm start', () => api.healthy(), 60_000);
    expect(start.tail()).toContain(`http://127.0.0.1:${port}`);
    expect(start.tail()).toContain(join(stateDir, 'admin-key'));

    // The same data dir as `npm start` (the README runs both in one directory, with ./.gpuai): the
    // CLI finds the admin key that the first start wrote there, and needs no other setup.
    const env = { GPUAI_API: api.url, GPUAI_DATA_DIR: stateDir };
    const submitted = await runCli(['jobs', 'submit', '--command', 'echo hello', '--gpus', '0', '--json'], env);
    expect(submitted.stderr).toBe('');
    expect(submitted.code).toBe(0);
    const job = JSON.parse(submitted.stdout) as JobWithTasks;

    const waited = await runCli(['jobs', 'wait', job.id, '--json', '--timeout', '60s'], env);
    expect(waited.code).toBe(0);
    const done = JSON.parse(waited.stdout) as JobWithTasks;
    expect(done.status).toBe('succeeded');
    expect(done.tasks[0]?.result?.resultHash).toBe(
      resultHash([{ name: 'stdout', sha256: sha256Hex('hello\n'), bytes: 6 }]),
    );

    const logs = await runCli(['jobs', 'logs', job.id], env);
    expect(logs.code).toBe(0);
    expect(logs.stdout).toContain('== task 0 (verified, attempt 1)');
    expect(logs.stdout).toContain('hello');

    // Ctrl-C (SIGINT to the terminal's process group) stops npm, the control plane and its local
    // agent: no process of the group is left behind.
    const group = start.child.pid as number;
    process.kill(-group, 'SIGINT');
    await start.exited;
    await waitFor(
      'every process of the group to exit',
      async () => {
        try {
          process.kill(-group, 0);
          return undefined;
        } catch {
          return true;
        }
      },
      30_000,
    );
    await expect(fetch(`${api.url}/healthz`)).rejects.toThrow();
  }, 120_000);
});
