import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import {
  canonicalRequest,
  generateNodeKeyPair,
  loadNodeKeyPair,
  nodeIdFromPublicKey,
  signatureHeaders,
  signRequest,
  verifySignature,
} from '../protocol/index.js';
import { AgentHarness } from '../test/support/agent-harness.js';
import { freePort } from '../test/support/processes.js';
import { ControlPlaneClient, type ControlPlaneClientOptions } from './client.js';
import {
  InvalidRequestError,
  LeaseLostError,
  NetworkError,
  NodeNotRegisteredError,
  RequestAbortedError,
  RequestRejectedError,
  ServerError,
  UnexpectedResponseError,
} from './errors.js';
import { testJobId, testProbe } from './test-support/fixtures.js';

/**
 * The client against the real embedded control plane (test/support/agent-harness.ts), which checks
 * every signature it gets; the fault proxy in front answers what the server would not (5xx, 429,
 * bodies that are not the error shape or break the schema).
 */
let harness: AgentHarness | undefined;
let server: Server | undefined;

afterEach(async () => {
  await harness?.stop();
  harness = undefined;
  const closing = server;
  server = undefined;
  if (closing !== undefined) {
    closing.closeAllConnections();
    await new Promise((resolve) => closing.close(resolve));
  }
});

function makeClient(api: string, options: Partial<ControlPlaneClientOptions> = {}) {
  const keyPair = loadNodeKeyPair(generateNodeKeyPair().privateKeyPem);
  const nodeId = nodeIdFromPublicKey(keyPair.publicKey);
  const client = new ControlPlaneClient({ api, nodeId, keyPair, backoff: { initialMs: 5, maxMs: 20 }, ...options });
  return { client, keyPair, nodeId };
}

/** A client of a node registered with the real control plane, through the proxy. */
async function registered(options: Partial<ControlPlaneClientOptions> = {}) {
  harness ??= await AgentHarness.start({ dataDirPrefix: 'gpuai-agent-client-' });
  const made = makeClient(harness.url, options);
  const { inventory } = await testProbe();
  await made.client.register({ publicKey: made.keyPair.publicKey, agentVersion: '0.0.0-test', inventory });
  return { ...made, harness };
}

const lease = { leaseExpiresAt: '2030-01-01T00:00:00.000Z' };
const taskId = `${testJobId()}.0`;
const errorBody = (code: string) => ({ error: { code, message: `said ${code}` } });

describe('ControlPlaneClient', { timeout: 60_000 }, () => {
  it('signs what it sends: the real server accepts its polls, heartbeats and reports', async () => {
    const { client, harness: h } = await registered();
    expect(await client.pollWork(0)).toBeUndefined();
    expect(await client.heartbeat({ tasks: [] })).toMatchObject({ abort: [] });
    const job = await h.submit({ command: ['true'] });
    const assignment = await client.pollWork(5);
    expect(assignment).toMatchObject({ taskId: job.tasks[0]?.id, jobId: job.id, attempt: 1, command: ['true'] });
    await expect(client.reportProgress(assignment?.taskId ?? '', { attempt: 1, percent: 50 })).resolves.toMatchObject({
      leaseExpiresAt: expect.any(String),
    });
    expect((await h.task(job.id)).progress?.percent).toBe(50);
    const [first, second] = h.sent('POST', '/progress').concat(h.sent('GET', '/work'));
    expect(first?.body).toBe('{"attempt":1,"percent":50}');
    expect(second?.path).toMatch(/\/work\?wait=0$/);
  });

  it('signs the exact path, query and body under a base path', async () => {
    // The real server answers at the root; a base path is what a gateway in front of it adds, so
    // a server that records what it got stands in for that gateway here.
    const requests: { method: string; url: string; headers: IncomingHttpHeaders; body: string }[] = [];
    server = createServer((request, response) => {
      let body = '';
      request.on('data', (chunk: Buffer) => {
        body += chunk.toString();
      });
      request.on('end', () => {
        requests.push({ method: request.method ?? '', url: request.url ?? '', headers: request.headers, body });
        if (request.method === 'GET') response.writeHead(204).end();
        else response.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(lease));
      });
    });
    await new Promise<void>((resolve) => server?.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const { client, keyPair, nodeId } = makeClient(`${url}/prefix/`);
    await client.pollWork(7);
    await client.reportProgress(taskId, { attempt: 3, percent: 50 });

    expect(requests.map((request) => `${request.method} ${request.url}`)).toEqual([
      `GET /prefix/v1/nodes/${nodeId}/work?wait=7`,
      `POST /prefix/v1/nodes/${nodeId}/tasks/${taskId}/progress`,
    ]);
    expect(requests[1]?.body).toBe('{"attempt":3,"percent":50}');
    for (const request of requests) {
      const header = (name: string) => String(request.headers[name]);
      expect(header(signatureHeaders.node)).toBe(nodeId);
      const message = canonicalRequest(
        request.method,
        request.url,
        Number(header(signatureHeaders.date)),
        header(signatureHeaders.nonce),
        request.body,
      );
      expect(verifySignature(keyPair.publicKey, message, header(signatureHeaders.signature))).toBe(true);
    }
    expect(requests[0]?.headers[signatureHeaders.nonce]).not.toBe(requests[1]?.headers[signatureHeaders.nonce]);
  });

  it("maps the real server's refusals to typed errors that say whether to retry", async () => {
    const { client, harness: h } = await registered();
    // A task it holds, reported for an attempt that is not the one leased to it.
    const job = await h.submit({ command: ['true'] });
    const assignment = await client.pollWork(5);
    expect(assignment?.jobId).toBe(job.id);
    const lost = await client.reportProgress(assignment?.taskId ?? '', { attempt: 2 }).catch((e: unknown) => e);
    expect(lost).toBeInstanceOf(LeaseLostError);
    expect(lost).toMatchObject({ status: 409, code: 'lease_lost', retryable: false });
    // A task that was never assigned to it.
    const other = await h.submit({ command: ['true'], regions: ['us-east'] });
    const foreign = await client.reportProgress(other.tasks[0]?.id ?? '', { attempt: 1 }).catch((e: unknown) => e);
    expect(foreign).toBeInstanceOf(RequestRejectedError);
    expect(foreign).toMatchObject({ status: 403, code: 'task_not_assigned', retryable: false });
    // A task that does not exist.
    const unknown = await client.reportProgress(taskId, { attempt: 1 }).catch((e: unknown) => e);
    expect(unknown).toBeInstanceOf(RequestRejectedError);
    expect(unknown).toMatchObject({ status: 404, code: 'task_not_found', retryable: false });
    // A node the server does not know.
    const stranger = makeClient(h.url).client;
    const unregistered = await stranger.heartbeat({ tasks: [] }).catch((e: unknown) => e);
    expect(unregistered).toBeInstanceOf(NodeNotRegisteredError);
    expect(unregistered).toMatchObject({ status: 401, retryable: false });
  });

  it('maps 404 node_not_found and 503 from in front of the server', async () => {
    const { client, harness: h } = await registered();
    h.proxy.failNext(1, 404, errorBody('node_not_found'));
    expect(await client.heartbeat({ tasks: [] }).catch((e: unknown) => e)).toBeInstanceOf(NodeNotRegisteredError);
    h.proxy.failNext(1, 503, errorBody('unavailable'));
    const unavailable = await client.heartbeat({ tasks: [] }).catch((e: unknown) => e);
    expect(unavailable).toBeInstanceOf(ServerError);
    expect(unavailable).toMatchObject({ status: 503, retryable: true });
  });

  it('describes an error response that is not the error shape', async () => {
    const { client, harness: h } = await registered();
    h.proxy.failNext(1, 502, '<html>bad gateway</html>');
    await expect(client.heartbeat({ tasks: [] })).rejects.toThrow('502 http_502');
  });

  it('retries 5xx and 429 with backoff until success when asked to', async () => {
    const events: string[] = [];
    const { client, harness: h } = await registered({
      onUnavailable: (error) => events.push(`down ${error.name}`),
      onAvailable: () => events.push('up'),
    });
    h.proxy.failNext(1, 503, errorBody('restarting'));
    h.proxy.failNext(1, 429, errorBody('slow_down'));
    expect(await client.heartbeat({ tasks: [] }, { retry: 'forever' })).toMatchObject({ abort: [] });
    expect(h.sent('POST', '/heartbeat').map((r) => r.status)).toEqual([503, 429, 200]);
    expect(events).toEqual(['down ServerError', 'up']);
  });

  it('does not retry a refused request, and gives up after the attempts it was allowed', async () => {
    const { client, harness: h } = await registered();
    const refused = await client.reportProgress(taskId, { attempt: 1 }, { retry: 'forever' }).catch((e: unknown) => e);
    expect(refused).toBeInstanceOf(RequestRejectedError);
    expect(h.sent('POST', '/progress')).toHaveLength(1);
    h.proxy.failNext(3, 500, errorBody('boom'));
    await expect(client.heartbeat({ tasks: [] }, { retry: { attempts: 3 } })).rejects.toBeInstanceOf(ServerError);
    expect(h.sent('POST', '/heartbeat').map((r) => r.status)).toEqual([500, 500, 500]);
  });

  it('reports an unreachable control plane as a retryable network error', async () => {
    // A port nothing listens on: the connection is refused, as when the server is down.
    const error = await makeClient(`http://127.0.0.1:${await freePort()}`)
      .client.pollWork(1)
      .catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(NetworkError);
    expect(error).toMatchObject({ retryable: true, message: expect.stringContaining('ECONNREFUSED') });
  });

  it('stops retrying, and cuts a poll in flight, when aborted', async () => {
    const { client, harness: h } = await registered();
    h.proxy.failNext(1_000, 503, errorBody('down'));
    const controller = new AbortController();
    const retrying = client.heartbeat({ tasks: [] }, { retry: 'forever', signal: controller.signal });
    await expect.poll(() => h.sent('POST', '/heartbeat').length).toBeGreaterThanOrEqual(2);
    controller.abort();
    await expect(retrying).rejects.toBeInstanceOf(RequestAbortedError);

    h.proxy.cut('hang');
    const poll = new AbortController();
    const polling = client.pollWork(20, { signal: poll.signal });
    await expect.poll(() => h.sent('GET', '/work').length).toBe(1);
    poll.abort();
    await expect(polling).rejects.toBeInstanceOf(RequestAbortedError);
  });

  it('refuses to send a body its schema rejects, and a response that breaks the schema', async () => {
    const { client, harness: h } = await registered();
    await expect(client.reportProgress(taskId, { attempt: 0 })).rejects.toBeInstanceOf(InvalidRequestError);
    expect(h.sent('POST', '/progress')).toHaveLength(0);
    h.proxy.rewriteNext(1, () => JSON.stringify({ abort: 'none', heartbeatIntervalMs: 'soon' }));
    await expect(client.heartbeat({ tasks: [] })).rejects.toBeInstanceOf(UnexpectedResponseError);
  });
});

describe('dated streams after a restart (heartbeats signed with a date the server has passed)', () => {
  it('re-signs above the watermark that the 401 replayed_request carries, instead of failing until the clock catches up', async () => {
    const { client, keyPair, nodeId, harness: h } = await registered();
    // An earlier run of this node, its clock a minute ahead, had a heartbeat taken; this run has lost its last date.
    const path = `/v1/nodes/${nodeId}/heartbeat`;
    const body = JSON.stringify({ tasks: [] });
    const ahead = await fetch(new URL(path, h.url), {
      method: 'POST',
      headers: {
        ...signRequest(keyPair, nodeId, { method: 'POST', pathWithQuery: path, body }, Date.now() + 60_000),
        'content-type': 'application/json',
      },
      body,
    });
    expect(ahead.status).toBe(200);
    const beat = await client.heartbeat({ tasks: [] });
    expect(beat.abort).toEqual([]);
  });
});
