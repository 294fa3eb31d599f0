import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { maxClockSkewMs, resultHash, sha256Hex, signatureHeaders, signRequest } from '../../protocol/index.js';
import { inProcessControlPlane, TestNode } from '../support/in-process.js';
import { assignedTask, expectRefused, type Harness, unchanged } from './support.js';

/**
 * Node request signing (protocol/signing.ts, functions/domain/security/request-auth.ts): a
 * request whose body, signature or node id was tampered with, that is replayed, re-aimed at
 * another route, or too old is refused with 401, and nothing it asked for happens. A node acting
 * for another node's task is refused with 403.
 */

let h: Harness;
beforeEach(() => {
  h = inProcessControlPlane();
});
afterEach(() => h.close());

/** A valid result report for the assignment, its hash consistent with its outputs. */
function resultReport(attempt: number) {
  const outputs = [{ name: 'stdout', sha256: sha256Hex(''), bytes: 0 }];
  return { attempt, exitCode: 0, resultHash: resultHash(outputs), outputs, metrics: { wallMs: 5 } };
}

/** The parts of a signed request, so a test can change one of them after signing. */
function signed(node: TestNode, method: string, path: string, body: unknown, at = Date.now()) {
  const text = body === undefined ? '' : JSON.stringify(body);
  const headers: Record<string, string> = {
    ...signRequest(node.key, node.id, { method, pathWithQuery: path, body: text }, at),
    ...(body === undefined ? {} : { 'content-type': 'application/json' }),
  };
  return { method, path, headers, body: text };
}

const send = (r: { method: string; path: string; headers: Record<string, string>; body: string }) =>
  h.request(r.path, { method: r.method, headers: r.headers, ...(r.body === '' ? {} : { body: r.body }) });

/** Flips bit `bit` of byte `index` in a base64url value. */
function flipBase64url(value: string, index = 0, bit = 0): string {
  const bytes = Buffer.from(value, 'base64url');
  bytes[index] = (bytes[index] ?? 0) ^ (1 << bit);
  return bytes.toString('base64url');
}

const resultPath = (nodeId: string, taskId: string) => `/v1/nodes/${nodeId}/tasks/${taskId}/result`;

async function taskState(taskId: string) {
  const jobId = taskId.slice(0, taskId.lastIndexOf('.'));
  const job = (await (await h.api(`/v1/jobs/${jobId}`)).json()) as { tasks: { id: string; state: string }[] };
  return job.tasks.find((t) => t.id === taskId)?.state;
}

describe('node request signing', () => {
  it('refuses a body with one flipped bit (401), and the task stays assigned', async () => {
    const { node, assignment } = await assignedTask(h);
    const request = signed(node, 'POST', resultPath(node.id, assignment.taskId), resultReport(assignment.attempt));
    // '"exitCode":0' -> '"exitCode":1': one bit (0x30 -> 0x31), still valid JSON, still a valid report.
    const tampered = request.body.replace('"exitCode":0', '"exitCode":1');
    expect(Buffer.from(tampered).compare(Buffer.from(request.body))).not.toBe(0);
    await unchanged(h, async () => expectRefused(await send({ ...request, body: tampered }), 401, 'bad_signature'));
    expect(await taskState(assignment.taskId)).toBe('assigned');
    // The untampered request still goes through: the refusal was the tampering.
    expect((await send(request)).status).toBe(200);
  });

  it('refuses a signature with one flipped bit (401)', async () => {
    const { node, assignment } = await assignedTask(h);
    const request = signed(node, 'POST', resultPath(node.id, assignment.taskId), resultReport(assignment.attempt));
    for (const [index, bit] of [
      [0, 0],
      [31, 7],
      [63, 3],
    ] as const) {
      const headers = {
        ...request.headers,
        [signatureHeaders.signature]: flipBase64url(request.headers[signatureHeaders.signature] ?? '', index, bit),
      };
      await unchanged(h, async () => expectRefused(await send({ ...request, headers }), 401, 'bad_signature'));
    }
    expect(await taskState(assignment.taskId)).toBe('assigned');
  });

  it('refuses a node id (key id) with one flipped bit (401), whether or not it names a node', async () => {
    const { node, assignment } = await assignedTask(h);
    const other = new TestNode(h.request);
    expect((await other.register()).status).toBe(201);
    const request = signed(node, 'POST', resultPath(node.id, assignment.taskId), resultReport(assignment.attempt));
    // 'a' (0x61) -> 'c' (0x63) flips one bit and stays in the id alphabet: an unknown node.
    const last = node.id.at(-1) === 'a' ? 'c' : 'a';
    const flipped = `${node.id.slice(0, -1)}${last}`;
    await unchanged(h, async () =>
      expectRefused(await send({ ...request, headers: { ...request.headers, [signatureHeaders.node]: flipped } }), 401),
    );
    // Naming another registered node: the signature does not verify under its key.
    await unchanged(h, async () =>
      expectRefused(
        await send({ ...request, headers: { ...request.headers, [signatureHeaders.node]: other.id } }),
        401,
        'bad_signature',
      ),
    );
    expect(await taskState(assignment.taskId)).toBe('assigned');
  });

  it('refuses a replayed request (401): the report is applied once', async () => {
    const { node, assignment } = await assignedTask(h);
    const request = signed(node, 'POST', `/v1/nodes/${node.id}/tasks/${assignment.taskId}/progress`, {
      attempt: assignment.attempt,
      percent: 10,
    });
    expect((await send(request)).status).toBe(200);
    expect(await taskState(assignment.taskId)).toBe('running');
    await unchanged(h, async () => expectRefused(await send(request), 401, 'replayed_request'));
  });

  it('refuses a signature reused on another route (401)', async () => {
    const { node, assignment } = await assignedTask(h);
    const heartbeat = signed(node, 'POST', `/v1/nodes/${node.id}/heartbeat`, {
      tasks: [{ taskId: assignment.taskId, attempt: assignment.attempt }],
    });
    // Same headers and body, another path; then another method on a path of the same shape.
    await unchanged(h, async () =>
      expectRefused(
        await send({ ...heartbeat, path: `/v1/nodes/${node.id}/tasks/${assignment.taskId}/progress` }),
        401,
      ),
    );
    const poll = signed(node, 'GET', `/v1/nodes/${node.id}/work?wait=0`, undefined);
    await unchanged(h, async () =>
      expectRefused(await send({ ...poll, path: `/v1/nodes/${node.id}/work?wait=1` }), 401, 'bad_signature'),
    );
    await unchanged(h, async () =>
      expectRefused(await send({ ...poll, method: 'POST', path: `/v1/nodes/${node.id}/credentials` }), 401),
    );
    expect(await taskState(assignment.taskId)).toBe('assigned');
  });

  it('refuses a request signed 10 minutes ago (401), and one dated 10 minutes ahead', async () => {
    const { node, assignment } = await assignedTask(h);
    const path = resultPath(node.id, assignment.taskId);
    for (const at of [Date.now() - 10 * 60_000, Date.now() + 10 * 60_000]) {
      expect(Math.abs(at - Date.now())).toBeGreaterThan(maxClockSkewMs);
      const old = signed(node, 'POST', path, resultReport(assignment.attempt), at);
      await unchanged(h, async () => expectRefused(await send(old), 401, 'stale_request'));
    }
    expect(await taskState(assignment.taskId)).toBe('assigned');
  });

  it('refuses a date header that is not plain integer digits (401)', async () => {
    const { node, assignment } = await assignedTask(h);
    const request = signed(node, 'POST', resultPath(node.id, assignment.taskId), resultReport(assignment.attempt));
    const date = request.headers[signatureHeaders.date] ?? '';
    // (Leading or trailing spaces are not a case: HTTP strips them from header values on the way.)
    for (const bad of [`${date}.0`, `+${date}`, `${date}e0`, `0${date}`, `0x${Number(date).toString(16)}`]) {
      await unchanged(h, async () =>
        expectRefused(await send({ ...request, headers: { ...request.headers, [signatureHeaders.date]: bad } }), 401),
      );
    }
  });

  it('refuses unsigned and half-signed requests to node routes (401)', async () => {
    const { node, assignment } = await assignedTask(h);
    const request = signed(node, 'POST', resultPath(node.id, assignment.taskId), resultReport(assignment.attempt));
    await unchanged(h, async () =>
      expectRefused(
        await send({ ...request, headers: { 'content-type': 'application/json' } }),
        401,
        'unauthenticated',
      ),
    );
    for (const drop of Object.values(signatureHeaders)) {
      const headers = { ...request.headers };
      delete headers[drop];
      await unchanged(h, async () => expectRefused(await send({ ...request, headers }), 401));
    }
  });

  it("refuses node X reporting for node Y's task (403), on Y's path and on its own", async () => {
    const { node: y, assignment } = await assignedTask(h);
    const x = new TestNode(h.request);
    expect((await x.register()).status).toBe(201);
    const report = resultReport(assignment.attempt);
    // X signs with its own key and names Y in the path.
    await unchanged(h, async () =>
      expectRefused(await x.call('POST', resultPath(y.id, assignment.taskId), report), 403),
    );
    // X reports the task on its own path: it was never assigned to X.
    for (const [path, body] of [
      [resultPath(x.id, assignment.taskId), report],
      [`/v1/nodes/${x.id}/tasks/${assignment.taskId}/progress`, { attempt: assignment.attempt }],
      [
        `/v1/nodes/${x.id}/tasks/${assignment.taskId}/fail`,
        { attempt: assignment.attempt, reason: 'error', message: 'x' },
      ],
    ] as const) {
      await unchanged(h, async () => expectRefused(await x.call('POST', path, body), 403, 'task_not_assigned'));
    }
    // X heartbeating Y's task extends nothing: refused as never assigned to X; only X's own
    // record (last seen) may change.
    const notNodes = () => h.snapshot().filter((i) => !String((i as { pk: string }).pk).startsWith('NODE#'));
    const before = notNodes();
    const beat = await x.call('POST', `/v1/nodes/${x.id}/heartbeat`, {
      tasks: [{ taskId: assignment.taskId, attempt: assignment.attempt }],
    });
    await expectRefused(beat, 403, 'task_not_assigned');
    expect(notNodes()).toEqual(before);
    expect(await taskState(assignment.taskId)).toBe('assigned');
  });

  it('refuses a registration signed with another key than the one it registers (401)', async () => {
    const a = new TestNode(h.request);
    const b = new TestNode(h.request);
    const body = {
      publicKey: b.key.publicKey,
      agentVersion: '0.1.0',
      inventory: {
        gpus: [],
        cpu: { model: 'c', cores: 1 },
        memoryMiB: 1024,
        os: 'linux',
        arch: 'x64',
        runtimes: ['process'],
        region: 'local',
      },
    };
    // A signs, claiming to be A, registering B's key; then claiming to be B.
    await unchanged(h, async () => expectRefused(await a.call('POST', '/v1/nodes', body), 401));
    await unchanged(h, async () => expectRefused(await a.call('POST', '/v1/nodes', body, b.id), 401));
    const nodes = (await (await h.api('/v1/nodes')).json()) as { nodes: unknown[] };
    expect(nodes.nodes).toHaveLength(0);
  });
});
