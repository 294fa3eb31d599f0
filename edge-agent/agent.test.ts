import { existsSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { type Assignment, HeartbeatRequest, resultHash, sha256Hex } from '../protocol/index.js';
import { AgentHarness, type AgentHarnessOptions, waitUntil } from '../test/support/agent-harness.js';
import { TestNode } from '../test/support/in-process.js';
import type { Agent, AgentOptions } from './agent.js';
import { workRootFor } from './runner/process-runner.js';
import { testProbe } from './test-support/fixtures.js';
import { waitForExit } from './test-support/processes.js';

/**
 * The agent against the real embedded control plane (test/support/agent-harness.ts), the fault
 * proxy in front of it for outages and answers the server would never give.
 */
let harness: AgentHarness | undefined;

async function setUp(options: AgentHarnessOptions = {}): Promise<AgentHarness> {
  harness = await AgentHarness.start({ dataDirPrefix: 'gpuai-agent-', ...options });
  return harness;
}

afterEach(async () => {
  await harness?.stop();
  harness = undefined;
});

function startAgent(h: AgentHarness, overrides: Partial<AgentOptions> = {}) {
  return h.startAgent({ name: 'test-node', ...overrides });
}

/** Stops the agent the way SIGTERM does and waits for it to finish. */
async function stopAgent(h: AgentHarness, started: { agent: Agent; running: Promise<void> }): Promise<void> {
  await started.agent.shutdown();
  await started.running;
  h.forget(started);
}

/** A command that prints its pid, then waits until `file` exists: the test decides when it ends. */
const untilFile = (file: string, then = 'true') => [
  'sh',
  '-c',
  `echo $$; while [ ! -e '${file}' ]; do sleep 0.05; done; ${then}`,
];

/** The pid the task printed first, from its progress log tail on the server. */
async function taskPid(h: AgentHarness, jobId: string): Promise<number> {
  const task = await h.waitForTask(jobId, (t) => /^\d+/.test(t.progress?.logTail ?? ''), 'a log tail with the pid');
  return Number(task.progress?.logTail?.split('\n')[0]);
}

describe('Agent', { timeout: 60_000 }, () => {
  it('registers, runs a job and reports its result, which the server verifies', async () => {
    const h = await setUp();
    const started = startAgent(h);
    const job = await h.submit({ command: ['printf', 'hello'] });

    const done = await h.finished(job.id);
    expect(done.status).toBe('succeeded');
    const [task] = done.tasks;
    const stdout = { name: 'stdout', sha256: sha256Hex('hello'), bytes: 5 };
    expect(task?.result).toMatchObject({ exitCode: 0, outputs: [stdout], resultHash: resultHash([stdout]) });
    const nodeId = started.agent.nodeId ?? '';
    expect(task?.attempts).toMatchObject([{ number: 1, nodeId, outcome: 'completed' }]);

    expect(await h.node(nodeId)).toMatchObject({ name: 'test-node', inventory: { region: 'local' } });
    expect(h.sent('POST', `/tasks/${task?.id}/progress`)[0]?.body).toBe('{"attempt":1}');
    expect(h.logged(`registered as ${nodeId}`)).toBe(true);
    expect(h.logged(`task ${task?.id} attempt 1 started`)).toBe(true);
    expect(h.logged(`task ${task?.id} attempt 1 finished`)).toBe(true);

    await stopAgent(h, started);
    expect(existsSync(join(workRootFor(h.dataDir), `${task?.id}-1`))).toBe(false);
  });

  it('keeps its node id across restarts with the same data dir', async () => {
    const h = await setUp();
    const first = startAgent(h);
    await waitUntil('a registration', () => h.sent('POST', '/v1/nodes').length === 1);
    await stopAgent(h, first);
    const second = startAgent(h);
    await waitUntil('a second registration', () => h.sent('POST', '/v1/nodes').length === 2);
    expect(second.agent.nodeId).toBe(first.agent.nodeId);
    expect((await h.api.nodes()).map((node) => node.id)).toEqual([first.agent.nodeId]);
  });

  it('streams progress and heartbeats the running task', async () => {
    const h = await setUp();
    const go = join(h.dataDir, 'go');
    const job = await h.submit({ command: ['sh', '-c', `echo "::progress 40 warming up"; ${untilFile(go)[2]}`] });
    startAgent(h);
    const running = await h.waitForTask(job.id, (t) => t.progress?.percent === 40, 'progress 40');
    expect(running).toMatchObject({ state: 'running', progress: { percent: 40, message: 'warming up' } });
    await waitUntil('a heartbeat that lists the task', () =>
      h
        .sent('POST', '/heartbeat')
        .some((r) => HeartbeatRequest.parse(JSON.parse(r.body)).tasks.some((t) => t.taskId === running.id)),
    );
    await writeFile(go, '');
    expect((await h.finished(job.id)).status).toBe('succeeded');
  });

  it('reports a program that cannot start, and a timeout, as failures', async () => {
    const h = await setUp();
    const missing = await h.submit({ command: ['/nonexistent/program'], retries: 0 });
    const slow = await h.submit({ command: ['sleep', '100'], timeoutSeconds: 1, retries: 0 });
    startAgent(h);
    // The server records the agent's reason first in the attempt's detail.
    expect((await h.finished(missing.id)).tasks[0]).toMatchObject({
      state: 'failed',
      attempts: [
        { outcome: 'failed', detail: expect.stringMatching(/^error: could not start \/nonexistent\/program/) },
      ],
    });
    expect((await h.finished(slow.id)).tasks[0]).toMatchObject({
      state: 'failed',
      attempts: [{ outcome: 'failed', detail: expect.stringMatching(/^timeout: /) }],
    });
  });

  it('fails what it cannot report: more outputs than a result may list', async () => {
    const h = await setUp();
    const script = 'i=0; while [ $i -lt 1100 ]; do : > "$GPUAI_OUTPUT_DIR/f$i"; i=$((i+1)); done';
    const job = await h.submit({ command: ['sh', '-c', script], retries: 0 });
    startAgent(h);
    const [task] = (await h.finished(job.id)).tasks;
    expect(task?.state).toBe('failed');
    expect(JSON.parse(h.sent('POST', `/tasks/${task?.id}/fail`)[0]?.body ?? '{}')).toMatchObject({
      reason: 'error',
      message: expect.stringContaining('result cannot be reported'),
    });
  });

  it('fails an assignment with a container image, which it cannot run', async () => {
    const h = await setUp();
    // The server never sends an image job to a node without a container runtime (resource/fit.ts),
    // so the proxy adds the image to a real assignment: the agent must still refuse it, not run it.
    h.proxy.rewriteNext(
      1,
      (body) => {
        const { assignment } = JSON.parse(body) as { assignment: Assignment };
        return JSON.stringify({ assignment: { ...assignment, image: 'ghcr.io/example/job:1' } });
      },
      (r) => r.path.includes('/work'),
    );
    const job = await h.submit({ command: ['sh', '-c', 'echo ran'], retries: 0 });
    startAgent(h);
    const [task] = (await h.finished(job.id)).tasks;
    expect(task?.state).toBe('failed');
    expect(JSON.parse(h.sent('POST', `/tasks/${task?.id}/fail`)[0]?.body ?? '{}')).toMatchObject({
      reason: 'error',
      message: expect.stringContaining('runs processes only'),
    });
  });

  it('keeps the lease of a task that prints nothing by heartbeats alone, with no keep-alive progress', async () => {
    const h = await setUp({ settings: { leaseMs: 1_500, heartbeatIdleMs: 200 } });
    const job = await h.submit({ command: ['sleep', '4'], retries: 0 });
    startAgent(h, { progressIntervalMs: 50 });
    const done = await h.finished(job.id);
    // The reaper runs every 100 ms: a lease the agent let lapse would show as a lease-expired attempt.
    expect(done.status).toBe('succeeded');
    expect(done.tasks[0]?.attempts).toMatchObject([{ number: 1, outcome: 'completed' }]);
    // The start report only (docs/cost-model.md section 9): the heartbeats listing the task kept its lease.
    expect(h.sent('POST', '/progress')).toHaveLength(1);
    const listing = h
      .sent('POST', '/heartbeat')
      .filter((r) => HeartbeatRequest.parse(JSON.parse(r.body)).tasks.some((t) => t.taskId === done.tasks[0]?.id));
    expect(listing.length).toBeGreaterThanOrEqual(4);
  });

  it('beats at once when it takes a task, then at the busy interval the control plane tells it', async () => {
    const h = await setUp({ settings: { heartbeatIdleMs: 20_000, heartbeatBusyMs: 300 } });
    startAgent(h);
    await waitUntil('a registration', () => h.sent('POST', '/v1/nodes').length === 1);
    const go = join(h.dataDir, 'go');
    const job = await h.submit({ command: untilFile(go) });
    const running = await h.waitForTask(job.id, (t) => t.state === 'running', 'running');
    const listing = () =>
      h
        .sent('POST', '/heartbeat')
        .filter((r) => HeartbeatRequest.parse(JSON.parse(r.body)).tasks.some((t) => t.taskId === running.id)).length;
    // Idle, the next beat would be 20 s away: these come from taking the task and the busy interval.
    await waitUntil('two heartbeats that list the task', () => listing() >= 2, 5_000);
    await writeFile(go, '');
    expect((await h.finished(job.id)).status).toBe('succeeded');
  });

  it('reports its measured round trip to the control plane in a heartbeat, then not again within the period', async () => {
    const h = await setUp();
    startAgent(h);
    const reported = () =>
      h
        .sent('POST', '/heartbeat')
        .map((r) => HeartbeatRequest.parse(JSON.parse(r.body)).latencyMs)
        .filter((ms) => ms !== undefined);
    await waitUntil('a heartbeat with a round trip', () => reported().length > 0);
    const beats = h.sent('POST', '/heartbeat').length;
    await waitUntil('three more heartbeats', () => h.sent('POST', '/heartbeat').length >= beats + 3);
    // Registration and the first beats were measured (never the long polls); reported once.
    expect(reported()).toHaveLength(1);
    expect(reported()[0]).toBeGreaterThanOrEqual(1);
    expect(reported()[0]).toBeLessThan(60_000);
  });

  it('clears work dirs left behind by an earlier run', async () => {
    const h = await setUp();
    const stale = join(workRootFor(h.dataDir), 'job_stale.0-1');
    await mkdir(stale, { recursive: true });
    startAgent(h);
    await waitUntil('a registration', () => h.sent('POST', '/v1/nodes').length === 1);
    expect(existsSync(stale)).toBe(false);
  });

  it('runs as many tasks at once as it has slots', async () => {
    const h = await setUp();
    const go = join(h.dataDir, 'go');
    const job = await h.submit({ command: untilFile(go), tasks: 2 });
    startAgent(h, { slots: 2 });
    await h.waitForTask(job.id, (t) => t.state === 'running', 'task 0 running', 0);
    await h.waitForTask(job.id, (t) => t.state === 'running', 'task 1 running', 1);
    await writeFile(go, '');
    expect((await h.finished(job.id)).status).toBe('succeeded');
  });

  it('stops a task and reports nothing once its lease is lost to a network cut longer than the lease', async () => {
    const h = await setUp({ settings: { leaseMs: 1_500 } });
    const go = join(h.dataDir, 'go');
    const job = await h.submit({ command: untilFile(go, 'printf late'), retries: 0 });
    startAgent(h);
    const pid = await taskPid(h, job.id);
    h.proxy.cut();
    // The server's reaper takes the lease back; with no retries left the task fails.
    const [lost] = (await h.finished(job.id)).tasks;
    expect(lost).toMatchObject({ state: 'failed', attempts: [{ outcome: 'lease-expired' }] });
    h.proxy.restore();
    // Whichever reaches the server first tells the agent: a progress report (409 lease_lost) or a
    // heartbeat (abort: no longer leased).
    const taskId = job.tasks[0]?.id ?? '';
    await waitUntil('the agent to drop the task', () =>
      h.logLines.find((line) => line.includes(`task ${taskId} attempt 1 stopped`)),
    );
    expect(h.logLines.find((line) => line.includes(`task ${taskId} attempt 1 stopped`))).toMatch(
      /lease lost|no longer leased/,
    );
    expect(await waitForExit(pid)).toBe(true);
    await writeFile(go, '');
    // Nothing was reported for it after the cut: no result, no failure report reached the server.
    expect(h.sent('POST', '/result')).toEqual([]);
    expect(h.sent('POST', '/fail').filter((r) => r.outcome === 'forwarded' && r.status === 200)).toEqual([]);
    expect((await h.task(job.id)).result).toBeUndefined();
  });

  it('drops a task another node took while it was cut off, and the job completes with that node', async () => {
    const h = await setUp({ settings: { leaseMs: 1_500 } });
    const go = join(h.dataDir, 'go');
    const job = await h.submit({ command: untilFile(go, 'printf mine'), retries: 1 });
    startAgent(h);
    const pid = await taskPid(h, job.id);
    h.proxy.cut();
    await h.waitForTask(job.id, (t) => t.state === 'queued' && t.attempts[0]?.outcome === 'lease-expired', 'requeued');
    // Another node of the pool takes attempt 2 while this agent cannot reach the server.
    const other = new TestNode((path, init) => fetch(`${h.api.url}${path}`, init));
    expect((await other.register((await testProbe()).inventory)).status).toBe(201);
    const work = await other.poll(5);
    expect(work.status).toBe(200);
    h.proxy.restore();
    await waitUntil('the agent to drop it', () => h.logged(`task ${job.tasks[0]?.id} attempt 1 stopped`));
    expect(await waitForExit(pid)).toBe(true);
    await writeFile(go, '');
    const outputs = [{ name: 'stdout', sha256: sha256Hex('theirs'), bytes: 6 }];
    const reported = await other.call('POST', `/v1/nodes/${other.id}/tasks/${job.tasks[0]?.id}/result`, {
      attempt: 2,
      exitCode: 0,
      resultHash: resultHash(outputs),
      outputs,
      metrics: { wallMs: 10 },
    });
    expect(reported.status).toBe(200);
    const done = await h.finished(job.id);
    expect(done.status).toBe('succeeded');
    expect(done.tasks[0]?.result?.outputs).toEqual(outputs);
    expect(h.sent('POST', '/result')).toEqual([]);
  });

  it('kills a task whose job is cancelled (the heartbeat says abort), without reporting it', async () => {
    const h = await setUp();
    const job = await h.submit({ command: ['sleep', '100'] });
    startAgent(h);
    await h.waitForTask(job.id, (t) => t.state === 'running', 'the task running');
    await h.cancel(job.id);
    await waitUntil('the abort', () => h.logged('stopped: aborted by the control plane'));
    await waitUntil('a heartbeat without the task', () => {
      const last = h.sent('POST', '/heartbeat').at(-1);
      return last !== undefined && HeartbeatRequest.parse(JSON.parse(last.body)).tasks.length === 0;
    });
    expect(h.sent('POST', '/result')).toEqual([]);
    expect(h.sent('POST', '/fail')).toEqual([]);
    expect((await h.task(job.id)).state).toBe('cancelled');
  });

  /**
   * Holds the answer to the task's final report until a heartbeat answer that aborts the task has
   * reached the agent (the next beat is sent after it was handled): the race between a report and
   * a beat that still listed the task, made certain. `strip` hides aborts from heartbeat answers
   * while it returns true. Returns the abort reasons heartbeat answers carried for the task.
   */
  function raceReportWithAbort(h: AgentHarness, taskId: string, report: 'result' | 'fail', strip = () => false) {
    const aborts: string[] = [];
    h.proxy.rewriteNext(
      10_000,
      (body) => {
        const answer = JSON.parse(body) as { abort: { taskId: string; reason: string }[] };
        const mine = answer.abort.filter((a) => a.taskId === taskId);
        if (strip()) return JSON.stringify({ ...answer, abort: answer.abort.filter((a) => a.taskId !== taskId) });
        aborts.push(...mine.map((a) => a.reason));
        return body;
      },
      (r) => r.method === 'POST' && r.path.endsWith('/heartbeat'),
    );
    h.proxy.rewriteNext(
      1,
      async (body) => {
        await waitUntil('a heartbeat answer aborting the task', () => aborts.length > 0);
        const beats = h.sent('POST', '/heartbeat').length;
        await waitUntil('the next heartbeat', () => h.sent('POST', '/heartbeat').length > beats);
        return body;
      },
      (r) => r.method === 'POST' && r.path.endsWith(`/tasks/${taskId}/${report}`),
    );
    return aborts;
  }

  it("does not warn when a heartbeat's abort only says that the task's own result was verified", async () => {
    const h = await setUp();
    const job = await h.submit({ command: ['printf', 'done'] });
    const taskId = job.tasks[0]?.id ?? '';
    const aborts = raceReportWithAbort(h, taskId, 'result');
    startAgent(h);

    expect((await h.finished(job.id)).status).toBe('succeeded');
    await waitUntil('a heartbeat without the task', () => {
      const last = h.sent('POST', '/heartbeat').at(-1);
      return last !== undefined && HeartbeatRequest.parse(JSON.parse(last.body)).tasks.length === 0;
    });
    // The race happened: the control plane answered a beat with "abort: the task is verified".
    expect(aborts[0]).toMatch(/is no longer leased to this node: the task is (reported|verified)$/);
    expect(h.logLines.filter((line) => !line.startsWith('info '))).toEqual([]);
  });

  it('still warns of an abort that came while its result was on its way when the result is refused (cancelled)', async () => {
    const h = await setUp();
    const go = join(h.dataDir, 'go');
    // Silent until it ends, so no progress report learns of the cancellation first.
    const job = await h.submit({ command: ['sh', '-c', `while [ ! -e '${go}' ]; do sleep 0.05; done; printf ok`] });
    const taskId = job.tasks[0]?.id ?? '';
    // The agent hears of the cancellation only once its result is on its way.
    let cancelled = false;
    const aborts = raceReportWithAbort(h, taskId, 'result', () => cancelled && h.sent('POST', '/result').length === 0);
    startAgent(h);
    await h.waitForTask(job.id, (t) => t.state === 'running', 'the task running');
    await h.cancel(job.id);
    cancelled = true;
    await writeFile(go, '');

    await waitUntil('the abort', () => h.logged(`task ${taskId} attempt 1 stopped: aborted by the control plane`));
    expect(aborts[0]).toMatch(/: the task is cancelled$/);
    expect(h.logged(`task ${taskId} attempt 1 stopped: aborted by the control plane (${aborts[0]})`)).toBe(true);
    expect(h.sent('POST', '/result').map((r) => r.status)).toEqual([409]);
    expect((await h.task(job.id)).state).toBe('cancelled');
  });

  it('on shutdown, lets a short task finish and report its result', async () => {
    const h = await setUp();
    const job = await h.submit({ command: ['sh', '-c', 'sleep 0.5; printf ok'] });
    const started = startAgent(h);
    await h.waitForTask(job.id, (t) => t.state === 'running', 'the task running');
    await stopAgent(h, started);
    expect((await h.finished(job.id)).tasks[0]?.result).toMatchObject({ exitCode: 0 });
  });

  it('on shutdown, releases a task that outlives the grace period, and the server queues it again', async () => {
    const h = await setUp();
    const job = await h.submit({ command: ['sleep', '100'] });
    const started = startAgent(h, { graceSeconds: 0 });
    await h.waitForTask(job.id, (t) => t.state === 'running', 'the task running');
    const stoppingAt = Date.now();
    await stopAgent(h, started);
    expect(Date.now() - stoppingAt).toBeLessThan(2_000);
    expect(await h.task(job.id)).toMatchObject({ state: 'queued', attempts: [{ number: 1, outcome: 'released' }] });
    expect(h.logged('stopped')).toBe(true);
  });

  it('survives a network outage and delivers the result once it is back', async () => {
    const h = await setUp();
    const go = join(h.dataDir, 'go');
    const job = await h.submit({ command: untilFile(go, 'printf late') });
    startAgent(h);
    await taskPid(h, job.id);
    h.proxy.cut();
    await writeFile(go, '');
    await waitUntil('the agent to notice', () => h.logged('connection lost'));
    h.proxy.restore();
    const done = await h.finished(job.id);
    expect(done.status).toBe('succeeded');
    const pid = (await h.task(job.id)).progress?.logTail?.split('\n')[0];
    const stdout = `${pid}\nlate`;
    expect(done.tasks[0]?.result?.outputs).toEqual([
      { name: 'stdout', sha256: sha256Hex(stdout), bytes: stdout.length },
    ]);
    await waitUntil('the agent to notice', () => h.logged('connection restored'));
  });

  it('survives a control plane restart mid-task and delivers the result to the restarted server', async () => {
    const h = await setUp();
    const go = join(h.dataDir, 'go');
    const job = await h.submit({ command: untilFile(go, 'printf late') });
    startAgent(h);
    await taskPid(h, job.id);
    await h.restartControlPlane();
    await writeFile(go, '');
    const done = await h.finished(job.id);
    expect(done.status).toBe('succeeded');
    expect(done.tasks[0]?.attempts).toMatchObject([{ number: 1, outcome: 'completed' }]);
  });

  it('waits for a control plane that cannot be reached yet', async () => {
    const h = await setUp();
    h.proxy.cut();
    startAgent(h);
    await waitUntil('two refused connections', () => h.proxy.connectionsCut >= 2);
    h.proxy.restore();
    await waitUntil('the node registered', async () => (await h.api.nodes()).length === 1);
  });

  it('registers again when the control plane has forgotten the node', async () => {
    const h = await setUp();
    const started = startAgent(h);
    await waitUntil('a registration', () => h.sent('POST', '/v1/nodes').length === 1);
    await h.replaceControlPlane();
    await waitUntil('a second registration', () => h.sent('POST', '/v1/nodes').length === 2);
    expect(h.logged('control plane does not know this node')).toBe(true);
    expect((await h.api.nodes()).map((node) => node.id)).toEqual([started.agent.nodeId]);
    const job = await h.submit({ command: ['true'] });
    expect((await h.finished(job.id)).status).toBe('succeeded');
  });

  it('fails fast when the control plane refuses the registration (no join token where one is needed)', async () => {
    const h = await setUp({ settings: { enrollment: 'token' } });
    const started = startAgent(h);
    await expect(started.running).rejects.toThrow(/401 join_token_required/);
    h.forget(started);
  });
});
