import { z } from 'zod';
import {
  type Assignment,
  AttestationChallenge,
  AttestationRequest,
  AttestationResult,
  ClaimRequest,
  FailureReport,
  HeartbeatRequest,
  HeartbeatResponse,
  LeaseResponse,
  NodeCredentials,
  type NodeKeyPair,
  ProgressReport,
  RegisterNodeRequest,
  RegisterNodeResponse,
  ResultReport,
  signRequest,
  TaskView,
  WorkResponse,
} from '../protocol/index.js';
import { type BackoffPolicy, backoffDelayMs, defaultBackoff, sleep } from './backoff.js';
import {
  AgentError,
  type ControlPlaneError,
  type EnrollmentRefusedError,
  errorFromResponse,
  explainRegistrationRefusal,
  InvalidRequestError,
  NetworkError,
  RateLimitedError,
  RequestAbortedError,
  UnexpectedResponseError,
} from './errors.js';
import { RoundTrips } from './round-trips.js';

/** How often a call is sent again after a retryable failure (network error, 5xx, 429). */
export type RetryPolicy = 'never' | 'forever' | { attempts: number };

export interface CallOptions {
  /** Aborts the request in flight and any backoff wait; the call then rejects with RequestAbortedError. */
  signal?: AbortSignal;
  retry?: RetryPolicy;
}

export interface ControlPlaneClientOptions {
  /** Base URL of the control plane, e.g. `http://127.0.0.1:8080` (a path prefix is kept). */
  api: string;
  nodeId: string;
  keyPair: NodeKeyPair;
  backoff?: BackoffPolicy;
  /** Per-request limit for everything but the long poll, whose limit is its wait plus a margin. */
  requestTimeoutMs?: number;
  /** Called once when requests start failing with retryable errors, with the first such error. */
  onUnavailable?: (error: AgentError) => void;
  /** Called once when a request succeeds again after `onUnavailable`, with how long it was down. */
  onAvailable?: (downForMs: number) => void;
}

interface RequestSpec<Response> {
  method: 'GET' | 'POST';
  path: string;
  body?: { schema: z.ZodType; value: unknown };
  response: z.ZodType<Response>;
  timeoutMs: number;
  /** A long poll: its answer waits for work, so its duration is no round trip ({@link RoundTrips}). */
  waitsForWork?: true;
}

const longPollMarginMs = 15_000;

/** The body of requests that carry no fields (`{}`). */
const EmptyBody = z.strictObject({});

/**
 * The node side of the control plane API (docs/api.md). Every request is signed with the node
 * key over the exact path, query and body string sent; every response is parsed with the protocol
 * schema; errors come back as the typed errors of errors.ts.
 */
export class ControlPlaneClient {
  readonly nodeId: string;
  private readonly base: URL;
  private readonly backoff: BackoffPolicy;
  private readonly requestTimeoutMs: number;
  private unavailableSince: number | undefined;
  /** No request is sent before this time (performance.now(), ms): the control plane answered 429. */
  private rateLimitedUntil = 0;
  /** The signed date of the last request signed: the next is later (see {@link ControlPlaneClient.nextDate}). */
  private lastSignedDate = 0;
  /** Round trips of the requests answered so far, for the heartbeats to report now and then. */
  readonly roundTrips = new RoundTrips();

  constructor(private readonly options: ControlPlaneClientOptions) {
    this.nodeId = options.nodeId;
    this.base = new URL(options.api);
    this.backoff = options.backoff ?? defaultBackoff;
    this.requestTimeoutMs = options.requestTimeoutMs ?? 30_000;
  }

  /**
   * `POST /v1/nodes`: registers (or re-registers, idempotently) this node's key and inventory.
   * A refused enrollment rejects with an {@link EnrollmentRefusedError} that says what to do.
   */
  register(body: RegisterNodeRequest, options: CallOptions = {}): Promise<RegisterNodeResponse> {
    return this.call(
      {
        method: 'POST',
        path: '/v1/nodes',
        body: { schema: RegisterNodeRequest, value: body },
        response: RegisterNodeResponse,
        timeoutMs: this.requestTimeoutMs,
      },
      options,
    ).catch(explainRegistrationRefusal);
  }

  /** `POST /v1/nodes/{id}/heartbeat` with the tasks running here; the answer lists tasks to stop. */
  heartbeat(body: HeartbeatRequest, options: CallOptions = {}): Promise<HeartbeatResponse> {
    return this.call(
      {
        method: 'POST',
        path: `${this.nodePath}/heartbeat`,
        body: { schema: HeartbeatRequest, value: body },
        response: HeartbeatResponse,
        timeoutMs: this.requestTimeoutMs,
      },
      options,
    );
  }

  /** `GET /v1/nodes/{id}/work?wait=N`: the next assignment, or undefined when none came within the wait. */
  async pollWork(waitSeconds: number, options: CallOptions = {}): Promise<Assignment | undefined> {
    const work = await this.call(
      {
        method: 'GET',
        path: `${this.nodePath}/work?wait=${waitSeconds}`,
        response: WorkResponse.optional(),
        timeoutMs: waitSeconds * 1000 + longPollMarginMs,
        waitsForWork: true,
      },
      options,
    );
    return work?.assignment;
  }

  /**
   * `POST /v1/nodes/{id}/claims` (sqs dispatch): binds the task a work hint named to this node and
   * returns its assignment. Refusals come back as ClaimRefusedError (409 `does_not_fit`,
   * `task_not_available`) or a RequestRejectedError with status 404 (no such task).
   */
  async claim(taskId: string, queueUrl: string, receiptHandle: string, options: CallOptions = {}): Promise<Assignment> {
    const work = await this.call(
      {
        method: 'POST',
        path: `${this.nodePath}/claims`,
        body: { schema: ClaimRequest, value: { taskId, queueUrl, receiptHandle } },
        response: WorkResponse,
        timeoutMs: this.requestTimeoutMs,
      },
      options,
    );
    return work.assignment;
  }

  /** `POST /v1/nodes/{id}/credentials` (sqs dispatch): temporary AWS credentials to receive from this node's pool queues. */
  credentials(options: CallOptions = {}): Promise<NodeCredentials> {
    return this.call(
      {
        method: 'POST',
        path: `${this.nodePath}/credentials`,
        body: { schema: EmptyBody, value: {} },
        response: NodeCredentials,
        timeoutMs: this.requestTimeoutMs,
      },
      options,
    );
  }

  /** `POST /v1/nodes/{id}/attestation/challenge`: a fresh single-use nonce to attest with. */
  attestationChallenge(options: CallOptions = {}): Promise<AttestationChallenge> {
    return this.call(
      {
        method: 'POST',
        path: `${this.nodePath}/attestation/challenge`,
        body: { schema: EmptyBody, value: {} },
        response: AttestationChallenge,
        timeoutMs: this.requestTimeoutMs,
      },
      options,
    );
  }

  /** `POST /v1/nodes/{id}/attestation`: answers a challenge with evidence; the level it proved. */
  attest(body: AttestationRequest, options: CallOptions = {}): Promise<AttestationResult> {
    return this.call(
      {
        method: 'POST',
        path: `${this.nodePath}/attestation`,
        body: { schema: AttestationRequest, value: body },
        response: AttestationResult,
        timeoutMs: this.requestTimeoutMs,
      },
      options,
    );
  }

  /** `POST .../tasks/{taskId}/progress`: the first one moves the task to running; each one extends the lease. */
  reportProgress(taskId: string, body: ProgressReport, options: CallOptions = {}): Promise<LeaseResponse> {
    return this.call(
      {
        method: 'POST',
        path: this.taskPath(taskId, 'progress'),
        body: { schema: ProgressReport, value: body },
        response: LeaseResponse,
        timeoutMs: this.requestTimeoutMs,
      },
      options,
    );
  }

  /** `POST .../tasks/{taskId}/result`: the process ran to an exit code (whatever it is, the server decides). */
  reportResult(taskId: string, body: ResultReport, options: CallOptions = {}): Promise<TaskView> {
    return this.call(
      {
        method: 'POST',
        path: this.taskPath(taskId, 'result'),
        body: { schema: ResultReport, value: body },
        response: TaskView,
        timeoutMs: this.requestTimeoutMs,
      },
      options,
    );
  }

  /** `POST .../tasks/{taskId}/fail`: the task could not run to an exit code (error, timeout, released). */
  reportFailure(taskId: string, body: FailureReport, options: CallOptions = {}): Promise<TaskView> {
    return this.call(
      {
        method: 'POST',
        path: this.taskPath(taskId, 'fail'),
        body: { schema: FailureReport, value: body },
        response: TaskView,
        timeoutMs: this.requestTimeoutMs,
      },
      options,
    );
  }

  private get nodePath(): string {
    return `/v1/nodes/${encodeURIComponent(this.nodeId)}`;
  }

  private taskPath(taskId: string, report: 'progress' | 'result' | 'fail'): string {
    return `${this.nodePath}/tasks/${encodeURIComponent(taskId)}/${report}`;
  }

  private async call<Response>(spec: RequestSpec<Response>, options: CallOptions): Promise<Response> {
    const body = spec.body === undefined ? '' : serialise(spec.body.schema, spec.body.value);
    const retry = options.retry ?? 'never';
    let resigned = false;
    for (let failures = 0; ; failures++) {
      try {
        await this.waitOutRateLimit(options.signal);
        const response = await this.send(spec, body, options.signal);
        this.markAvailable();
        return response;
      } catch (error) {
        // A dated stream refused as replayed, the server's watermark now adopted: once, signed above it.
        if (error instanceof WatermarkAdopted && !resigned) {
          resigned = true;
          continue;
        }
        const agentError = toAgentError(error instanceof WatermarkAdopted ? error.refused : error, options.signal);
        if (!agentError.retryable) throw agentError;
        if (agentError instanceof RateLimitedError) this.holdBack(agentError, failures);
        this.markUnavailable(agentError);
        if (!mayRetry(retry, failures)) throw agentError;
        await sleep(this.retryDelayMs(agentError, failures), options.signal);
        if (options.signal?.aborted) throw new RequestAbortedError('aborted while waiting to retry');
      }
    }
  }

  private async send<Response>(spec: RequestSpec<Response>, body: string, signal?: AbortSignal): Promise<Response> {
    const url = new URL(`${this.base.pathname.replace(/\/+$/, '')}${spec.path}`, this.base);
    // Signed per attempt: each retry needs a fresh nonce and date, and the signature must cover
    // the path exactly as URL normalised it, since that is what the server sees.
    const headers: Record<string, string> = signRequest(
      this.options.keyPair,
      this.nodeId,
      { method: spec.method, pathWithQuery: `${url.pathname}${url.search}`, body },
      this.nextDate(),
    );
    if (spec.method === 'POST') headers['content-type'] = 'application/json';
    const timeout = requestDeadline(spec.timeoutMs);
    try {
      const sentAt = performance.now();
      const response = await fetch(url, {
        method: spec.method,
        headers,
        signal: signal === undefined ? timeout.signal : AbortSignal.any([signal, timeout.signal]),
        ...(spec.method === 'POST' ? { body } : {}),
      });
      // Any answer is a round trip, a refusal included: to its status line, before its body is read.
      if (spec.waitsForWork !== true) this.roundTrips.observe(performance.now() - sentAt);
      const text = await response.text();
      if (!response.ok) {
        const error = errorFromResponse(response.status, text, response.headers);
        throw this.adoptWatermark(error, text) ? new WatermarkAdopted(error) : error;
      }
      return parseResponse(spec, response.status, text);
    } finally {
      timeout.clear();
    }
  }

  /**
   * The date to sign with: now, or one millisecond after the last request's when the clock has not
   * moved on (or went back). The control plane takes a node's heartbeats, and a task's progress
   * reports, only with dates later than the last of their stream (protocol/signing.ts); each stream
   * is sent one request at a time, so dates that increase across all requests keep both in order.
   */
  /**
   * A heartbeat or progress report refused as `replayed_request` carries the date the server last
   * took (`details.lastDate`): this request was not taken, and one signed above that date will be.
   * Two cases, both sent again once ({@link ControlPlaneClient.call}):
   * - After a restart this process has lost its own last date, and the one before may have signed
   *   ahead of the clock (up to the accepted skew): adopting the watermark lets the next request
   *   sign above it at once, where waiting for the clock to pass it could outlast the node's
   *   liveness and leases.
   * - Two reports of one stream crossed on the way (signed in one order, taken in the other), and
   *   this process has signed later dates since: the watermark is below its last date already, so
   *   the next date is above it.
   * A refusal without the watermark (a nonce seen before: a copy of this request may have been
   * taken) is not sent again. Returns whether the request may be signed again above the watermark.
   */
  private adoptWatermark(error: ControlPlaneError, text: string): boolean {
    if (error.status !== 401 || error.code !== 'replayed_request') return false;
    let lastDate: unknown;
    try {
      lastDate = (JSON.parse(text) as { error?: { details?: { lastDate?: unknown } } }).error?.details?.lastDate;
    } catch {
      return false;
    }
    if (typeof lastDate !== 'number' || !Number.isSafeInteger(lastDate)) return false;
    this.lastSignedDate = Math.max(this.lastSignedDate, lastDate);
    return true;
  }

  private nextDate(): number {
    this.lastSignedDate = Math.max(Date.now(), this.lastSignedDate + 1);
    return this.lastSignedDate;
  }

  /**
   * The control plane limits requests per node, not per call: after a 429 every call of this node
   * (progress of every slot, heartbeats, polls) waits until the Retry-After has passed, instead of
   * each sending on its own schedule into a window that is already full (which also delays the
   * heartbeats that keep leases). Monotonic clock: a host clock that jumps cannot stretch the wait.
   */
  private holdBack(error: RateLimitedError, failures: number): void {
    const waitMs = error.retryAfterMs ?? backoffDelayMs(this.backoff, failures);
    this.rateLimitedUntil = Math.max(this.rateLimitedUntil, performance.now() + waitMs);
  }

  private async waitOutRateLimit(signal: AbortSignal | undefined): Promise<void> {
    const waitMs = this.rateLimitedUntil - performance.now();
    if (waitMs <= 0) return;
    await sleep(waitMs, signal);
    if (signal?.aborted) throw new RequestAbortedError('aborted while waiting out a rate limit');
  }

  private retryDelayMs(error: AgentError, failures: number): number {
    const delay = backoffDelayMs(this.backoff, failures);
    return error instanceof RateLimitedError && error.retryAfterMs !== undefined
      ? Math.max(delay, error.retryAfterMs)
      : delay;
  }

  private markUnavailable(error: AgentError): void {
    if (this.unavailableSince !== undefined) return;
    this.unavailableSince = Date.now();
    this.options.onUnavailable?.(error);
  }

  private markAvailable(): void {
    if (this.unavailableSince === undefined) return;
    const downForMs = Date.now() - this.unavailableSince;
    this.unavailableSince = undefined;
    this.options.onAvailable?.(downForMs);
  }
}

/**
 * Aborts with a TimeoutError after `ms`, on a timer that keeps the process alive, unlike
 * `AbortSignal.timeout`'s. Node 20's fetch can leave a request unsettled for good (a POST whose
 * connection is reset before the answer: the chaos run's network cuts), and then this timer is
 * what ends it; unreferenced, an agent waiting on nothing else (its first registration) ran out of
 * event loop work and exited with status 13 mid-run.
 */
function requestDeadline(ms: number): { signal: AbortSignal; clear(): void } {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(new DOMException('request timed out', 'TimeoutError')), ms);
  return { signal: controller.signal, clear: () => clearTimeout(timer) };
}

function serialise(schema: z.ZodType, value: unknown): string {
  const parsed = schema.safeParse(value);
  if (!parsed.success)
    throw new InvalidRequestError(`request body refused by its schema: ${describeIssues(parsed.error)}`);
  return JSON.stringify(parsed.data);
}

function parseResponse<Response>(spec: RequestSpec<Response>, status: number, text: string): Response {
  let json: unknown;
  try {
    // 204 No Content (an empty long poll) has no body; it parses as undefined.
    json = status === 204 || text === '' ? undefined : JSON.parse(text);
  } catch {
    throw new UnexpectedResponseError(`${spec.method} ${spec.path}: ${status} response is not JSON`);
  }
  const parsed = spec.response.safeParse(json);
  if (!parsed.success) {
    throw new UnexpectedResponseError(
      `${spec.method} ${spec.path}: ${status} response: ${describeIssues(parsed.error)}`,
    );
  }
  return parsed.data;
}

function describeIssues(error: z.ZodError): string {
  return error.issues
    .slice(0, 3)
    .map((issue) => `${issue.path.join('.') || '(root)'}: ${issue.message}`)
    .join('; ');
}

function mayRetry(policy: RetryPolicy, failures: number): boolean {
  if (policy === 'forever') return true;
  if (policy === 'never') return false;
  return failures + 1 < policy.attempts;
}

/** Classifies what fetch threw: our own typed errors pass through, the rest is a network failure or an abort. */
function toAgentError(error: unknown, signal: AbortSignal | undefined): AgentError {
  if (signal?.aborted) return new RequestAbortedError('request aborted', { cause: error });
  if (error instanceof AgentError) return error;
  if (error instanceof Error && error.name === 'TimeoutError') {
    return new NetworkError('request timed out', { cause: error });
  }
  return new NetworkError(describeNetworkFailure(error), { cause: error });
}

function describeNetworkFailure(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  const cause = error.cause;
  if (cause instanceof Error) {
    const code = 'code' in cause && typeof cause.code === 'string' ? cause.code : cause.message;
    return `${error.message} (${code})`;
  }
  return error.message;
}

/** A `replayed_request` refusal after which the client moved its signing date above the server's watermark. */
class WatermarkAdopted extends Error {
  constructor(readonly refused: ControlPlaneError) {
    super(refused.message);
  }
}
