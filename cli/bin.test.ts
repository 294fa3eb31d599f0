/**
 * The real executable as users run it: `node bin/gpuai.js` in a child process, for help output and
 * exit codes that only a real process shows.
 */
import { execFile } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startFaultProxy } from '../test/support/fault-proxy.js';
import { startTestControlPlane, type TestControlPlane } from './testing/control-plane.js';

const root = fileURLToPath(new URL('..', import.meta.url));

interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the executable; asynchronously, because the control plane lives in this process. */
function gpuai(args: readonly string[], env: Record<string, string> = {}): Promise<Result> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      ['bin/gpuai.js', ...args],
      // Generous: each run starts tsx, and on a loaded machine a start alone can take many seconds.
      { cwd: root, env: { ...process.env, NO_COLOR: '', GPUAI_API: '', ...env }, timeout: 90_000 },
      (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof error.code === 'number' ? error.code : -1;
        resolve({ code, stdout, stderr });
      },
    );
  });
}

let cp: TestControlPlane;
beforeAll(async () => {
  cp = await startTestControlPlane();
});
afterAll(() => cp.stop());

// Each test starts one to four real processes.
describe('bin/gpuai.js', { timeout: 180_000 }, () => {
  it('prints help with the exit codes, and exits 0', async () => {
    const run = await gpuai(['--help']);
    expect(run.code).toBe(0);
    expect(run.stdout).toContain('Usage: gpuai [options] [command]');
    expect(run.stdout).toMatch(/Exit codes:\n {2}0 +ok\n {2}1 +the job failed/);
    expect(run.stdout).toContain('124  jobs wait timed out');
  });

  it('gives every command examples', async () => {
    const runs: Result[] = [];
    // One at a time: four tsx start-ups at once starve each other on a small machine.
    for (const command of [['jobs', 'submit'], ['jobs', 'wait'], ['nodes', 'list'], ['start']]) {
      runs.push(await gpuai([...command, '--help']));
    }
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
    const down = await startFaultProxy(cp.directUrl);
    await down.close();
    const run = await gpuai(['jobs', 'list', '--api', down.url]);
    expect(run.code).toBe(3);
    expect(run.stderr).toContain(`cannot reach the control plane at ${down.url}`);
  });

  it('submits the argv after -- and exits 4 with the error JSON on a 404', async () => {
    const submitted = await gpuai(
      ['jobs', 'submit', '--gpus', 'H100:1', '--', 'python', 'train.py', '--lr', '3e-4'],
      cp.env,
    );
    expect(submitted.code).toBe(0);
    const job = await cp.getJob(submitted.stdout.trim());
    expect(job.spec.command).toEqual(['python', 'train.py', '--lr', '3e-4']);

    const missing = await gpuai(['jobs', 'get', `job_${'0'.repeat(26)}`, '--json'], cp.env);
    expect(missing.code).toBe(4);
    expect(missing.stdout).toBe('');
    expect(JSON.parse(missing.stderr).error.code).toBe('job_not_found');
  });

  it('exits 1 when a waited-for job fails', async () => {
    const job = await cp.jobIn('running', { retries: 0 });
    const waiting = gpuai(['jobs', 'wait', job.id, '--interval', '100ms'], cp.env);
    // The wait has seen the job running before it fails.
    while (!cp.proxy.requests.some((r) => r.path === `/v1/jobs/${job.id}` && r.status === 200)) {
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    await cp.advance(job, 'failed');
    const run = await waiting;
    expect(run.code).toBe(1);
    expect(run.stdout).toMatch(/^status +failed$/m);
  });
});
