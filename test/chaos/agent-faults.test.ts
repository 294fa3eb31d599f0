import { afterEach, describe, expect, it } from 'vitest';
import { Agent } from '../../edge-agent/agent.js';
import { testProbe } from '../../edge-agent/test-support/fixtures.js';
import { type RunningControlPlane, startControlPlane } from '../../embedded/control-plane-server.js';
import { type FaultProxy, startFaultProxy } from '../support/fault-proxy.js';
import { tempDir, waitFor } from '../support/processes.js';

/**
 * Faults the chaos run found in the agent, each pinned by a test against the real embedded control
 * plane with the fault proxy in front.
 */

const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function controlPlaneBehindProxy(): Promise<{ cp: RunningControlPlane; proxy: FaultProxy; agentDir: string }> {
  const cpDir = tempDir('chaos-cp');
  const agentDir = tempDir('chaos-agent');
  cleanups.push(cpDir.remove, agentDir.remove);
  const cp = await startControlPlane({
    port: 0,
    host: '127.0.0.1',
    dataDir: cpDir.path,
    reaperIntervalMs: 200,
    settings: { enrollment: 'open' },
    log: () => undefined,
  });
  cleanups.push(() => cp.stop());
  const proxy = await startFaultProxy(cp.url);
  cleanups.push(() => proxy.close());
  return { cp, proxy, agentDir: agentDir.path };
}

describe('an agent meeting garbled answers', () => {
  it('keeps registering when the answer to its registration is not JSON (a proxy in the way), instead of exiting', async () => {
    const { proxy, agentDir } = await controlPlaneBehindProxy();
    proxy.garbleNext(1, undefined, (r) => r.method === 'POST' && r.path === '/v1/nodes');
    const agent = new Agent({
      api: proxy.url,
      dataDir: agentDir,
      region: 'local',
      slots: 1,
      pollWaitSeconds: 1,
      graceSeconds: 0,
      probe: testProbe,
      backoff: { initialMs: 20, maxMs: 100 },
    });
    let exited: unknown = 'still running';
    const running = agent.run().then(
      () => (exited = 'resolved'),
      (error: unknown) => (exited = error),
    );
    cleanups.push(async () => {
      await agent.shutdown();
      await running;
    });
    await waitFor(
      'a second registration',
      async () =>
        proxy.requests.filter((r) => r.path === '/v1/nodes' && r.outcome === 'forwarded' && (r.status ?? 0) < 300)
          .length > 0
          ? true
          : undefined,
      10_000,
      50,
    );
    expect(exited).toBe('still running');
    expect(proxy.requests.filter((r) => r.path === '/v1/nodes').map((r) => r.outcome)).toEqual([
      'garbled',
      'forwarded',
    ]);
  });
});
