import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { nodeIdFromPublicKey, resultHash, sha256Hex } from '../protocol/index.js';
import type { Agent, AgentOptions } from './agent.js';
import { workRootFor } from './runner/process-runner.js';
import { AgentHarness } from './test-support/agent-harness.js';
import type { FakeControlPlane } from './test-support/fake-control-plane.js';
import { testAssignment, testJobId } from './test-support/fixtures.js';
import { waitForExit } from './test-support/processes.js';

let fake: FakeControlPlane;
let dataDir: string;
let _logLines: string[];
let harness: AgentHarness;

beforeEach(async () => {
  harness = await AgentHarness.start('gpuai-agent-');
  fake = harness.fake;
  dataDir = harness.dataDir;
  _logLines = harness.logLines;
});

afterEach(async () => {
  await harness.stop();
});

function startAgent(overrides: Partial<AgentOptions> = {}): { agent: Agent; running: Promise<void> } {
  return harness.startAgent({ name: 'test-node', ...overrides });
}

/** Stops the agent the way SIGTERM does and waits for it to finish. */
async function stopAgent(started: { agent: Agent; running: Promise<void> }): Promise<void> {
  await started.agent.shutdown();
  await started.running;
  harness.forget(started);
}

const logged = (fragment: string) => harness.logged(fragment);

describe('Agent', () => {
  it('registers, runs an assignment and reports its result with the hash and attempt', async () => {
    const assignment = testAssignment(['printf', 'hello'], { attempt: 2 });
    fake.enqueue(assignment);
    const started = startAgent();

    const result = await fake.waitFor(() => fake.results.get(assignment.taskId));
    const stdout = { name: 'stdout', sha256: sha256Hex('hello'), bytes: 5 };
    expect(result).toMatchObject({ attempt: 2, exitCode: 0, outputs: [stdout], resultHash: resultHash([stdout]) });

    const [registration] = fake.registrations;
    expect(registration).toMatchObject({ name: 'test-node', inventory: { region: 'local' } });
    expect(started.agent.nodeId).toBe(nodeIdFromPublicKey(registration?.publicKey ?? ''));
    expect(fake.progress.get(assignment.taskId)?.[0]).toEqual({ attempt: 2 });
    expect(fake.badSignatures).toBe(0);
    expect(logged(`registered as ${started.agent.nodeId}`)).toBe(true);
    expect(logged(`task ${assignment.taskId} attempt 2 started`)).toBe(true);
    expect(logged(`task ${assignment.taskId} attempt 2 finished`)).toBe(true);

    await stopAgent(started);
    expect(existsSync(join(workRootFor(dataDir), `${assignment.taskId}-2`))).toBe(false);
  });

  it('keeps its node id across restarts with the same data dir', async () => {
    const first = startAgent();
    await fake.waitFor(() => fake.registrations.length === 1);
    await stopAgent(first);
    const second = startAgent();
    await fake.waitFor(() => fake.registrations.length === 2);
    expect(second.agent.nodeId).toBe(first.agent.nodeId);
    expect(fake.registrations[1]?.publicKey).toBe(fake.registrations[0]?.publicKey);
  });

  it('streams progress and heartbeats the running task', async () => {
    const assignment = testAssignment(['sh', '-c', 'echo "::progress 40 warming up"; sleep 0.4; echo done']);
    fake.enqueue(assignment);
    startAgent();
    await fake.waitFor(() => fake.results.get(assignment.taskId));
    expect(fake.progress.get(assignment.taskId)).toContainEqual(
      expect.objectContaining({ attempt: 1, percent: 40, message: 'warming up' }),
    );
    expect(fake.heartbeats.some((beat) => beat.tasks.some((task) => task.taskId === assignment.taskId))).toBe(true);
  });

  it('reports a program that cannot start, and a timeout, as failures', async () => {
    const missing = testAssignment(['/nonexistent/program'], { jobId: testJobId('A') });
    const slow = testAssignment(['sleep', '100'], { jobId: testJobId('B'), timeoutSeconds: 1 });
    fake.enqueue(missing);
    fake.enqueue(slow);
    startAgent();
    expect(await fake.waitFor(() => fake.failures.get(missing.taskId))).toMatchObject({ reason: 'error' });
    expect(await fake.waitFor(() => fake.failures.get(slow.taskId))).toMatchObject({ reason: 'timeout' });
  });

  it('turns what it cannot run or report into failures with reason error', async () => {
    const image = testAssignment(['true'], { jobId: testJobId('E'), image: 'ghcr.io/example/job:1' });
    const script = 'i=0; while [ $i -lt 1100 ]; do : > "$GPUAI_OUTPUT_DIR/f$i"; i=$((i+1)); done';
    const tooManyOutputs = testAssignment(['sh', '-c', script], { jobId: testJobId('F') });
    fake.enqueue(image);
    fake.enqueue(tooManyOutputs);
    startAgent();
    expect(await fake.waitFor(() => fake.failures.get(image.taskId))).toMatchObject({
      reason: 'error',
      message: expect.stringContaining('runs processes only'),
    });
    expect(await fake.waitFor(() => fake.failures.get(tooManyOutputs.taskId))).toMatchObject({
      reason: 'error',
      message: expect.stringContaining('result cannot be reported'),
    });
  });

  it('keeps the lease of a task that prints nothing', async () => {
    const assignment = testAssignment(['sleep', '0.6'], { leaseMs: 300 });
    fake.enqueue(assignment);
    startAgent();
    await fake.waitFor(() => fake.results.get(assignment.taskId));
    // The start report, then one about every 100 ms (a third of the lease) while the task is silent.
    expect(fake.progress.get(assignment.taskId)?.length).toBeGreaterThanOrEqual(4);
  });

  it('clears work dirs left behind by an earlier run', async () => {
    const stale = join(workRootFor(dataDir), 'job_stale.0-1');
    await mkdir(stale, { recursive: true });
    startAgent();
    await fake.waitFor(() => fake.registrations.length === 1);
    expect(existsSync(stale)).toBe(false);
  });

  it('runs as many tasks at once as it has slots', async () => {
    const tasks = ['C', 'D'].map((suffix) => testAssignment(['sleep', '0.5'], { jobId: testJobId(suffix) }));
    for (const task of tasks) fake.enqueue(task);
    startAgent({ slots: 2 });
    await fake.waitFor(() => tasks.every((task) => fake.progress.has(task.taskId)));
    expect(fake.results.size).toBe(0);
    await fake.waitFor(() => fake.results.size === 2);
  });

  it('stops a task and reports nothing once its lease is lost', async () => {
    const assignment = testAssignment(['sh', '-c', 'echo $$; while :; do sleep 0.05; echo tick; done']);
    fake.enqueue(assignment);
    startAgent();
    await fake.waitFor(() => fake.progress.get(assignment.taskId)?.some((report) => report.logTail !== undefined));
    fake.lostLeases.add(assignment.taskId);
    await fake.waitFor(() => logged('stopped: lease lost'));
    const pid = Number(fake.progress.get(assignment.taskId)?.at(-1)?.logTail?.split('\n')[0]);
    expect(await waitForExit(pid)).toBe(true);
    await delay(200);
    expect(fake.results.has(assignment.taskId) || fake.failures.has(assignment.taskId)).toBe(false);
  });

  it('kills a task the heartbeat says to abort, without reporting it', async () => {
    const assignment = testAssignment(['sleep', '100']);
    fake.enqueue(assignment);
    startAgent();
    await fake.waitFor(() => fake.heartbeats.some((beat) => beat.tasks.length > 0));
    fake.pendingAborts = [{ taskId: assignment.taskId, attempt: 1, reason: 'job cancelled' }];
    await fake.waitFor(() => logged('stopped: aborted by the control plane (job cancelled)'));
    await fake.waitFor(() => fake.heartbeats.at(-1)?.tasks.length === 0);
    expect(fake.results.has(assignment.taskId) || fake.failures.has(assignment.taskId)).toBe(false);
  });

  it('on shutdown, lets a short task finish and report its result', async () => {
    const assignment = testAssignment(['sh', '-c', 'sleep 0.3; printf ok']);
    fake.enqueue(assignment);
    const started = startAgent();
    await fake.waitFor(() => fake.progress.has(assignment.taskId));
    await stopAgent(started);
    expect(fake.results.get(assignment.taskId)).toMatchObject({ exitCode: 0 });
  });

  it('on shutdown, releases a task that outlives the grace period', async () => {
    const assignment = testAssignment(['sleep', '100']);
    fake.enqueue(assignment);
    const started = startAgent({ graceSeconds: 0 });
    await fake.waitFor(() => fake.progress.has(assignment.taskId));
    const stoppingAt = Date.now();
    await stopAgent(started);
    expect(Date.now() - stoppingAt).toBeLessThan(2_000);
    expect(fake.failures.get(assignment.taskId)).toMatchObject({ attempt: 1, reason: 'released' });
    expect(logged('stopped')).toBe(true);
  });

  it('survives a control plane outage and delivers the result once it is back', async () => {
    const assignment = testAssignment(['sh', '-c', 'sleep 0.3; printf late']);
    fake.enqueue(assignment);
    startAgent();
    await fake.waitFor(() => fake.progress.has(assignment.taskId));
    await fake.stop();
    await delay(800);
    expect(logged('connection lost')).toBe(true);
    await fake.restart();
    const result = await fake.waitFor(() => fake.results.get(assignment.taskId));
    expect(result.outputs).toEqual([{ name: 'stdout', sha256: sha256Hex('late'), bytes: 4 }]);
    await fake.waitFor(() => logged('connection restored'));
  });

  it('waits for a control plane that is not up yet', async () => {
    await fake.stop();
    startAgent();
    await delay(300);
    await fake.restart();
    await fake.waitFor(() => fake.registrations.length === 1);
  });

  it('registers again when the control plane has forgotten the node', async () => {
    startAgent();
    await fake.waitFor(() => fake.registrations.length === 1);
    fake.forgetNodes();
    await fake.waitFor(() => fake.registrations.length === 2);
    expect(logged('control plane does not know this node')).toBe(true);
    const assignment = testAssignment(['true']);
    fake.enqueue(assignment);
    await fake.waitFor(() => fake.results.get(assignment.taskId));
  });

  it('fails fast when the control plane refuses the registration', async () => {
    fake.override = (request) =>
      request.path === '/v1/nodes'
        ? { status: 400, body: { error: { code: 'validation_failed', message: 'no' } } }
        : undefined;
    const started = startAgent();
    const { running } = started;
    await expect(running).rejects.toThrow('400 validation_failed: no');
    harness.forget(started);
  });
});
