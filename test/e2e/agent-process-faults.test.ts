import { spawn } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { JobWithTasks } from '../../protocol/index.js';
import { Proc, repoRoot, startAgent, tempDir, waitFor } from '../support/processes.js';
import { type Cleanups, servedControlPlane } from '../support/served-control-plane.js';

/**
 * The agent as a real process (`gpuai-agent run`) against the real embedded control plane, with
 * the fault proxy in front: the two agent defects the chaos run found (docs/reliability.md).
 */

const cleanups: Cleanups = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function agentProcess(api: string, env: NodeJS.ProcessEnv = {}): { proc: Proc; dataDir: string } {
  const dataDir = tempDir('agent-faults-agent');
  cleanups.push(dataDir.remove);
  const proc = startAgent(api, dataDir.path, 'faulty', { GPUAI_LOG_FORMAT: 'json', ...env });
  cleanups.push(() => proc.kill('SIGKILL'));
  return { proc, dataDir: dataDir.path };
}

/** Whether `proc` is still running `ms` from now: the window in which a broken agent used to exit. */
async function aliveAfter(proc: Proc, ms: number): Promise<boolean> {
  const exited = await Promise.race([proc.exited.then(() => true), new Promise((r) => setTimeout(() => r(false), ms))]);
  return !exited;
}

describe('an agent whose connections are reset as they open', () => {
  it('does not exit with 13 (a request nothing kept alive) but waits the cut out and registers', async () => {
    const { api, proxy } = await servedControlPlane(cleanups, 'agent-faults');
    // The chaos run's `cut('reset')`: Node 20's fetch never settles a POST whose socket is reset
    // before the answer, and the request's own timeout timer (AbortSignal.timeout) is unref'd, so
    // the registration was the only thing left and the process exited 13.
    proxy.cut('reset');
    const { proc } = agentProcess(proxy.url);
    await waitFor('the agent to try to register', async () => (proxy.connectionsCut > 0 ? true : undefined), 60_000);
    expect(await aliveAfter(proc, 3_000), proc.tail()).toBe(true);
    proxy.restore();
    // The hung request ends at its 30 s timeout; the retry after it goes through.
    await waitFor('the node to register', async () => ((await api.liveNodes()) === 1 ? true : undefined), 60_000, 250);
    expect(proc.alive, proc.tail()).toBe(true);
  }, 120_000);
});

describe('an agent whose event loop empties while it runs', () => {
  it('logs why and exits non-zero instead of exiting 13 without a word', async () => {
    // A probe that never settles and holds nothing open: the shape of the chaos run's hang.
    const script = join(repoRoot, 'test', 'e2e', 'support', 'agent-stuck-probe.ts');
    const dataDir = tempDir('agent-faults-stuck');
    cleanups.push(dataDir.remove);
    const proc = new Proc(
      spawn(process.execPath, ['--import', 'tsx', script, dataDir.path], {
        cwd: repoRoot,
        stdio: ['ignore', 'pipe', 'pipe'],
      }),
    );
    cleanups.push(() => proc.kill('SIGKILL'));
    const { code } = await proc.exited;
    expect(code, proc.tail()).toBe(1);
    expect(proc.tail()).toMatch(/event loop emptied while the agent was running \(probing the inventory\)/);
  }, 60_000);
});

describe('an agent that cannot make work dirs', () => {
  it('releases the tasks it claims instead of failing them, and backs off instead of claiming more', async () => {
    const { api, proxy } = await servedControlPlane(cleanups, 'agent-faults');
    // The work root's parent is a regular file: every work dir fails with ENOTDIR, as on a full
    // disk or a TMPDIR the task user cannot reach. (Root ignores permission bits, so a file it is.)
    // So is tsx's compile cache dir, as on the chaos run's full disk, where the agent could not
    // even load.
    const tmp = tempDir('agent-faults-tmp');
    cleanups.push(tmp.remove);
    const uid = process.getuid?.() ?? 'user';
    writeFileSync(join(tmp.path, `gpuai-work-${uid}`), 'not a directory');
    writeFileSync(join(tmp.path, `tsx-${process.geteuid?.() ?? uid}`), 'not a directory');
    const jobs: JobWithTasks[] = [];
    for (let i = 0; i < 12; i++) jobs.push(await api.submit({ command: ['true'], retries: 1 }));
    const { proc } = agentProcess(proxy.url, { TMPDIR: tmp.path });
    await waitFor('the node to register', async () => ((await api.liveNodes()) === 1 ? true : undefined), 60_000, 250);
    const assigned = () => proxy.requests.filter((r) => r.path.includes('/work') && r.status === 200).length;
    await waitFor('a first claim', async () => (assigned() > 0 ? true : undefined), 30_000, 100);
    const windowMs = 8_000;
    expect(await aliveAfter(proc, windowMs), proc.tail()).toBe(true);
    // Before: a claim every few milliseconds, each failed at once, all twelve jobs failed in the window.
    expect(assigned(), proc.tail()).toBeLessThanOrEqual(6);
    const views = await Promise.all(jobs.map((job) => api.job(job.id)));
    const attempts = views.flatMap((view) => view.tasks.flatMap((task) => task.attempts));
    const ended = attempts.filter((attempt) => attempt.outcome !== undefined);
    expect(ended.length, proc.tail()).toBeGreaterThan(0);
    for (const attempt of ended) {
      expect(attempt.outcome).toBe('released');
      expect(attempt.detail).toMatch(/could not prepare work dir/);
    }
    expect(views.filter((view) => view.status === 'failed')).toEqual([]);
    expect(proc.tail()).toMatch(/cannot start tasks on this node/);
  }, 120_000);
});
