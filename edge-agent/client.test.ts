import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import {
  canonicalRequest,
  generateNodeKeyPair,
  loadNodeKeyPair,
  nodeIdFromPublicKey,
  signatureHeaders,
  verifySignature,
} from '../protocol/index.js';
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
import { testAssignment } from './test-support/fixtures.js';

interface Captured {
  method: string;
  url: string;
  headers: IncomingHttpHeaders;
  body: string;
}

type Reply = { status: number; body?: unknown; headers?: Record<string, string> };

let server: Server | undefined;

afterEach(async () => {
  const closing = server;
  server = undefined;
  if (closing !== undefined) {
    closing.closeAllConnections();
    await new Promise((resolve) => closing.close(resolve));
  }
});

/** A server answering each request with the next reply (the last one repeats), recording what it got. */
async function serve(...replies: Reply[]): Promise<{ url: string; requests: Captured[] }> {
  const requests: Captured[] = [];
  server = createServer((request, response) => {
    const chunks: Buffer[] = [];
    request.on('data', (chunk: Buffer) => chunks.push(chunk));
    request.on('end', () => {
      requests.push({
        method: request.method ?? '',
        url: request.url ?? '',
        headers: request.headers,
        body: Buffer.concat(chunks).toString('utf8'),
      });
      const reply = replies[Math.min(requests.length, replies.length) - 1] ?? { status: 500 };
      response.writeHead(reply.status, { 'content-type': 'application/json', ...reply.headers });
      response.end(reply.body === undefined ? undefined : JSON.stringify(reply.body));
    });
  });
  await new Promise<void>((resolve) => server?.listen(0, '127.0.0.1', resolve));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, requests };
}

function makeClient(api: string, options: Partial<ControlPlaneClientOptions> = {}) {
  const keyPair = loadNodeKeyPair(generateNodeKeyPair().privateKeyPem);
  const nodeId = nodeIdFromPublicKey(keyPair.publicKey);
  const client = new ControlPlaneClient({ api, nodeId, keyPair, backoff: { initialMs: 5, maxMs: 20 }, ...options });
  return { client, keyPair, nodeId };
}

function verify(publicKey: string, request: Captured): boolean {
  const header = (name: string) => String(request.headers[name]);
  const message = canonicalRequest(
    request.method,
    request.url,
    Number(header(signatureHeaders.date)),
    header(signatureHeaders.nonce),
    request.body,
  );
  return verifySignature(publicKey, message, header(signatureHeaders.signature));
}

const lease = { leaseExpiresAt: '2030-01-01T00:00:00.000Z' };
const taskId = testAssignment([]).taskId;
const errorBody = (code: string) => ({ error: { code, message: `said ${code}` } });

describe('ControlPlaneClient', () => {
  it('signs the exact path, query and body it sends', async () => {
    const { url, requests } = await serve({ status: 204 }, { status: 200, body: lease });
    const { client, keyPair, nodeId } = makeClient(`${url}/prefix/`);
    await client.pollWork(7);
    await client.reportProgress(taskId, { attempt: 3, percent: 50 });

    expect(requests.map((request) => `${request.method} ${request.url}`)).toEqual([
      `GET /prefix/v1/nodes/${nodeId}/work?wait=7`,
      `POST /prefix/v1/nodes/${nodeId}/tasks/${taskId}/progress`,
    ]);
    expect(requests[1]?.body).toBe('{"attempt":3,"percent":50}');
    for (const request of requests) {
      expect(request.headers[signatureHeaders.node]).toBe(nodeId);
      expect(verify(keyPair.publicKey, request)).toBe(true);
    }
    expect(requests[0]?.headers[signatureHeaders.nonce]).not.toBe(requests[1]?.headers[signatureHeaders.nonce]);
  });

  it('parses an assignment, and an empty poll as none', async () => {
    const assignment = testAssignment(['true']);
    const { url } = await serve({ status: 200, body: { assignment } }, { status: 204 });
    const { client } = makeClient(url);
    expect(await client.pollWork(1)).toEqual(assignment);
    expect(await client.pollWork(1)).toBeUndefined();
  });

  it('maps error responses to typed errors that say whether to retry', async () => {
    const cases: [Reply, new (...args: never[]) => Error, boolean][] = [
      [{ status: 409, body: errorBody('lease_lost') }, LeaseLostError, false],
      [{ status: 401, body: errorBody('unauthenticated') }, NodeNotRegisteredError, false],
      [{ status: 404, body: errorBody('node_not_found') }, NodeNotRegisteredError, false],
      [{ status: 404, body: errorBody('task_not_found') }, RequestRejectedError, false],
      [{ status: 503, body: errorBody('unavailable') }, ServerError, true],
    ];
    for (const [reply, type, retryable] of cases) {
      const { url, requests } = await serve(reply);
      const { client } = makeClient(url);
      const error = await client.reportProgress(taskId, { attempt: 1 }).catch((caught: unknown) => caught);
      expect(error).toBeInstanceOf(type);
      expect(error).toMatchObject({ status: reply.status, retryable });
      expect(requests).toHaveLength(1);
      server?.closeAllConnections();
      server?.close();
    }
  });

  it('describes an error response that is not the error shape', async () => {
    const { url } = await serve({ status: 502, body: '<html>bad gateway</html>' });
    const { client } = makeClient(url);
    await expect(client.heartbeat({ tasks: [] })).rejects.toThrow('502 http_502');
  });

  it('retries 5xx and 429 with backoff until success when asked to', async () => {
    const { url, requests } = await serve(
      { status: 503, body: errorBody('restarting') },
      { status: 429, body: errorBody('slow_down'), headers: { 'retry-after': '0' } },
      { status: 200, body: lease },
    );
    const events: string[] = [];
    const { client } = makeClient(url, {
      onUnavailable: (error) => events.push(`down ${error.name}`),
      onAvailable: () => events.push('up'),
    });
    expect(await client.reportProgress(taskId, { attempt: 1 }, { retry: 'forever' })).toEqual(lease);
    expect(requests).toHaveLength(3);
    expect(events).toEqual(['down ServerError', 'up']);
  });

  it('does not retry a refused request, and gives up after the attempts it was allowed', async () => {
    const refused = await serve({ status: 400, body: errorBody('validation_failed') });
    await expect(
      makeClient(refused.url).client.reportProgress(taskId, { attempt: 1 }, { retry: 'forever' }),
    ).rejects.toBeInstanceOf(RequestRejectedError);
    expect(refused.requests).toHaveLength(1);
    server?.close();
    const failing = await serve({ status: 500, body: errorBody('boom') });
    await expect(
      makeClient(failing.url).client.reportProgress(taskId, { attempt: 1 }, { retry: { attempts: 3 } }),
    ).rejects.toBeInstanceOf(ServerError);
    expect(failing.requests).toHaveLength(3);
  });

  it('reports an unreachable control plane as a retryable network error', async () => {
    const { url } = await serve({ status: 204 });
    await new Promise((resolve) => server?.close(resolve));
    server = undefined;
    const error = await makeClient(url)
      .client.pollWork(1)
      .catch((caught: unknown) => caught);
    expect(error).toBeInstanceOf(NetworkError);
    expect(error).toMatchObject({ retryable: true, message: expect.stringContaining('ECONNREFUSED') });
  });

  it('stops retrying, and cuts a poll in flight, when aborted', async () => {
    const { url } = await serve({ status: 503, body: errorBody('down') });
    const controller = new AbortController();
    const { client } = makeClient(url);
    const retrying = client.reportProgress(taskId, { attempt: 1 }, { retry: 'forever', signal: controller.signal });
    setTimeout(() => controller.abort(), 50);
    await expect(retrying).rejects.toBeInstanceOf(RequestAbortedError);

    server?.closeAllConnections();
    server?.close();
    server = createServer(() => {}); // never answers
    await new Promise<void>((resolve) => server?.listen(0, '127.0.0.1', resolve));
    const hanging = makeClient(`http://127.0.0.1:${(server.address() as AddressInfo).port}`).client;
    const poll = new AbortController();
    const polling = hanging.pollWork(20, { signal: poll.signal });
    setTimeout(() => poll.abort(), 50);
    await expect(polling).rejects.toBeInstanceOf(RequestAbortedError);
  });

  it('refuses to send a body its schema rejects, and a response that breaks the schema', async () => {
    const { url, requests } = await serve({ status: 200, body: { leaseExpiresAt: 'tomorrow' } });
    const { client } = makeClient(url);
    await expect(client.reportProgress(taskId, { attempt: 0 })).rejects.toBeInstanceOf(InvalidRequestError);
    expect(requests).toHaveLength(0);
    await expect(client.reportProgress(taskId, { attempt: 1 })).rejects.toBeInstanceOf(UnexpectedResponseError);
  });
});
