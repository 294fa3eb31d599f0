/**
 * The real executable as users run it: `node bin/gpuai.js` in a child process, for help output and
 * exit codes that only a real process shows.
 */
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FakeControlPlane, fakeJobId, startFakeControlPlane } from './testing/fake-control-plane.js';

const root = fileURLToPath(new URL('..', import.meta.url));

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the executable; asynchronously, because the fake control plane lives in this process. */
function gpuai(args: readonly string[], env: Record<string, string> = {}): Promise<Result> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['bin/gpuai.js', ...args],
      { cwd: root, env: { ...process.env, NO_COLOR: '', GPUAI_API: '', ...env }, timeout: 15_000 },
      (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof error.code === 'number' ? error.code : -1;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

let fake: FakeControlPlane;
beforeAll(async () => {
  fake = await startFakeControlPlane();
});
afterAll(() => fake.close());

describe('bin/gpuai.js', () => {
  it('prints help with the exit codes, and exits 0', async () => {
    const run = await gpuai(['--help']);
    expect(run.code).toBe(0);
    expect(run.stdout).toContain('Usage: gpuai [options] [command]');
    expect(run.stdout).toMatch(/Exit codes:\n {2}0 +ok\n {2}1 +the job failed/);
    expect(run.stdout).toContain('124  jobs wait timed out');
  });

  it('gives every command examples', async () => {
    const runs = await Promise.all(
      [['jobs', 'submit'], ['jobs', 'wait'], ['nodes', 'list'], ['start']].map((command) =>
        gpuai([...command, '--help']),
      ),
    );
    for (const run of runs) {
      expect(run.code).toBe(0);
      expect(run.stdout).toContain('Examples:\n  $ gpuai ');
      expect(run.stdout).toContain('Global Options:');
    }
  });

  it('exits 2 on a usage error', async () => {
    const run = await gpuai(['jobs', 'submit', '--gpus', '2']);
    expect(run.code).toBe(2);
    expect(run.stderr).toContain('error: nothing to run');
  });

  it('exits 3 when the control plane is unreachable', async () => {
    const down = await startFakeControlPlane();
    await down.close();
    const run = await gpuai(['jobs', 'list', '--api', down.url]);
    expect(run.code).toBe(3);
    expect(run.stderr).toContain(`cannot reach the control plane at ${down.url}`);
  });

  it('submits the argv after -- and exits 4 with the error JSON on a 404', async () => {
    const submitted = await gpuai(['jobs', 'submit', '--gpus', 'H100:1', '--', 'python', 'train.py', '--lr', '3e-4'], {
      GPUAI_API: fake.url,
    });
    expect(submitted.code).toBe(0);
    expect(JSON.parse(fake.requests.at(-1)?.body ?? '{}').command).toEqual(['python', 'train.py', '--lr', '3e-4']);

    const missing = await gpuai(['jobs', 'get', fakeJobId(999), '--json'], { GPUAI_API: fake.url });
    expect(missing.code).toBe(4);
    expect(missing.stdout).toBe('');
    expect(JSON.parse(missing.stderr).error.code).toBe('job_not_found');
  });

  it('exits 1 when a waited-for job fails', async () => {
    const job = fake.addJob();
    fake.script(job.id, ['running', 'failed']);
    const run = await gpuai(['jobs', 'wait', job.id, '--interval', '100ms'], { GPUAI_API: fake.url });
    expect(run.code).toBe(1);
    expect(run.stdout).toMatch(/^status +failed$/m);
  });
});
