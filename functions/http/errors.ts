import type { Context } from 'hono';
import { HTTPException } from 'hono/http-exception';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import type { ErrorBody } from '../../protocol/index.js';
import { DomainError, type ErrorKind, InvalidRequestError, RateLimitedError } from '../domain/errors.js';

const statusOfKind: Record<ErrorKind, ContentfulStatusCode> = {
  invalid: 400,
  unauthenticated: 401,
  forbidden: 403,
  not_found: 404,
  conflict: 409,
  too_large: 413,
  rate_limited: 429,
  unavailable: 503,
};

const codeOfStatus: Partial<Record<number, string>> = {
  400: 'malformed_request',
  401: 'unauthenticated',
  404: 'not_found',
  405: 'method_not_allowed',
  413: 'body_too_large',
  415: 'unsupported_media_type',
};

export type Logger = (entry: Record<string, unknown>) => void;

/**
 * The one place where errors become HTTP responses. Messages are shown for 4xx only; anything
 * else is a generic 500 that carries the request id, and its details go to the log instead.
 */
export function errorResponder(log: Logger) {
  return (error: Error, c: Context): Response => {
    const requestId = c.get('requestId') as string | undefined;
    const body = (status: ContentfulStatusCode, code: string, message: string, details?: unknown) =>
      c.json<ErrorBody>(
        {
          error: { code, message, ...(details === undefined ? {} : { details }), ...(requestId ? { requestId } : {}) },
        },
        status,
      );
    if (error instanceof DomainError) {
      const status = statusOfKind[error.kind];
      if (error instanceof RateLimitedError)
        c.header('Retry-After', String(Math.max(1, Math.ceil(error.retryAfterSeconds))));
      if (status < 500) return body(status, error.code, error.message, error.details);
      log({ level: 'warn', msg: 'unavailable', code: error.code, error: error.message, requestId });
      if (error.retryable) c.header('Retry-After', '1');
      return body(status, error.code, 'the control plane is busy; retry the request');
    }
    if (error instanceof HTTPException && error.status < 500) {
      const status = error.status as ContentfulStatusCode;
      return body(status, codeOfStatus[status] ?? 'bad_request', error.message || 'bad request');
    }
    log({ level: 'error', msg: 'unhandled error', error: error.stack ?? String(error), requestId });
    return body(500, 'internal', `internal error (request ${requestId ?? 'unknown'})`);
  };
}

/** zod-openapi's validation hook: every invalid request becomes one 400 with the issues listed. */
export function validationHook(
  result:
    | { success: true }
    | {
        success: false;
        target?: string;
        error: { issues: readonly { path: readonly PropertyKey[]; message: string; code: string }[] };
      },
  _c: Context,
): void {
  if (result.success) return;
  const issues = result.error.issues.map((i) => ({
    path: i.path.map(String).join('.'),
    message: i.message,
    code: i.code,
  }));
  const where = issues[0]?.path ? ` at ${issues[0].path}` : '';
  throw new InvalidRequestError('validation_failed', `invalid request${where}: ${issues[0]?.message ?? 'invalid'}`, {
    issues,
    target: result.target === 'json' ? 'body' : (result.target ?? 'body'),
  });
}
