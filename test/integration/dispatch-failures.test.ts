import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { LocalKeys } from '../../functions/adapters/embedded/local-keys.js';
import { type NodeRecord, nodeKey } from '../../functions/domain/resource/node-record.js';
import { type JobRecord, jobKey, putJob } from '../../functions/domain/scheduling/job-record.js';
import { queueNames } from '../../functions/domain/scheduling/messages.js';
import {
  maxAttemptsKept,
  maxAttemptsStarted,
  releaseAllowance,
} from '../../functions/domain/scheduling/task-machine.js';
import { type TaskRecord, taskKey } from '../../functions/domain/scheduling/task-record.js';
import {
  type Assignment,
  generateSealingKeyPair,
  type JobWithTasks,
  parseTaskId,
  type TaskView,
} from '../../protocol/index.js';
import { cpuInventory, inProcessControlPlane, ManualClock, TestNode } from '../support/in-process.js';

/**
 * The dispatcher's failure paths, through the HTTP API: one candidate that cannot be handed out
 * (a job key that does not open, a KMS throttle) neither fails the other candidates' polls nor
 * holds the node's slot until the lease runs out; a task handed back in a loop ends; client
 * mistakes are 4xx.
 */

type Harness = ReturnType<typeof inProcessControlPlane>;
let h: Harness;
let clock: ManualClock;
beforeEach(() => {
  clock = new ManualClock();
  h = inProcessControlPlane({ clock, settings: { livenessMs: 1e12 } });
});
afterEach(async () => {
  vi.restoreAllMocks();
  await h.close();
});

async function submit(spec: Record<string, unknown>): Promise<JobWithTasks> {
  const response = await h.api('/v1/jobs', {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(spec),
  });
  expect(response.status, await response.clone().text()).toBe(201);
  const job = (await response.json()) as JobWithTasks;
  await h.cp.scheduler.schedule({ jobId: job.id });
  clock.advance(1); // the next job queues behind this one
  return job;
}

/** A job whose stored data key no longer opens, as after a wrong master key or a damaged item. */
async function damageKey(jobId: string): Promise<void> {
  const item = await h.store.get<JobRecord>(jobKey(jobId));
  const wrapped = item?.data.wrappedKey;
  if (item === undefined || wrapped === undefined) throw new Error(`job ${jobId} has no wrapped key`);
  const flipped = `${wrapped.slice(0, -4)}${wrapped.slice(-4) === 'AAAA' ? 'BBBB' : 'AAAA'}`;
  await h.store.transact([putJob({ ...item.data, wrappedKey: flipped }, item.version)]);
}

/** A node that registered a sealing key, so it may receive jobs with env secrets. */
async function sealingNode(): Promise<TestNode> {
  const node = new TestNode(h.request, clock);
  const response = await node.call('POST', '/v1/nodes', {
    publicKey: node.key.publicKey,
    agentVersion: '0.1.0',
    inventory: cpuInventory(),
    sealingKey: generateSealingKeyPair().publicKey,
  });
  expect(response.status, await response.clone().text()).toBe(201);
  return node;
}

/** Runs the schedule messages a requeue sent, as the queue worker would: the task is routed to a pool again. */
async function drainSchedule(): Promise<void> {
  for (;;) {
    const [message] = await h.queue.receive(queueNames.schedule);
    if (message === undefined) return;
    await h.cp.scheduler.schedule(JSON.parse(message.body));
    await h.queue.delete(queueNames.schedule, message.receiptHandle);
  }
}

async function poll(node: TestNode): Promise<{ status: number; assignment?: Assignment; body: string }> {
  await drainSchedule();
  const response = await node.poll(0);
  const body = await response.text();
  return response.status === 200
    ? { status: 200, body, assignment: (JSON.parse(body) as { assignment: Assignment }).assignment }
    : { status: response.status, body };
}

const taskOf = async (taskId: string): Promise<TaskRecord> => {
  const { jobId, index } = parseTaskId(taskId);
  const item = await h.store.get<TaskRecord>(taskKey(jobId, index));
  if (item === undefined) throw new Error(`no task ${taskId}`);
  return item.data;
};
const heldBy = async (node: TestNode): Promise<string[]> =>
  ((await h.store.get<NodeRecord>(nodeKey(node.id)))?.data.held ?? []).map((held) => held.taskId);

describe('a candidate whose job key does not open', () => {
  it('is given back at once while the poll hands out the next candidate', async () => {
    const node = await sealingNode();
    const bad = await submit({ command: ['true'], env: { TOKEN: 'secret' } });
    await damageKey(bad.id);
    const good = await submit({ command: ['true'] });
    const badTask = bad.tasks[0]?.id ?? '';

    const written: string[] = [];
    vi.spyOn(process.stderr, 'write').mockImplementation((line) => written.push(String(line)) > 0);
    const first = await poll(node);
    vi.mocked(process.stderr.write).mockRestore();
    expect(first.status, first.body).toBe(200);
    // The operator learns of it: one JSON line naming the task and the reason.
    expect(written.map((line) => JSON.parse(line))).toEqual([
      expect.objectContaining({
        level: 'warn',
        msg: 'claim given back',
        taskId: badTask,
        error: expect.stringMatching(/KeyUnwrapError/),
      }),
    ]);
    expect(first.assignment?.taskId).toBe(good.tasks[0]?.id);
    // The bad task is queued again, its attempt counted, and the node's slot is free of it.
    expect(await taskOf(badTask)).toMatchObject({ state: 'queued', attempt: 1, failedAttempts: 1 });
    expect((await taskOf(badTask)).attempts[0]).toMatchObject({ outcome: 'failed', nodeId: node.id });
    expect((await taskOf(badTask)).attempts[0]?.detail).toMatch(/key/);
    expect(await heldBy(node)).toEqual([good.tasks[0]?.id]);
  });

  it('fails its job with a clear error after the retry budget, and no poll answers 5xx', async () => {
    const node = await sealingNode();
    const bad = await submit({ command: ['true'], env: { TOKEN: 'secret' }, retries: 2 });
    await damageKey(bad.id);
    const badTask = bad.tasks[0]?.id ?? '';
    for (let i = 0; i < 5 && (await taskOf(badTask)).state === 'queued'; i++) {
      const { status, body } = await poll(node);
      expect(status, body).toBeLessThan(500);
      expect(status, body).not.toBe(200);
    }
    const task = await taskOf(badTask);
    expect(task).toMatchObject({ state: 'failed', failedAttempts: 3, error: { code: 'retries_exhausted' } });
    expect(task.error?.message).toMatch(/key/);
    expect(await heldBy(node)).toEqual([]);
    const job = (await (await h.api(`/v1/jobs/${bad.id}`)).json()) as JobWithTasks;
    expect(job.status).toBe('failed');
  });
});

describe('a candidate whose key unwrap fails for a while (a KMS throttle)', () => {
  it('answers the poll 503 retryable, gives the claim back as a release, and the next poll gets the task', async () => {
    const node = await sealingNode();
    const job = await submit({ command: ['true'], env: { TOKEN: 'secret' } });
    const taskId = job.tasks[0]?.id ?? '';
    const throttle = Object.assign(new Error('Rate exceeded'), { name: 'ThrottlingException' });
    vi.spyOn(LocalKeys.prototype, 'unwrap').mockRejectedValueOnce(throttle);

    const refused = await poll(node);
    expect(refused.status, refused.body).toBe(503);
    expect(JSON.parse(refused.body)).toMatchObject({ error: { code: 'dispatch_unavailable' } });
    expect(await taskOf(taskId)).toMatchObject({ state: 'queued', failedAttempts: 0, releases: 1 });
    expect(await heldBy(node)).toEqual([]);

    const next = await poll(node);
    expect(next.status, next.body).toBe(200);
    expect(next.assignment).toMatchObject({ taskId, attempt: 2 });
    expect(next.assignment?.sealedEnv).toBeDefined();
  });
});

describe('a claim of a named task (a work hint) whose key cannot be opened', () => {
  const claimOf = (node: TestNode, taskId: string) => node.call('POST', `/v1/nodes/${node.id}/claims`, { taskId });

  it('is 409 task_not_available when the key does not open, and the claim is given back', async () => {
    const node = await sealingNode();
    const bad = await submit({ command: ['true'], env: { TOKEN: 'secret' } });
    await damageKey(bad.id);
    const taskId = bad.tasks[0]?.id ?? '';
    const response = await claimOf(node, taskId);
    const text = await response.text();
    expect(response.status, text).toBe(409);
    expect(JSON.parse(text)).toMatchObject({ error: { code: 'task_not_available' } });
    expect(await taskOf(taskId)).toMatchObject({ state: 'queued', failedAttempts: 1 });
    expect(await heldBy(node)).toEqual([]);
  });

  it('is 503 dispatch_unavailable under a throttle, given back as a release', async () => {
    const node = await sealingNode();
    const job = await submit({ command: ['true'], env: { TOKEN: 'secret' } });
    const taskId = job.tasks[0]?.id ?? '';
    const throttle = Object.assign(new Error('Rate exceeded'), { name: 'ThrottlingException' });
    vi.spyOn(LocalKeys.prototype, 'unwrap').mockRejectedValueOnce(throttle);
    const response = await claimOf(node, taskId);
    const text = await response.text();
    expect(response.status, text).toBe(503);
    expect(response.headers.get('retry-after')).toBe('1');
    expect(await taskOf(taskId)).toMatchObject({ state: 'queued', failedAttempts: 0, releases: 1 });
    expect(await heldBy(node)).toEqual([]);
  });
});

describe('a throttle on one candidate among several', () => {
  it('skips that candidate and hands out the next, with no 5xx', async () => {
    const node = await sealingNode();
    const throttled = await submit({ command: ['true'], env: { TOKEN: 'one' } });
    const next = await submit({ command: ['true'], env: { TOKEN: 'two' } });
    const throttle = Object.assign(new Error('Rate exceeded'), { name: 'ThrottlingException' });
    vi.spyOn(LocalKeys.prototype, 'unwrap').mockRejectedValueOnce(throttle);

    const { status, body, assignment } = await poll(node);
    expect(status, body).toBe(200);
    expect(assignment?.taskId).toBe(next.tasks[0]?.id);
    expect(await taskOf(throttled.tasks[0]?.id ?? '')).toMatchObject({ state: 'queued', releases: 1 });
    expect(await heldBy(node)).toEqual([next.tasks[0]?.id]);
  });
});

describe('a node that claims and releases in a loop', () => {
  // retries 10 is the most a job may ask: 33 attempts, more than the history keeps.
  it.each([1, 10])(
    'ends the task after the free releases and one retry budget (retries %i), its history bounded',
    async (retries) => {
      const maxAttempts = retries + 1;
      const node = await sealingNode();
      const job = await submit({ command: ['true'], retries });
      const taskId = job.tasks[0]?.id ?? '';
      let cycles = 0;
      for (; cycles < 100; cycles++) {
        const { status, assignment } = await poll(node);
        if (status !== 200 || assignment === undefined) break;
        const released = await node.call('POST', `/v1/nodes/${node.id}/tasks/${taskId}/fail`, {
          attempt: assignment.attempt,
          reason: 'released',
          message: 'shutting down',
        });
        expect(released.status, await released.clone().text()).toBe(200);
      }
      expect(cycles).toBe(releaseAllowance(maxAttempts) + maxAttempts);
      const view = (await (await h.api(`/v1/jobs/${job.id}/tasks`)).json()) as { tasks: TaskView[] };
      const task = view.tasks[0];
      expect(task).toMatchObject({ state: 'failed', error: { code: 'retries_exhausted' } });
      expect(task?.attempt).toBe(maxAttemptsStarted(maxAttempts));
      // The history: every attempt kept up to the cap, then the first and the latest.
      const kept = Math.min(cycles, maxAttemptsKept);
      expect(task?.attempts.map((a) => a.outcome)).toEqual(Array(kept).fill('released'));
      expect(task?.attempts.at(-1)?.number).toBe(cycles);
      expect(task?.attemptsDropped).toBe(cycles > kept ? cycles - kept : undefined);
    },
  );
});

describe('bad cursors', () => {
  it('are 400 on /v1/jobs, /v1/nodes and /v1/jobs/{id}/tasks, never a 500', async () => {
    const job = await submit({ command: ['true'] });
    for (const route of ['/v1/jobs', '/v1/nodes', `/v1/jobs/${job.id}/tasks`]) {
      const response = await h.api(`${route}?cursor=garbage`);
      const text = await response.text();
      expect(response.status, `${route}: ${text}`).toBe(400);
      expect(JSON.parse(text).error.code, route).toMatch(/^(invalid_cursor|validation_failed)$/);
    }
  });
});
