import { existsSync } from 'node:fs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { sha256Hex } from '../protocol/index.js';
import { AgentHarness } from '../test/support/agent-harness.js';
import { workRootFor } from './runner/process-runner.js';
import { resolveTaskUser, type TaskUser } from './runner/task-user.js';

/** Against the real embedded control plane (test/support/agent-harness.ts). */
let harness: AgentHarness;

beforeEach(async () => {
  harness = await AgentHarness.start({ dataDirPrefix: 'gpuai-agent-taskuser-' });
});

afterEach(async () => {
  await harness.stop();
});

describe('Agent work root and task user', { timeout: 60_000 }, () => {
  it('removes its own work root when it stops and no work dir is left in it', async () => {
    const started = harness.startAgent();
    const job = await harness.submit({ command: ['printf', 'x'] });
    expect((await harness.finished(job.id)).status).toBe('succeeded');
    expect(existsSync(workRootFor(harness.dataDir))).toBe(true);
    await started.agent.shutdown();
    await started.running;
    harness.forget(started);
    expect(existsSync(workRootFor(harness.dataDir))).toBe(false);
  });

  it.runIf(process.getuid?.() === 0)('runs tasks as its task user (agent as root)', async () => {
    const nobody = resolveTaskUser(undefined).user as TaskUser;
    harness.startAgent({ taskUser: nobody });
    const job = await harness.submit({ command: ['id', '-u'] });
    const done = await harness.finished(job.id);
    const stdout = `${nobody.uid}\n`;
    expect(done.tasks[0]?.result).toMatchObject({
      exitCode: 0,
      outputs: [{ name: 'stdout', sha256: sha256Hex(stdout), bytes: stdout.length }],
    });
  });
});
