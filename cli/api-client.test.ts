import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ApiClient } from './api-client.js';
import { ApiError, UnreachableError } from './errors.js';
import { startTestControlPlane, type TestControlPlane } from './testing/control-plane.js';

/** The client against the real embedded control plane, with the fault proxy's bad answers in front. */

let cp: TestControlPlane;
beforeAll(async () => {
  cp = await startTestControlPlane();
});
afterAll(() => cp.stop());

const client = (base = cp.url, timeoutMs = 5000) => new ApiClient(base, { apiKey: cp.adminKey, timeoutMs });

const rejection = async (promise: Promise<unknown>): Promise<unknown> => {
  try {
    await promise;
  } catch (error) {
    return error;
  }
  throw new Error('expected a rejection');
};

describe('ApiClient', () => {
  it('keeps a path prefix of the base URL and sends only the given query parameters', async () => {
    // An API Gateway stage prefix: the embedded server has none, so it answers 404, after the
    // proxy has logged the path the client asked for.
    await rejection(client(`${cp.url}/prod/`).listJobs({ status: 'running' }));
    expect(cp.proxy.requests.at(-1)?.path).toBe('/prod/v1/jobs?status=running');
  });

  it('maps the error shape to a typed ApiError', async () => {
    const missing = `job_${'0'.repeat(26)}`;
    const error = await rejection(client().getJob(missing));
    expect(error).toBeInstanceOf(ApiError);
    expect(error).toMatchObject({
      status: 404,
      code: 'job_not_found',
      message: `no job ${missing}`,
      requestId: expect.any(String),
      exitCode: 4,
    });
    const { requestId } = error as ApiError;
    expect((error as ApiError).toErrorBody()).toEqual({
      error: { code: 'job_not_found', message: `no job ${missing}`, requestId },
    });
  });

  it('turns a non-API error page (a proxy in front) into an ApiError with the status', async () => {
    cp.proxy.failNext(1, 502, '<html>Bad Gateway</html>');
    const error = await rejection(client().listNodes());
    expect(error).toMatchObject({ status: 502, code: 'http_502' });
    expect((error as ApiError).message).toBe('GET /v1/nodes: HTTP 502 <html>Bad Gateway</html>');
  });

  it('refuses a success body that does not match the protocol schema', async () => {
    cp.proxy.garbleNext(1, JSON.stringify({ jobs: [{ id: 'nope' }] }));
    const error = await rejection(client().listJobs());
    expect(error).toMatchObject({ code: 'invalid_response' });
    expect((error as ApiError).message).toMatch(
      /^GET \/v1\/jobs: the control plane sent a response this CLI does not understand \(jobs\.0\.id: /,
    );
  });

  it('reports a control plane that does not answer in time as unreachable', async () => {
    cp.proxy.cut('hang');
    try {
      const error = await rejection(client(cp.url, 50).listJobs());
      expect(error).toBeInstanceOf(UnreachableError);
      expect((error as UnreachableError).reason).toBe('no answer within 0.05s');
    } finally {
      cp.proxy.restore();
    }
  });

  it('renders server validation issues one per line', async () => {
    // A spec the CLI would refuse before sending; sent raw, the server's own issues come back.
    const error = await rejection(client().submitJob({ command: ['true'], tasks: 0 }, 'validation'));
    expect(error).toMatchObject({ status: 400, code: 'validation_failed' });
    const lines = (error as ApiError).detailLines();
    expect(lines[0]).toMatch(/^ {2}HTTP 400 validation_failed \(request [\w-]+\)$/);
    expect(lines.slice(1)).toEqual([expect.stringMatching(/^ {2}tasks: .+/)]);
  });
});
