import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { type Proc, startAgent, tempDir, waitFor } from '../support/processes.js';
import { type Cleanups, servedControlPlane } from '../support/served-control-plane.js';

/**
 * Two `gpuai-agent run` on one data dir share its node key: they would register, claim and report
 * as one node. The second one exits at once naming the first; the dir of a SIGKILLed agent is
 * taken over by the next one (the kernel dropped its lock: no stale pid file to clean up by hand).
 */

const cleanups: Cleanups = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

function agent(url: string, dataDir: string, name: string): Proc {
  const proc = startAgent(url, dataDir, name);
  cleanups.push(() => proc.kill('SIGKILL'));
  return proc;
}

const registered = (proc: Proc) => async () => (/registered as /.test(proc.tail()) ? true : undefined);

describe('gpuai-agent run on a data dir another agent holds', () => {
  it('exits non-zero at once naming the holder; after the holder is SIGKILLed the next agent takes the dir over', async () => {
    const { url, api } = await servedControlPlane(cleanups, 'agent-lock');
    const dir = tempDir('agent-lock-data');
    cleanups.push(dir.remove);

    const first = agent(url, dir.path, 'first');
    await waitFor('the first agent to register', registered(first), 60_000, 100);

    const second = agent(url, dir.path, 'second');
    // Before the lock, the second agent ran on (and registered as the same node): this timed out.
    const exited = await Promise.race([
      second.exited,
      new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), 30_000)),
    ]);
    expect(exited, second.tail()).toMatchObject({ code: 1 });
    expect(second.tail()).toContain(`is in use by another gpuai-agent (pid ${first.child.pid})`);
    expect(second.tail()).not.toMatch(/registered as|node identity/);
    expect(first.alive, first.tail()).toBe(true);

    await first.kill('SIGKILL');
    const third = agent(url, dir.path, 'third');
    await waitFor('the third agent to register', registered(third), 60_000, 100);
    expect(readFileSync(join(dir.path, 'agent.pid'), 'utf8').trim()).toBe(String(third.child.pid));
    expect(await api.liveNodes()).toBe(1);
  }, 180_000);
});
