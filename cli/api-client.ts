/**
 * The control plane's application API (docs/api.md) over fetch. Responses are checked against the
 * protocol schemas before the CLI renders them; the body text is kept too, because `--json`
 * prints exactly what the server sent.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { z } from 'zod';
import { ApiKeyList, ApiKeyView, type CreateApiKeyInput, CreatedApiKey } from '../protocol/api-keys.js';
import { ErrorBody } from '../protocol/common.js';
import { CreatedJoinToken, type CreateJoinTokenRequest, JoinTokenList, JoinTokenView } from '../protocol/enrollment.js';
import { JobList, type JobSpecInput, type JobStatus, JobWithTasks, TaskList } from '../protocol/job.js';
import { NodeList, type NodeStatus, NodeView } from '../protocol/node.js';
import { ApiError, isTransient, UnreachableError } from './errors.js';

/** A successful response: the checked body and the text it was parsed from. */
export interface ApiResponse<T> {
  status: number;
  body: T;
  text: string;
}

/** Options of an ApiClient. */
export interface ApiClientOptions {
  fetch?: typeof fetch;
  /** Per request; a control plane that does not answer in time counts as unreachable. */
  timeoutMs?: number;
  /** Sent as `Authorization: Bearer <apiKey>` on every request. */
  apiKey?: string;
  /**
   * Lines shown under a `401 missing_api_key` error: where the CLI looked for a key and what to do
   * (cli/credentials.ts), since the server cannot know.
   */
  missingKeyHint?: readonly string[];
}

/** Cursor pagination, as in `PageQuery`. */
export interface PageParams {
  limit?: number;
  cursor?: string;
}

/** Pauses before each retry of a submit that failed transiently; short, as a person is waiting. */
const submitRetryDelaysMs = [250, 1000] as const;

interface RequestOptions {
  method?: 'GET' | 'POST' | 'DELETE';
  query?: Record<string, string | number | undefined>;
  body?: unknown;
  headers?: Record<string, string>;
}

/** Typed access to `/v1/jobs`, `/v1/nodes` and `/v1/keys`; every method throws ApiError or UnreachableError. */
export class ApiClient {
  private readonly fetch: typeof fetch;
  private readonly timeoutMs: number;
  private readonly apiKey: string | undefined;
  private readonly missingKeyHint: readonly string[];

  /** @param baseUrl the control plane root, e.g. `http://127.0.0.1:8787` (a path prefix is kept). */
  constructor(
    readonly baseUrl: string,
    options: ApiClientOptions = {},
  ) {
    this.fetch = options.fetch ?? globalThis.fetch;
    this.timeoutMs = options.timeoutMs ?? 30_000;
    this.apiKey = options.apiKey;
    this.missingKeyHint = options.missingKeyHint ?? [];
  }

  /**
   * POST /v1/jobs. Transient failures are retried with the same key: if the first request did
   * create the job before its answer was lost, the server returns that job instead of a duplicate.
   */
  async submitJob(spec: JobSpecInput, idempotencyKey: string): Promise<ApiResponse<JobWithTasks>> {
    for (let attempt = 0; ; attempt += 1) {
      try {
        return await this.request(JobWithTasks, '/v1/jobs', {
          method: 'POST',
          body: spec,
          headers: { 'Idempotency-Key': idempotencyKey },
        });
      } catch (error) {
        const delay = submitRetryDelaysMs[attempt];
        if (delay === undefined || !isTransient(error)) throw error;
        await sleep(delay);
      }
    }
  }

  /** GET /v1/jobs: newest first. */
  listJobs(params: PageParams & { status?: JobStatus; tenant?: string } = {}): Promise<ApiResponse<JobList>> {
    return this.request(JobList, '/v1/jobs', { query: { ...params } });
  }

  /** GET /v1/jobs/{jobId}. */
  getJob(jobId: string): Promise<ApiResponse<JobWithTasks>> {
    return this.request(JobWithTasks, `/v1/jobs/${encodeURIComponent(jobId)}`);
  }

  /** GET /v1/jobs/{jobId}/tasks. */
  listTasks(jobId: string): Promise<ApiResponse<TaskList>> {
    return this.request(TaskList, `/v1/jobs/${encodeURIComponent(jobId)}/tasks`);
  }

  /** POST /v1/jobs/{jobId}/cancel. */
  cancelJob(jobId: string): Promise<ApiResponse<JobWithTasks>> {
    return this.request(JobWithTasks, `/v1/jobs/${encodeURIComponent(jobId)}/cancel`, { method: 'POST' });
  }

  /** GET /v1/nodes (`status` filters within each page: a page may come back short). */
  listNodes(params: PageParams & { status?: z.infer<typeof NodeStatus> } = {}): Promise<ApiResponse<NodeList>> {
    return this.request(NodeList, '/v1/nodes', { query: { ...params } });
  }

  /** GET /v1/nodes/{nodeId}. */
  getNode(nodeId: string): Promise<ApiResponse<NodeView>> {
    return this.request(NodeView, `/v1/nodes/${encodeURIComponent(nodeId)}`);
  }

  /** POST /v1/keys (admin). The response holds the only copy of the secret. */
  createKey(request: CreateApiKeyInput): Promise<ApiResponse<CreatedApiKey>> {
    return this.request(CreatedApiKey, '/v1/keys', { method: 'POST', body: request });
  }

  /** GET /v1/keys (admin): every tenant's keys, or one tenant's. */
  listKeys(params: PageParams & { tenant?: string } = {}): Promise<ApiResponse<ApiKeyList>> {
    return this.request(ApiKeyList, '/v1/keys', { query: { ...params } });
  }

  /** DELETE /v1/keys/{keyId} (admin). */
  revokeKey(keyId: string): Promise<ApiResponse<ApiKeyView>> {
    return this.request(ApiKeyView, `/v1/keys/${encodeURIComponent(keyId)}`, { method: 'DELETE' });
  }

  /** POST /v1/join-tokens (admin). The response holds the only copy of the secret. */
  createJoinToken(request: CreateJoinTokenRequest): Promise<ApiResponse<CreatedJoinToken>> {
    return this.request(CreatedJoinToken, '/v1/join-tokens', { method: 'POST', body: request });
  }

  /** GET /v1/join-tokens (admin). */
  listJoinTokens(params: PageParams = {}): Promise<ApiResponse<JoinTokenList>> {
    return this.request(JoinTokenList, '/v1/join-tokens', { query: { ...params } });
  }

  /** DELETE /v1/join-tokens/{tokenId} (admin). */
  revokeJoinToken(tokenId: string): Promise<ApiResponse<JoinTokenView>> {
    return this.request(JoinTokenView, `/v1/join-tokens/${encodeURIComponent(tokenId)}`, { method: 'DELETE' });
  }

  private async request<S extends z.ZodType>(
    schema: S,
    path: string,
    options: RequestOptions = {},
  ): Promise<ApiResponse<z.output<S>>> {
    const method = options.method ?? 'GET';
    const url = new URL(`${this.baseUrl.replace(/\/+$/, '')}${path}`);
    for (const [key, value] of Object.entries(options.query ?? {})) {
      if (value !== undefined) url.searchParams.set(key, String(value));
    }
    const init: RequestInit = {
      method,
      headers: {
        accept: 'application/json',
        ...(this.apiKey === undefined ? {} : { authorization: `Bearer ${this.apiKey}` }),
        ...options.headers,
      },
      signal: AbortSignal.timeout(this.timeoutMs),
    };
    if (options.body !== undefined) {
      init.body = JSON.stringify(options.body);
      init.headers = { ...init.headers, 'content-type': 'application/json' };
    }

    let response: Response;
    let text: string;
    try {
      response = await this.fetch(url, init);
      text = await response.text();
    } catch (error) {
      throw new UnreachableError(this.baseUrl, networkReason(error, this.timeoutMs), { cause: error });
    }

    const json = parseJson(text);
    const where = `${method} ${url.pathname}`;
    if (!response.ok) {
      const error = ErrorBody.safeParse(json);
      // A proxy or load balancer in front of the control plane may answer in its own format.
      const missingKey = response.status === 401 && error.success && error.data.error.code === 'missing_api_key';
      throw new ApiError(
        response.status,
        error.success
          ? error.data
          : {
              error: { code: `http_${response.status}`, message: `${where}: HTTP ${response.status} ${snippet(text)}` },
            },
        missingKey ? this.missingKeyHint : [],
      );
    }
    if (json === undefined) {
      throw new ApiError(response.status, {
        error: {
          code: 'invalid_response',
          message: `${where}: the control plane sent a response this CLI does not understand (not JSON: ${snippet(text)})`,
        },
      });
    }
    const body = schema.safeParse(json);
    if (!body.success) {
      const first = body.error.issues[0];
      const at = first === undefined ? '' : ` (${first.path.map(String).join('.') || 'body'}: ${first.message})`;
      throw new ApiError(response.status, {
        error: {
          code: 'invalid_response',
          message: `${where}: the control plane sent a response this CLI does not understand${at}`,
          details: body.error.issues,
        },
      });
    }
    return { status: response.status, body: body.data, text };
  }
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

const snippet = (text: string): string => {
  const flat = text.replace(/\s+/g, ' ').trim();
  return flat.length > 120 ? `${flat.slice(0, 119)}…` : flat;
};

/** The most useful words about a failed fetch: undici hides the system error code in `cause`. */
function networkReason(error: unknown, timeoutMs: number): string {
  if (error instanceof Error && (error.name === 'TimeoutError' || error.name === 'AbortError')) {
    return `no answer within ${timeoutMs / 1000}s`;
  }
  const cause = error instanceof Error ? error.cause : undefined;
  if (cause instanceof Error) {
    const code = 'code' in cause && typeof cause.code === 'string' ? cause.code : undefined;
    return code ?? cause.message;
  }
  return error instanceof Error ? error.message : String(error);
}
