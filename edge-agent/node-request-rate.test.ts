import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { generateNodeKeyPair, loadNodeKeyPair, nodeIdFromPublicKey } from '../protocol/index.js';
import { AgentHarness, nodeRateLimit } from '../test/support/agent-harness.js';
import { Agent } from './agent.js';
import { ControlPlaneClient } from './client.js';
import { RateLimitedError } from './errors.js';
import { nodeProgressReportsPerSecond, progressIntervalFor } from './task-run.js';
import { testProbe } from './test-support/fixtures.js';

/**
 * The control plane allows each node 600 requests a minute (functions/domain/security/rate-limit.ts,
 * scope `node`), whatever its slot count. A node past it gets 429s on everything, its heartbeats
 * too, which are what keep its leases. Against the real embedded control plane.
 */
let harness: AgentHarness | undefined;
afterEach(async () => {
  await harness?.stop();
  harness = undefined;
});

describe('progressIntervalFor', () => {
  it('is 2 s up to 8 slots, then grows so the whole node sends at most 4 progress reports a second', () => {
    expect(progressIntervalFor(1)).toBe(2_000);
    expect(progressIntervalFor(8)).toBe(2_000);
    expect(progressIntervalFor(20)).toBe(5_000);
    expect(progressIntervalFor(64)).toBe(16_000);
    for (const slots of [1, 7, 9, 20, 33, 64]) {
      expect(slots / (progressIntervalFor(slots) / 1000)).toBeLessThanOrEqual(nodeProgressReportsPerSecond);
    }
  });
});

describe('a node with many busy slots', { timeout: 120_000 }, () => {
  it('sends progress for all of them together at about 4 reports a second, not 2 s per task', async () => {
    const h = await AgentHarness.start({ dataDirPrefix: 'gpuai-agent-rate-' });
    harness = h;
    const slots = 20;
    const go = join(h.dataDir, 'go');
    // Output that changes every half second: every interval has something new to report.
    const chatty = `i=0; while [ ! -e '${go}' ]; do i=$((i+1)); echo "line $i"; sleep 0.5; done`;
    const job = await h.submit({ command: ['sh', '-c', chatty], tasks: slots });
    // The agent's defaults (the harness's agents report every 50 ms).
    const agent = new Agent({
      api: h.url,
      dataDir: h.dataDir,
      region: 'local',
      slots,
      pollWaitSeconds: 1,
      graceSeconds: 0,
      logger: h.logger,
      // A CPU task takes a core of the node: enough cores for every slot.
      probe: async () => {
        const report = await testProbe();
        return { ...report, inventory: { ...report.inventory, cpu: { model: 'Test CPU', cores: 64 } } };
      },
      killGraceMs: 200,
    });
    const running = agent.run();
    try {
      for (let index = 0; index < slots; index++) {
        await h.waitForTask(job.id, (t) => t.state === 'running', 'running', index);
      }
      // A rate is measured over a window; 12 s is more than two of the 5 s intervals 20 slots get.
      const windowMs = 12_000;
      const from = Date.now();
      await new Promise((resolve) => setTimeout(resolve, windowMs));
      const reports = h.sent('POST', '/progress').filter((r) => r.at >= from && r.at < from + windowMs).length;
      // Each task reports at most every 5 s: at most 3 in the window (t, t+5, t+10), 60 in all.
      // Before: every 2 s, about 6 a task, 120 in all (10 a second: the whole 600 a minute).
      expect(reports, `${reports} progress reports in ${windowMs} ms`).toBeLessThanOrEqual(slots * 3);
      expect(reports).toBeGreaterThan(0);
    } finally {
      await writeFile(go, '');
      await agent.shutdown();
      await running;
    }
  });
});

describe('a node answered 429', { timeout: 60_000 }, () => {
  it('holds every call back until the Retry-After has passed, then goes on; it does not send into the full window', async () => {
    const h = await AgentHarness.start({
      dataDirPrefix: 'gpuai-agent-429-',
      // Only the node scope counts here: 3 a window of 2 s, so the Retry-After (1-2 s) is short.
      settings: {
        rateLimits: nodeRateLimit({ limit: 3, windowSeconds: 2 }),
      },
    });
    harness = h;
    const keyPair = loadNodeKeyPair(generateNodeKeyPair().privateKeyPem);
    const nodeId = nodeIdFromPublicKey(keyPair.publicKey);
    const client = new ControlPlaneClient({ api: h.url, nodeId, keyPair, backoff: { initialMs: 5, maxMs: 20 } });
    const { inventory } = await testProbe();
    await client.register({ publicKey: keyPair.publicKey, agentVersion: '0.0.0-test', inventory });

    let limited: RateLimitedError | undefined;
    for (let i = 0; i < 10 && limited === undefined; i++) {
      await client.heartbeat({ tasks: [] }).catch((error: unknown) => {
        if (!(error instanceof RateLimitedError)) throw error;
        limited = error;
      });
    }
    expect(limited?.retryAfterMs).toBeGreaterThanOrEqual(1_000);
    // Another call, even one that is never retried, waits out the Retry-After and then goes through.
    await expect(client.heartbeat({ tasks: [] })).resolves.toMatchObject({ abort: [] });

    const beats = h.sent('POST', '/heartbeat');
    const refused = beats.filter((r) => r.status === 429);
    expect(refused).toHaveLength(1);
    const after = beats.at(-1);
    expect(after?.status).toBe(200);
    expect((after?.at ?? 0) - (refused[0]?.at ?? 0)).toBeGreaterThanOrEqual((limited?.retryAfterMs ?? 0) - 50);
  });
});
