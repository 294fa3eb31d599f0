/**
 * The domain's error base. `kind` says what went wrong in terms any transport can map (the HTTP
 * layer maps it to a status in one place); `code` is the stable, documented machine code;
 * `retryable` tells queue consumers whether a redelivery could succeed.
 */
export type ErrorKind =
  | 'invalid'
  | 'unauthenticated'
  | 'forbidden'
  | 'not_found'
  | 'conflict'
  | 'too_large'
  | 'rate_limited'
  | 'unavailable';

export class DomainError extends Error {
  override name = 'DomainError';
  constructor(
    readonly kind: ErrorKind,
    readonly code: string,
    message: string,
    readonly details?: unknown,
    options?: ErrorOptions & { retryable?: boolean },
  ) {
    super(message, options);
    this.retryable = options?.retryable ?? kind === 'unavailable';
  }
  readonly retryable: boolean;
}

export class NotFoundError extends DomainError {
  override name = 'NotFoundError';
  constructor(code: string, message: string) {
    super('not_found', code, message);
  }
}

export class ConflictError extends DomainError {
  override name = 'ConflictError';
  constructor(code: string, message: string, details?: unknown) {
    super('conflict', code, message, details);
  }
}

export class ForbiddenError extends DomainError {
  override name = 'ForbiddenError';
  constructor(code: string, message: string) {
    super('forbidden', code, message);
  }
}

export class UnauthenticatedError extends DomainError {
  override name = 'UnauthenticatedError';
  constructor(code: string, message: string, details?: unknown) {
    super('unauthenticated', code, message, details);
  }
}

export class InvalidRequestError extends DomainError {
  override name = 'InvalidRequestError';
  constructor(code: string, message: string, details?: unknown) {
    super('invalid', code, message, details);
  }
}

/** Optimistic concurrency gave up after its retries: safe to retry the whole operation later. */
export class ContentionError extends DomainError {
  override name = 'ContentionError';
  constructor(message: string, options?: ErrorOptions) {
    super('unavailable', 'contention', message, undefined, { ...options, retryable: true });
  }
}

/**
 * A service the control plane depends on (the store, the queue, the key service) was throttling,
 * failing or unreachable after its client's retries: nothing is known to have changed, and the
 * same request may succeed shortly.
 */
export class DependencyUnavailableError extends DomainError {
  override name = 'DependencyUnavailableError';
  constructor(service: string, cause: unknown) {
    const why = cause instanceof Error ? `${cause.name}: ${cause.message}` : String(cause);
    super('unavailable', 'dependency_unavailable', `${service} is unavailable: ${why}`, undefined, {
      cause,
      retryable: true,
    });
  }
}

/**
 * The caller went over a rate limit or a quota; nothing was written. `retryAfterSeconds` becomes
 * the response's `Retry-After` (the time until the window that refused the request ends).
 */
export class RateLimitedError extends DomainError {
  override name = 'RateLimitedError';
  constructor(
    code: string,
    message: string,
    readonly retryAfterSeconds: number,
    details?: unknown,
  ) {
    super('rate_limited', code, message, details, { retryable: true });
  }
}

/** A request, or one of its values, is larger than the control plane accepts. */
export class TooLargeError extends DomainError {
  override name = 'TooLargeError';
  constructor(code: string, message: string, details?: unknown) {
    super('too_large', code, message, details);
  }
}
