import { afterEach, describe, expect, it } from 'vitest';
import { Agent } from '../../edge-agent/agent.js';
import { testProbe } from '../../edge-agent/test-support/fixtures.js';
import { tempDir, waitFor } from '../support/processes.js';
import { type Cleanups, servedControlPlane } from '../support/served-control-plane.js';

/**
 * Faults the chaos run found in the agent, each pinned by a test against the real embedded control
 * plane with the fault proxy in front.
 */

const cleanups: Cleanups = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

describe('an agent meeting garbled answers', () => {
  it('keeps registering when the answer to its registration is not JSON (a proxy in the way), instead of exiting', async () => {
    const { proxy } = await servedControlPlane(cleanups, 'chaos');
    const agentDir = tempDir('chaos-agent');
    cleanups.push(agentDir.remove);
    proxy.garbleNext(1, undefined, (r) => r.method === 'POST' && r.path === '/v1/nodes');
    const agent = new Agent({
      api: proxy.url,
      dataDir: agentDir.path,
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
