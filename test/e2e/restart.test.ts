import { afterAll, describe, expect, it } from 'vitest';
import type { JobWithTasks } from '../../protocol/index.js';
import {
  Api,
  adminKeyOf,
  freePort,
  nodeIdOf,
  type Proc,
  startAgent,
  startControlPlane,
  tempDir,
  waitFor,
} from '../support/processes.js';

/**
 * The control plane is killed mid-run and started again on the same data dir: nothing accepted
 * is lost, and the agents, which stay up through the outage, carry on with the same identities.
 */

const dirs = [tempDir('cp'), tempDir('agent0'), tempDir('agent1')];
const [cpDir, ...agentDirs] = dirs as [ReturnType<typeof tempDir>, ...ReturnType<typeof tempDir>[]];
const procs: Proc[] = [];

/** Resolves once `proc` prints, from now on, a line containing `text`; fails after `timeoutMs`. */
function nextLine(proc: Proc, text: string, timeoutMs = 30_000): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      proc.child.stderr?.off('data', seen);
      reject(new Error(`no "${text}" within ${timeoutMs} ms; the process printed:\n${proc.tail()}`));
    }, timeoutMs);
    const seen = (chunk: Buffer) => {
      if (!chunk.toString().includes(text)) return;
      clearTimeout(timer);
      proc.child.stderr?.off('data', seen);
      resolve();
    };
    proc.child.stderr?.on('data', seen);
  });
}

afterAll(async () => {
  await Promise.all(procs.map((p) => p.kill('SIGKILL')));
  for (const d of dirs) d.remove();
});

describe('a restart of the control plane', () => {
  it('loses no accepted job and the agents carry on', async () => {
    const port = await freePort();
    const api = new Api(`http://127.0.0.1:${port}`, () => adminKeyOf(cpDir.path));
    let controlPlane = startControlPlane(port, cpDir.path);
    procs.push(controlPlane);
    await waitFor('the control plane', () => api.healthy());
    const agents = agentDirs.map((d, i) => startAgent(api.url, d.path, `agent-${i}`));
    procs.push(...agents);

    const submitted: JobWithTasks[] = [];
    for (let i = 0; i < 20; i++) {
      submitted.push(
        await api.submit(
          { name: `r-${i}`, command: ['sh', '-c', 'sleep 0.4; echo done'], tasks: 1 + (i % 2) },
          `restart-${i}`,
        ),
      );
    }
    await waitFor('some tasks to finish', async () => {
      const jobs = await Promise.all(submitted.map((j) => api.job(j.id)));
      return jobs.flatMap((j) => j.tasks).filter((t) => t.state === 'verified').length >= 4 ? true : undefined;
    });

    // Down until every agent has noticed the outage, whatever the load makes of timings.
    const noticed = agents.map((a) => nextLine(a, 'connection lost'));
    await controlPlane.kill('SIGKILL');
    await Promise.all(noticed);
    const restored = agents.map((a) => nextLine(a, 'connection restored'));
    controlPlane = startControlPlane(port, cpDir.path);
    procs.push(controlPlane);
    await waitFor('the restarted control plane', () => api.healthy());
    await Promise.all(restored);

    // A retried submission after the restart is recognised by its idempotency key.
    const replay = await api.submit(
      { name: 'r-0', command: ['sh', '-c', 'sleep 0.4; echo done'], tasks: 1 },
      'restart-0',
    );
    expect(replay.id).toBe(submitted[0]?.id);

    const finished = await waitFor(
      'every job to finish',
      async () => {
        const jobs = await Promise.all(submitted.map((j) => api.job(j.id)));
        return jobs.every((j) => j.status === 'succeeded' || j.status === 'failed') ? jobs : undefined;
      },
      90_000,
      300,
    );
    expect(finished.map((j) => j.status)).toEqual(submitted.map(() => 'succeeded'));
    for (const task of finished.flatMap((j) => j.tasks)) {
      expect(task.attempts.filter((a) => a.outcome === 'completed')).toHaveLength(1);
    }
    expect(await api.jobs()).toHaveLength(20);

    // Same agents, same identities, no re-registration as new nodes.
    expect(agents.every((a) => a.alive)).toBe(true);
    const nodes = await api.nodes();
    expect(nodes.map((n) => n.id).sort()).toEqual(agentDirs.map((d) => nodeIdOf(d.path)).sort());
  }, 150_000);
});
