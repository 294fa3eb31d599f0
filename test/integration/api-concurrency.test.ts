import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import BetterSqlite3 from 'better-sqlite3';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { type RunningControlPlane, startControlPlane } from '../../embedded/control-plane-server.js';
import type { Assignment, JobSpecInput, JobStatus, JobWithTasks, TaskView } from '../../protocol/index.js';
import { resultHash, sha256Hex, terminalJobStatuses } from '../../protocol/index.js';
import { cpuInventory, TestNode } from '../support/in-process.js';
import { tempDir } from '../support/processes.js';

/**
 * Parallel requests through the real HTTP API: the embedded control plane on a real port (its
 * queue workers and reaper running), many requests in flight at once. better-sqlite3 serialises
 * each statement, but every request awaits between reading a version and writing on it, so
 * requests interleave there exactly as Lambda sandboxes do against DynamoDB. Whatever the
 * interleaving: one job per idempotency key, one node per task, one terminal state per task, and
 * never a 5xx.
 */

let dir: ReturnType<typeof tempDir>;
let cp: RunningControlPlane;
let adminKey: string;
/** Every response this file's requests got: none may be a 5xx. */
const answered: { method: string; path: string; status: number; body: string }[] = [];

beforeAll(async () => {
  dir = tempDir('api-race');
  cp = await startControlPlane({
    port: 0,
    host: '127.0.0.1',
    dataDir: dir.path,
    reaperIntervalMs: 200,
    log: () => undefined,
    // Nodes join without a join token: this file is about races, not enrollment.
    settings: { enrollment: 'open' },
  });
  adminKey = readFileSync(join(dir.path, 'admin-key'), 'utf8').trim();
}, 60_000);

afterAll(async () => {
  await cp?.stop();
  dir?.remove();
});

afterEach(async () => {
  // Each test starts with no work queued, so its nodes get only its own tasks.
  const { jobs } = (await api('/v1/jobs?limit=100')).json as { jobs: { id: string; status: JobStatus }[] };
  for (const j of jobs.filter((j) => !terminalJobStatuses.includes(j.status))) {
    expect([200, 409]).toContain((await api(`/v1/jobs/${j.id}/cancel`, { method: 'POST' })).status);
  }
  expect(answered.filter((a) => a.status >= 500)).toEqual([]);
});

/** One HTTP request to the control plane, recorded; the body is returned parsed where it is JSON. */
async function send(path: string, init: RequestInit = {}): Promise<{ status: number; json: unknown }> {
  const response = await fetch(`${cp.url}${path}`, init);
  const body = await response.text();
  answered.push({ method: init.method ?? 'GET', path, status: response.status, body });
  return { status: response.status, json: body === '' ? undefined : JSON.parse(body) };
}

const api = (path: string, init: RequestInit = {}) =>
  send(path, { ...init, headers: { authorization: `Bearer ${adminKey}`, ...(init.headers as object) } });

const submit = (spec: JobSpecInput, idempotencyKey?: string) =>
  api('/v1/jobs', {
    method: 'POST',
    headers: {
      'content-type': 'application/json',
      ...(idempotencyKey === undefined ? {} : { 'idempotency-key': idempotencyKey }),
    },
    body: JSON.stringify(spec),
  });

const job = async (id: string) => (await api(`/v1/jobs/${id}`)).json as JobWithTasks;

async function registeredNodes(count: number): Promise<TestNode[]> {
  const nodes = Array.from({ length: count }, () => new TestNode(send4node));
  for (const node of nodes) expect((await node.register(cpuInventory())).status).toBe(201);
  return nodes;
}

/** The node's signed requests, recorded like the others. */
async function send4node(path: string, init: RequestInit = {}): Promise<Response> {
  const { status, json } = await send(path, init);
  return new Response(json === undefined ? null : JSON.stringify(json), { status });
}

/** Waits until `check` returns a value (not undefined), re-checking as fast as the server answers. */
async function until<T>(what: string, check: () => Promise<T | undefined>, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setImmediate(resolve));
  }
}

/** Messages not yet handled on the control plane's work queues, read from its database file. */
function pendingMessages(): number {
  const db = new BetterSqlite3(join(dir.path, 'gpuai.db'), { readonly: true });
  try {
    return (
      db.prepare("SELECT COUNT(*) AS n FROM messages WHERE queue IN ('schedule', 'verify')").get() as { n: number }
    ).n;
  } finally {
    db.close();
  }
}

const okOutputs = [{ name: 'stdout', sha256: sha256Hex('ok\n'), bytes: 3 }];
const okHash = resultHash(okOutputs);
const okResult = (attempt: number) => ({
  attempt,
  exitCode: 0,
  resultHash: okHash,
  outputs: okOutputs,
  metrics: { wallMs: 1 },
});
const spec = (tasks = 1): JobSpecInput => ({ command: ['echo', 'ok'], tasks, resources: { gpus: { count: 0 } } });

describe('parallel requests through the HTTP API', () => {
  it('creates one job for many simultaneous submissions with one idempotency key', async () => {
    for (let round = 0; round < 3; round++) {
      const key = `race-${round}-${Date.now()}`;
      const replies = await Promise.all(Array.from({ length: 20 }, () => submit(spec(2), key)));

      expect(replies.filter((r) => r.status === 201)).toHaveLength(1);
      expect(replies.filter((r) => r.status === 200)).toHaveLength(19);
      const ids = new Set(replies.map((r) => (r.json as JobWithTasks).id));
      expect(ids.size).toBe(1);
      // The other requests were answered with the job the winner created, not with jobs of their own.
      const { jobs } = (await api('/v1/jobs?limit=100')).json as { jobs: { id: string }[] };
      expect(jobs.filter((j) => ids.has(j.id))).toHaveLength(1);
    }
    // The same key with a different request, raced against its first use: one job, the rest refused.
    const key = `mixed-${Date.now()}`;
    const replies = await Promise.all(Array.from({ length: 10 }, (_, i) => submit(spec(1 + (i % 2)), key)));
    const created = replies.filter((r) => r.status === 201);
    expect(created).toHaveLength(1);
    const winner = created[0]?.json as JobWithTasks;
    for (const r of replies) {
      if (r.status === 201) continue;
      const same = (r.json as JobWithTasks).id === winner.id;
      expect(r.status === 200 ? same : r.status === 409).toBe(true);
      if (r.status === 409) expect(r.json).toMatchObject({ error: { code: 'idempotency_key_reused' } });
    }
  }, 60_000);

  it('binds each task to exactly one of many nodes polling for it at once', async () => {
    const nodes = await registeredNodes(8);
    const tasks = 5;
    // Every node is waiting in a long poll before the job exists, so all wake for the same tasks.
    const firstPolls = nodes.map((node) => node.poll(3));
    const created = await submit(spec(tasks));
    expect(created.status).toBe(201);
    const jobId = (created.json as JobWithTasks).id;

    const bound = new Map<string, string[]>();
    const take = async (node: TestNode, reply: Response) => {
      if (reply.status === 204) return;
      expect(reply.status).toBe(200);
      const { assignment } = (await reply.json()) as { assignment: Assignment };
      if (assignment.jobId !== jobId) return;
      bound.set(assignment.taskId, [...(bound.get(assignment.taskId) ?? []), node.id]);
    };
    await Promise.all(nodes.map(async (node, i) => take(node, await (firstPolls[i] as Promise<Response>))));
    // Nodes that came away empty race again (a node may also take a second task) until all are bound.
    await until('every task bound', async () => {
      const t = (await job(jobId)).tasks;
      if (t.every((task) => task.state !== 'queued')) return t;
      await Promise.all(nodes.map(async (node) => take(node, await node.poll(0))));
      return undefined;
    });

    const final = (await job(jobId)).tasks;
    expect(bound.size).toBe(tasks);
    for (const task of final) {
      expect(bound.get(task.id), task.id).toEqual([task.nodeId]);
      expect(task).toMatchObject({ state: 'assigned', attempt: 1 });
    }
  }, 60_000);

  it('ends a task in one terminal state when its cancel races its result report', async () => {
    const [node] = (await registeredNodes(1)) as [TestNode];
    for (let round = 0; round < 16; round++) {
      // Verified through the verify queue, so the task rests in `reported` for a while.
      const jobId = (
        (await submit({ ...spec(1), verification: { mode: 'expected-hash', sha256: okHash } })).json as JobWithTasks
      ).id;
      const assignment = await until('the task bound to the node', async () => {
        const reply = await node.poll(2);
        if (reply.status !== 200) return undefined;
        return ((await reply.json()) as { assignment: Assignment }).assignment;
      });
      expect(assignment.jobId).toBe(jobId);

      const report = () =>
        node.call('POST', `/v1/nodes/${node.id}/tasks/${assignment.taskId}/result`, okResult(assignment.attempt));
      const cancel = () => api(`/v1/jobs/${jobId}/cancel`, { method: 'POST' });
      // Which request leaves first, and by how much, changes each round (-4 ms: the cancel 4 ms
      // ahead; 7 ms: the report 7 ms ahead), so cancels land before, during and after the report;
      // the last rounds cancel the moment the report is answered, while its verification is queued.
      const lead = round - 4;
      const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, Math.max(0, ms)));
      const [reported, cancelled] =
        round < 12
          ? await Promise.all([delay(-lead).then(report), delay(lead).then(cancel)])
          : await report().then(async (r) => [r, await cancel()] as const);

      expect([200, 409]).toContain(reported.status);
      expect([200, 409]).toContain(cancelled.status);
      // Once the queues are idle, nothing else will move the task: its state now is its final one.
      await until('the job at rest', async () => {
        const j = await job(jobId);
        return terminalJobStatuses.includes(j.status) && pendingMessages() === 0 ? j : undefined;
      });
      const { status, tasks } = await job(jobId);
      const task = tasks[0] as TaskView;
      const seen = `round ${round}: result ${reported.status}, cancel ${cancelled.status}, task ${task.state}`;
      expect(['verified', 'cancelled'], seen).toContain(task.state);
      expect(status, seen).toBe(task.state === 'verified' ? 'succeeded' : 'cancelled');
      // A cancel that was refused found the job finished: the result won, and was verified.
      if (cancelled.status === 409) {
        expect(cancelled.json).toMatchObject({ error: { code: 'job_finished' } });
        expect(task.state).toBe('verified');
      }
      // A refused result came after the cancel: the task was cancelled without its result.
      if (reported.status === 409) {
        expect(task.state).toBe('cancelled');
        expect(task.result).toBeUndefined();
      }
      expect(task.attempts).toHaveLength(1);
      expect(task.attempts[0]?.outcome).toBe(task.state === 'verified' ? 'completed' : 'cancelled');
      // Reporting again after the end changes nothing.
      const late = await report();
      expect(late.status).toBe(task.state === 'verified' ? 200 : 409);
      expect((await job(jobId)).tasks[0]?.state).toBe(task.state);
    }
  }, 120_000);

  it('accepts a result report sent several times at once (an agent retrying) once', async () => {
    const [node] = (await registeredNodes(1)) as [TestNode];
    const jobId = (
      (await submit({ ...spec(1), verification: { mode: 'expected-hash', sha256: okHash } })).json as JobWithTasks
    ).id;
    const assignment = await until('the task bound to the node', async () => {
      const reply = await node.poll(2);
      return reply.status === 200 ? ((await reply.json()) as { assignment: Assignment }).assignment : undefined;
    });
    expect(assignment.jobId).toBe(jobId);

    const path = `/v1/nodes/${node.id}/tasks/${assignment.taskId}/result`;
    const replies = await Promise.all(
      Array.from({ length: 6 }, () => node.call('POST', path, okResult(assignment.attempt))),
    );

    // A repeat of the accepted report is answered as accepted (the agent stops retrying), never as a failure.
    expect(replies.map((r) => r.status)).toEqual(Array<number>(6).fill(200));
    const done = await until('the job at rest', async () => {
      const j = await job(jobId);
      return terminalJobStatuses.includes(j.status) && pendingMessages() === 0 ? j : undefined;
    });
    expect(done.status).toBe('succeeded');
    expect(done.tasks[0]).toMatchObject({ state: 'verified', attempt: 1 });
    expect(done.tasks[0]?.attempts).toHaveLength(1);
  }, 60_000);
});
