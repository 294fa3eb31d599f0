import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type JobWithTasks, limits, maxClockSkewMs, resultHash, signatureHeaders } from '../../protocol/index.js';
import { cpuInventory, inProcessControlPlane, TestNode } from '../support/in-process.js';

type Harness = ReturnType<typeof inProcessControlPlane>;
let h: Harness;

beforeEach(() => {
  h = inProcessControlPlane();
});
afterEach(async () => {
  await h.close();
});

const submit = (body: unknown, headers: Record<string, string> = {}) =>
  h.api('/v1/jobs', {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });

async function expectError(response: Response, status: number, code: string) {
  expect(response.status).toBe(status);
  const body = (await response.json()) as { error: { code: string; message: string } };
  expect(body.error.code).toBe(code);
  expect(body.error.message.length).toBeGreaterThan(0);
  expect(JSON.stringify(body)).not.toMatch(/at .*\.ts:\d+/); // never a stack trace
  return body;
}

/** Registers a node, submits a one-task job and binds it to the node. */
async function assignedTask(node = new TestNode(h.request)) {
  expect((await node.register()).status).toBe(201);
  const job = (await (await submit({ command: ['true'] })).json()) as JobWithTasks;
  await h.cp.scheduler.schedule({ jobId: job.id });
  const work = await node.poll(0);
  expect(work.status).toBe(200);
  const { assignment } = (await work.json()) as { assignment: { taskId: string; attempt: number } };
  return { node, job, assignment };
}

describe('jobs API', () => {
  it('accepts a job with its defaults and shows it queued with sealed env', async () => {
    const response = await submit({ command: ['echo', 'hi'], tasks: 3, env: { TOKEN: 's3cret' } });
    expect(response.status).toBe(201);
    const job = (await response.json()) as JobWithTasks;
    expect(job.status).toBe('queued');
    expect(job.tasks.map((t) => [t.index, t.state, t.attempt])).toEqual([
      [0, 'queued', 0],
      [1, 'queued', 0],
      [2, 'queued', 0],
    ]);
    expect(job.spec.env).toEqual({ TOKEN: '[sealed]' });
    expect(job.spec.retries).toBe(2);
    expect(JSON.stringify(h.snapshot())).not.toContain('s3cret');
  });

  it('returns the same job for a retried Idempotency-Key, and refuses the key with another body', async () => {
    const first = await submit({ command: ['true'] }, { 'idempotency-key': 'order-42' });
    const again = await submit({ command: ['true'] }, { 'idempotency-key': 'order-42' });
    expect(first.status).toBe(201);
    expect(again.status).toBe(200);
    const a = (await first.json()) as JobWithTasks;
    const b = (await again.json()) as JobWithTasks;
    expect(b.id).toBe(a.id);
    const before = h.snapshot();
    await expectError(
      await submit({ command: ['false'] }, { 'idempotency-key': 'order-42' }),
      409,
      'idempotency_key_reused',
    );
    expect(h.snapshot()).toEqual(before);
    const list = (await (await h.api('/v1/jobs')).json()) as { jobs: unknown[] };
    expect(list.jobs).toHaveLength(1);
  });

  it('refuses a GPU model that names no accelerator class, writing nothing', async () => {
    const before = h.snapshot();
    const body = await expectError(
      await submit({ command: ['echo'], resources: { gpus: { count: 3, models: ['banana'] } } }),
      400,
      'unknown_gpu_model',
    );
    expect(body.error.message).toContain('banana');
    const details = (body.error as unknown as { details: { models: string[]; accepted: string[] } }).details;
    expect(details.models).toEqual(['banana']);
    expect(details.accepted).toContain('h100');
    expect(h.snapshot()).toEqual(before);
    expect(await h.queue.depth('schedule')).toBe(0);
    const known = await submit({ command: ['echo'], resources: { gpus: { count: 1, models: ['A100', 'H100'] } } });
    expect(known.status).toBe(201);
  });

  it('lists newest first with a cursor that visits every job once', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 7; i++)
      ids.push(((await (await submit({ command: ['true'], name: `j${i}` })).json()) as JobWithTasks).id);
    const seen: string[] = [];
    let cursor: string | undefined;
    do {
      const page = (await (
        await h.api(`/v1/jobs?limit=3${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`)
      ).json()) as {
        jobs: { id: string }[];
        cursor?: string;
      };
      seen.push(...page.jobs.map((j) => j.id));
      cursor = page.cursor;
    } while (cursor);
    expect(seen).toEqual([...ids].reverse());
  });

  it('refuses a list cursor on a route other than the one that made it (400 invalid_cursor)', async () => {
    for (let i = 0; i < 2; i++) expect((await submit({ command: ['true'] })).status).toBe(201);
    const { cursor } = (await (await h.api('/v1/jobs?limit=1')).json()) as { cursor?: string };
    expect(cursor).toBeDefined();
    for (const route of ['/v1/nodes', '/v1/keys', '/v1/join-tokens']) {
      await expectError(await h.api(`${route}?cursor=${encodeURIComponent(cursor ?? '')}`), 400, 'invalid_cursor');
    }
  });

  it('answers a repeated result report (a lost response retried) with the task, applying it once', async () => {
    const { node, job, assignment } = await assignedTask();
    const report = {
      attempt: assignment.attempt,
      exitCode: 0,
      resultHash: resultHash([]), // the hash of no outputs: the control plane recomputes it
      outputs: [],
      metrics: { wallMs: 3 },
    };
    const path = `/v1/nodes/${node.id}/tasks/${assignment.taskId}/result`;
    const first = await node.call('POST', path, report);
    expect(first.status).toBe(200);
    const before = h.snapshot();
    const again = await node.call('POST', path, report);
    expect(again.status).toBe(200);
    expect(((await again.json()) as { state: string }).state).toBe('reported');
    expect(h.snapshot()).toEqual(before);
    expect(await h.queue.depth('verify')).toBe(1); // one verification, not two
    const view = (await (await h.api(`/v1/jobs/${job.id}`)).json()) as JobWithTasks;
    expect(view.tasks[0]?.attempts).toHaveLength(1);
  });

  it('refuses a report that conflicts with the one recorded for the attempt (409 report_conflict), changing nothing', async () => {
    const { node, assignment } = await assignedTask();
    const base = `/v1/nodes/${node.id}/tasks/${assignment.taskId}`;
    const failure = { attempt: assignment.attempt, reason: 'error', message: 'CUDA out of memory' };
    expect((await node.call('POST', `${base}/fail`, failure)).status).toBe(200);
    const before = h.snapshot();
    expect((await node.call('POST', `${base}/fail`, failure)).status).toBe(200); // a retry: idempotent
    const outputs = [{ name: 'stdout', sha256: 'a'.repeat(64), bytes: 1 }];
    const result = {
      attempt: assignment.attempt,
      exitCode: 0,
      resultHash: resultHash(outputs),
      outputs,
      metrics: { wallMs: 3 },
    };
    const conflict = await expectError(await node.call('POST', `${base}/result`, result), 409, 'report_conflict');
    expect(conflict.error.message).toContain('fail');
    expect(h.snapshot()).toEqual(before);
    const released = { ...failure, reason: 'released' };
    await expectError(await node.call('POST', `${base}/fail`, released), 409, 'report_conflict');
    expect(h.snapshot()).toEqual(before);
  });

  it('refuses a second result with other outputs for an attempt whose result was accepted', async () => {
    const { node, assignment } = await assignedTask();
    const path = `/v1/nodes/${node.id}/tasks/${assignment.taskId}/result`;
    const report = (sha: string) => {
      const outputs = [{ name: 'stdout', sha256: sha.repeat(64), bytes: 1 }];
      return {
        attempt: assignment.attempt,
        exitCode: 0,
        resultHash: resultHash(outputs),
        outputs,
        metrics: { wallMs: 3 },
      };
    };
    expect((await node.call('POST', path, report('a'))).status).toBe(200);
    const before = h.snapshot();
    const body = await expectError(await node.call('POST', path, report('b')), 409, 'report_conflict');
    expect(body.error.message).toContain(report('a').resultHash);
    const failed = { attempt: assignment.attempt, reason: 'error', message: 'late' };
    await expectError(
      await node.call('POST', `/v1/nodes/${node.id}/tasks/${assignment.taskId}/fail`, failed),
      409,
      'report_conflict',
    );
    expect(h.snapshot()).toEqual(before);
    expect((await node.call('POST', path, report('a'))).status).toBe(200);
  });

  it('cancels unfinished tasks and refuses to cancel twice', async () => {
    const { node, job, assignment } = await assignedTask();
    const cancelled = await h.api(`/v1/jobs/${job.id}/cancel`, { method: 'POST' });
    expect(cancelled.status).toBe(200);
    const view = (await cancelled.json()) as JobWithTasks;
    expect(view.status).toBe('cancelled');
    expect(view.tasks[0]?.state).toBe('cancelled');
    await expectError(await h.api(`/v1/jobs/${job.id}/cancel`, { method: 'POST' }), 409, 'job_finished');
    // The node learns at its next heartbeat, and its late result is refused.
    const beat = await node.call('POST', `/v1/nodes/${node.id}/heartbeat`, {
      tasks: [{ taskId: assignment.taskId, attempt: assignment.attempt }],
    });
    const { abort } = (await beat.json()) as { abort: { taskId: string }[] };
    expect(abort.map((a) => a.taskId)).toEqual([assignment.taskId]);
    const late = await node.call('POST', `/v1/nodes/${node.id}/tasks/${assignment.taskId}/result`, {
      attempt: 1,
      exitCode: 0,
      resultHash: '0'.repeat(64),
      outputs: [],
      metrics: { wallMs: 1 },
    });
    await expectError(late, 409, 'lease_lost');
  });
});

describe('bad input is a 4xx in one shape and changes nothing', () => {
  const cases: [string, () => Promise<Response>, number, string][] = [
    ['unknown field', () => submit({ command: ['true'], colour: 'red' }), 400, 'validation_failed'],
    ['wrong type', () => submit({ command: 'true' }), 400, 'validation_failed'],
    [
      'nested unknown field',
      () => submit({ command: ['true'], resources: { gpus: { count: 1, vram: 3 } } }),
      400,
      'validation_failed',
    ],
    ['too many tasks', () => submit({ command: ['true'], tasks: limits.maxTasksPerJob + 1 }), 400, 'validation_failed'],
    ['negative retries', () => submit({ command: ['true'], retries: -1 }), 400, 'validation_failed'],
    ['bad env name', () => submit({ command: ['true'], env: { 'A-B': 'x' } }), 400, 'validation_failed'],
    [
      'deadline in the past',
      () => submit({ command: ['true'], deadline: '2001-01-01T00:00:00Z' }),
      400,
      'deadline_passed',
    ],
    ['malformed JSON', () => submit('{"command": ['), 400, 'malformed_request'],
    [
      'oversized body',
      () => submit({ command: ['true'], name: 'x'.repeat(limits.maxBodyBytes) }),
      413,
      'body_too_large',
    ],
    ['unknown job id', () => h.api('/v1/jobs/job_01JD7Z5C2Q9W8V6T4R2P0N8M6K'), 404, 'job_not_found'],
    ['malformed job id', () => h.api('/v1/jobs/not-a-job'), 400, 'validation_failed'],
    [
      'unknown job cancel',
      () => h.api('/v1/jobs/job_01JD7Z5C2Q9W8V6T4R2P0N8M6K/cancel', { method: 'POST' }),
      404,
      'job_not_found',
    ],
    ['unknown node', () => h.api('/v1/nodes/node_aaaaaaaaaaaaaaaaaaaaaaaaaa'), 404, 'node_not_found'],
    ['bad list limit', () => h.api('/v1/jobs?limit=0'), 400, 'validation_failed'],
    ['unknown route', () => h.api('/v1/nope'), 404, 'route_not_found'],
  ];
  it.each(cases)('%s', async (_name, send, status, code) => {
    await submit({ command: ['true'] }); // some state to keep
    const before = h.snapshot();
    await expectError(await send(), status, code);
    expect(h.snapshot()).toEqual(before);
  });
});

describe('error bodies', () => {
  it('carry the request id on every error, unknown routes and methods included', async () => {
    for (const response of [
      await h.api('/v1/nope'),
      await h.api('/v1/jobs', { method: 'DELETE' }),
      await h.api('/v1/jobs/job_01JD7Z5C2Q9W8V6T4R2P0N8M6K'),
      await h.request('/v1/jobs'),
    ]) {
      const body = (await response.json()) as { error: { requestId?: string } };
      expect(body.error.requestId, `${response.status}`).toBe(response.headers.get('x-request-id'));
      expect(body.error.requestId).toMatch(/.+/);
    }
  });
});

describe('node requests', () => {
  it('registers idempotently: the same key keeps its node id', async () => {
    const node = new TestNode(h.request);
    const first = await node.register();
    expect(first.status).toBe(201);
    const again = await node.register(cpuInventory({ region: 'eu-west' }));
    expect(again.status).toBe(200);
    const body = (await again.json()) as { node: { id: string; pools: string[] } };
    expect(body.node.id).toBe(node.id);
    expect(body.node.pools).toEqual(['eu-west/cpu']);
    const nodes = (await (await h.api('/v1/nodes')).json()) as { nodes: unknown[] };
    expect(nodes.nodes).toHaveLength(1);
  });

  it('refuses unsigned, forged, stale and replayed requests', async () => {
    const node = new TestNode(h.request);
    await node.register();
    await expectError(await h.request(`/v1/nodes/${node.id}/work`), 401, 'unauthenticated');

    const other = new TestNode(h.request);
    // `other` signs while claiming to be `node`: the signature does not verify under node's key.
    await expectError(await other.call('GET', `/v1/nodes/${node.id}/work`, undefined, node.id), 401, 'bad_signature');

    const stale = new TestNode(h.request, { now: () => Date.now() - maxClockSkewMs - 1000 });
    await expectError(await stale.register(), 401, 'stale_request');

    const path = `/v1/nodes/${node.id}/work?wait=0`;
    const signed = await import('../../protocol/index.js').then((p) =>
      p.signRequest(node.key, node.id, { method: 'GET', pathWithQuery: path, body: '' }),
    );
    expect((await h.request(path, { headers: signed })).status).toBe(204);
    await expectError(await h.request(path, { headers: signed }), 401, 'replayed_request');
    // The signature covers the path: the same headers on another path fail.
    const tampered = { ...signed, [signatureHeaders.nonce]: 'AAAAAAAAAAAAAAAAAAAAAA' };
    await expectError(await h.request(path, { headers: tampered }), 401, 'bad_signature');
  });

  it("refuses a node acting for another node or on another node's task, changing nothing", async () => {
    const { node, assignment } = await assignedTask();
    const intruder = new TestNode(h.request);
    await intruder.register();
    const before = h.snapshot();
    // Polling on the other node's path, signed by the intruder.
    await expectError(await intruder.call('GET', `/v1/nodes/${node.id}/work`, undefined), 403, 'forbidden');
    // Reporting on a task that was never the intruder's.
    const report = {
      attempt: assignment.attempt,
      exitCode: 0,
      resultHash: '0'.repeat(64),
      outputs: [],
      metrics: { wallMs: 1 },
    };
    await expectError(
      await intruder.call('POST', `/v1/nodes/${intruder.id}/tasks/${assignment.taskId}/result`, report),
      403,
      'task_not_assigned',
    );
    await expectError(
      await intruder.call('POST', `/v1/nodes/${intruder.id}/tasks/${assignment.taskId}/progress`, { attempt: 1 }),
      403,
      'task_not_assigned',
    );
    // A stale attempt of the rightful node.
    await expectError(
      await node.call('POST', `/v1/nodes/${node.id}/tasks/${assignment.taskId}/result`, { ...report, attempt: 2 }),
      409,
      'lease_lost',
    );
    await expectError(
      await node.call('POST', `/v1/nodes/${node.id}/tasks/job_01JD7Z5C2Q9W8V6T4R2P0N8M6K.0/fail`, {
        attempt: 1,
        reason: 'error',
        message: 'x',
      }),
      404,
      'task_not_found',
    );
    await expectError(
      await node.call('POST', `/v1/nodes/${node.id}/tasks/${assignment.taskId}/result`, { ...report, extra: true }),
      400,
      'validation_failed',
    );
    const strip = (rows: unknown[]) =>
      (rows as { pk: string; data: string }[]).map((r) => (r.pk.startsWith('NODE#') ? { ...r, data: '' } : r));
    expect(strip(h.snapshot())).toEqual(strip(before)); // nodes' lastSeenAt may move; nothing else
  });

  it('publishes an OpenAPI 3.1 document generated from the protocol schemas', async () => {
    const doc = (await (await h.request('/openapi.json')).json()) as {
      openapi: string;
      paths: Record<string, unknown>;
      components: { schemas: Record<string, { additionalProperties?: unknown }> };
    };
    expect(doc.openapi).toBe('3.1.0');
    expect(Object.keys(doc.paths)).toEqual(
      expect.arrayContaining([
        '/v1/jobs',
        '/v1/jobs/{jobId}/cancel',
        '/v1/nodes/{nodeId}/work',
        '/v1/nodes/{nodeId}/tasks/{taskId}/result',
      ]),
    );
    expect(doc.components.schemas.JobSpec?.additionalProperties).toBe(false);
  });
});
