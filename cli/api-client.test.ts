import { describe, expect, it } from 'vitest';
import { ApiClient } from './api-client.js';
import { ApiError, UnreachableError } from './errors.js';
import { fakeJobId } from './testing/fake-control-plane.js';

/** A client whose fetch answers every request with `respond`, recording the URLs asked for. */
function clientAnswering(
  respond: (url: URL, init: RequestInit) => Response | Promise<Response>,
  base = 'http://cp.test',
) {
  const urls: string[] = [];
  const fetchStub = async (input: string | URL | Request, init?: RequestInit) => {
    const url = new URL(input instanceof Request ? input.url : input);
    urls.push(url.toString());
    return respond(url, init ?? {});
  };
  return { client: new ApiClient(base, { fetch: fetchStub, timeoutMs: 50 }), urls };
}

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
    const { client, urls } = clientAnswering(() => Response.json({ jobs: [] }), 'https://gw.test/prod/');
    await client.listJobs({ status: 'running' });
    expect(urls).toEqual(['https://gw.test/prod/v1/jobs?status=running']);
  });

  it('maps the error shape to a typed ApiError', async () => {
    const body = { error: { code: 'job_not_found', message: 'no such job', requestId: 'r1' } };
    const { client } = clientAnswering(() => Response.json(body, { status: 404 }));
    const error = await rejection(client.getJob(fakeJobId(1)));
    expect(error).toBeInstanceOf(ApiError);
    expect(error).toMatchObject({
      status: 404,
      code: 'job_not_found',
      message: 'no such job',
      requestId: 'r1',
      exitCode: 4,
    });
    expect((error as ApiError).toErrorBody()).toEqual(body);
  });

  it('turns a non-API error page (a proxy in front) into an ApiError with the status', async () => {
    const { client } = clientAnswering(() => new Response('<html>Bad Gateway</html>', { status: 502 }));
    const error = await rejection(client.listNodes());
    expect(error).toMatchObject({ status: 502, code: 'http_502' });
    expect((error as ApiError).message).toBe('GET /v1/nodes: HTTP 502 <html>Bad Gateway</html>');
  });

  it('refuses a success body that does not match the protocol schema', async () => {
    const { client } = clientAnswering(() => Response.json({ jobs: [{ id: 'nope' }] }));
    const error = await rejection(client.listJobs());
    expect(error).toMatchObject({ code: 'invalid_response' });
    expect((error as ApiError).message).toMatch(
      /^GET \/v1\/jobs: the control plane sent a response this CLI does not understand \(jobs\.0\.id: /,
    );
  });

  it('reports a control plane that does not answer in time as unreachable', async () => {
    const { client } = clientAnswering(
      (_url, init) =>
        new Promise((_resolve, reject) => init.signal?.addEventListener('abort', () => reject(init.signal?.reason))),
    );
    const error = await rejection(client.listJobs());
    expect(error).toBeInstanceOf(UnreachableError);
    expect((error as UnreachableError).reason).toBe('no answer within 0.05s');
  });

  it('renders server validation issues one per line', () => {
    const error = new ApiError(400, {
      error: {
        code: 'validation_failed',
        message: 'invalid request at tasks',
        details: { issues: [{ path: 'tasks', message: 'Too big', code: 'too_big' }], target: 'body' },
      },
    });
    expect(error.detailLines()).toEqual(['  HTTP 400 validation_failed', '  tasks: Too big']);
  });
});
