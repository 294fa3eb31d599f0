import { existsSync } from 'node:fs';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { sha256Hex } from '../protocol/index.js';
import { workRootFor } from './runner/process-runner.js';
import { resolveTaskUser, type TaskUser } from './runner/task-user.js';
import { AgentHarness } from './test-support/agent-harness.js';
import { testAssignment } from './test-support/fixtures.js';

let harness: AgentHarness;

beforeEach(async () => {
  harness = await AgentHarness.start('gpuai-agent-taskuser-');
});

afterEach(async () => {
  await harness.stop();
});

describe('Agent work root and task user', () => {
  it('removes its own work root when it stops and no work dir is left in it', async () => {
    const assignment = testAssignment(['printf', 'x']);
    harness.fake.enqueue(assignment);
    const started = harness.startAgent();
    await harness.fake.waitFor(() => harness.fake.results.get(assignment.taskId));
    expect(existsSync(workRootFor(harness.dataDir))).toBe(true);
    await started.agent.shutdown();
    await started.running;
    harness.forget(started);
    expect(existsSync(workRootFor(harness.dataDir))).toBe(false);
  });

  it.runIf(process.getuid?.() === 0)('runs tasks as its task user (agent as root)', async () => {
    const nobody = resolveTaskUser(undefined).user as TaskUser;
    const assignment = testAssignment(['id', '-u']);
    harness.fake.enqueue(assignment);
    harness.startAgent({ taskUser: nobody });
    const result = await harness.fake.waitFor(() => harness.fake.results.get(assignment.taskId));
    const stdout = `${nobody.uid}\n`;
    expect(result).toMatchObject({
      exitCode: 0,
      outputs: [{ name: 'stdout', sha256: sha256Hex(stdout), bytes: stdout.length }],
    });
  });
});
