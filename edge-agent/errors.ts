import { ErrorBody } from '../protocol/index.js';

/**
 * Base of every error the agent raises on purpose. `retryable` says whether sending the same
 * request again later can succeed, so retry loops decide on the error type, never on messages.
 */
export abstract class AgentError extends Error {
  abstract readonly retryable: boolean;
  override name = 'AgentError';
}

/** An option or environment variable is missing or invalid; `option` names it as the user typed it. */
export class ConfigError extends AgentError {
  override name = 'ConfigError';
  readonly retryable = false;
  constructor(
    readonly option: string,
    message: string,
  ) {
    super(`${option}: ${message}`);
  }
}

/** The control plane could not be reached, or the connection broke or timed out before a response. */
export class NetworkError extends AgentError {
  override name = 'NetworkError';
  readonly retryable = true;
}

/** The caller aborted the request (shutdown); nothing should retry it. */
export class RequestAbortedError extends AgentError {
  override name = 'RequestAbortedError';
  readonly retryable = false;
}

/** The agent was about to send a body its own protocol schema rejects (e.g. too many outputs). */
export class InvalidRequestError extends AgentError {
  override name = 'InvalidRequestError';
  readonly retryable = false;
}

/** A success response whose body does not match the protocol schema. */
export class UnexpectedResponseError extends AgentError {
  override name = 'UnexpectedResponseError';
  readonly retryable = false;
}

/** The control plane answered with an error status and the `{ error: { code, message } }` body. */
export abstract class ControlPlaneError extends AgentError {
  override name = 'ControlPlaneError';
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly requestId?: string,
  ) {
    super(`${status} ${code}: ${message}`);
  }
}

/** 5xx: the control plane is failing or restarting. */
export class ServerError extends ControlPlaneError {
  override name = 'ServerError';
  readonly retryable = true;
}

/** 429: slow down; `retryAfterMs` comes from the Retry-After header when the server sent one. */
export class RateLimitedError extends ControlPlaneError {
  override name = 'RateLimitedError';
  readonly retryable = true;
  retryAfterMs?: number;
}

/** Any other 4xx: the request itself is wrong, sending it again gives the same answer. */
export class RequestRejectedError extends ControlPlaneError {
  override name = 'RequestRejectedError';
  readonly retryable = false;
}

/**
 * 409 `lease_lost`: the task is no longer leased to this node at this attempt (expired and
 * re-assigned, cancelled, past deadline). The agent stops the task and drops its report.
 */
export class LeaseLostError extends RequestRejectedError {
  override name = 'LeaseLostError';
}

/**
 * 409 `does_not_fit` or `task_not_available` on a claim (sqs dispatch): the control plane refused to
 * bind the hinted task to this node. `code` says why: the task does not fit this node, or it is no
 * longer queued (claimed by another node, cancelled: the hint was stale).
 */
export class ClaimRefusedError extends RequestRejectedError {
  override name = 'ClaimRefusedError';
}

/** The 409 codes a claim is refused with. */
export const claimRefusalCodes: ReadonlySet<string> = new Set(['does_not_fit', 'task_not_available']);

/**
 * 401 (but for the date refusals below), or 404 `node_not_found`: the control plane does not know
 * this node (its store was reset, or the node was removed). The agent registers again and repeats
 * the request.
 */
export class NodeNotRegisteredError extends RequestRejectedError {
  override name = 'NodeNotRegisteredError';
}

/**
 * 401 `replayed_request` or `stale_request`: the node is known and its signature verified, but the
 * request's signed date (or nonce) was refused: a dated stream's report signed before one the
 * server already took (two reports of one stream that crossed on the way), a nonce seen before,
 * or a date outside the accepted clock skew. Registering again cannot help (it would sign with the
 * same clock), so this is no {@link NodeNotRegisteredError}; the client re-signs a date refusal once
 * above the server's watermark (client.ts), and what is refused after that is dropped by its sender.
 * Not a {@link RequestRejectedError}: the task or node it concerns is still this node's.
 */
export class RequestDateRefusedError extends ControlPlaneError {
  override name = 'RequestDateRefusedError';
  readonly retryable = false;
}

/** The 401 codes that refuse a request's date or nonce, not the node (request-auth.ts, task-reports.ts, presence.ts). */
export const dateRefusalCodes: ReadonlySet<string> = new Set(['replayed_request', 'stale_request']);

/**
 * The control plane refused to enroll this node: no join token, or one that is wrong, revoked,
 * expired or used up, or that does not cover the node's pools or region. Retrying cannot help;
 * the message says what the operator should do.
 */
export class EnrollmentRefusedError extends RequestRejectedError {
  override name = 'EnrollmentRefusedError';
}

/** What to do about each enrollment refusal, by error code. */
const enrollmentAdvice: Readonly<Record<string, string>> = {
  join_token_required:
    'this control plane admits new nodes only with a join token: pass --join-token or set GPUAI_JOIN_TOKEN ' +
    '(an admin makes one with `gpuai tokens create --operator <name>`)',
  invalid_join_token: 'the join token is not valid: check that it was copied whole, or ask for a new one',
  join_token_revoked: 'the join token was revoked: ask for a new one (`gpuai tokens create`)',
  join_token_expired: 'the join token has expired: ask for a new one (`gpuai tokens create`)',
  join_token_used_up: 'the join token has been used as many times as it allows: ask for a new one',
  pool_not_in_token_scope: "the join token does not cover this node's pools",
  region_not_allowed: 'the control plane does not serve this region: pick another with --region',
};

/**
 * Turns a refused registration into an {@link EnrollmentRefusedError} with advice; rethrows
 * anything else unchanged. For `.catch` on the registration call.
 */
export function explainRegistrationRefusal(error: unknown): never {
  if (error instanceof RequestRejectedError) {
    const advice = enrollmentAdvice[error.code];
    if (advice !== undefined) {
      const refused = new EnrollmentRefusedError(error.status, error.code, error.message, error.requestId);
      refused.message = `registration refused: ${advice} (${error.status} ${error.code}: ${error.message})`;
      throw refused;
    }
  }
  throw error;
}

/** Builds the typed error for an error response from its status, body text and headers. */
export function errorFromResponse(status: number, bodyText: string, headers: Headers): ControlPlaneError {
  const { code, message, requestId } = readErrorBody(status, bodyText);
  if (status >= 500) return new ServerError(status, code, message, requestId);
  if (status === 429) {
    const error = new RateLimitedError(status, code, message, requestId);
    const retryAfterMs = parseRetryAfter(headers.get('retry-after'));
    if (retryAfterMs !== undefined) error.retryAfterMs = retryAfterMs;
    return error;
  }
  if (status === 409 && code === 'lease_lost') return new LeaseLostError(status, code, message, requestId);
  if (status === 409 && claimRefusalCodes.has(code)) return new ClaimRefusedError(status, code, message, requestId);
  if (status === 401 && dateRefusalCodes.has(code))
    return new RequestDateRefusedError(status, code, message, requestId);
  if (status === 401 || (status === 404 && code === 'node_not_found')) {
    return new NodeNotRegisteredError(status, code, message, requestId);
  }
  return new RequestRejectedError(status, code, message, requestId);
}

function readErrorBody(status: number, bodyText: string): { code: string; message: string; requestId?: string } {
  try {
    const parsed = ErrorBody.safeParse(JSON.parse(bodyText));
    if (parsed.success) {
      const { code, message, requestId } = parsed.data.error;
      return requestId === undefined ? { code, message } : { code, message, requestId };
    }
  } catch {
    // Not JSON (a proxy's HTML error page, say): fall through to a generic description.
  }
  return { code: `http_${status}`, message: bodyText.trim().slice(0, 200) || 'no error body' };
}

function parseRetryAfter(value: string | null): number | undefined {
  if (value === null) return undefined;
  const seconds = Number(value);
  return Number.isFinite(seconds) && seconds >= 0 ? seconds * 1000 : undefined;
}
