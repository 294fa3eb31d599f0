import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { DependencyUnavailableError } from '../../domain/errors.js';

/** Error names AWS services give when they are throttling or briefly unable to answer. */
const transientNames = new Set([
  'ThrottlingException',
  'Throttling',
  'ThrottledException',
  'RequestThrottled',
  'RequestThrottledException',
  'TooManyRequestsException',
  'ProvisionedThroughputExceededException',
  'RequestLimitExceeded',
  // KMS's name for going over its request rate.
  'LimitExceededException',
  'KMSInternalException',
  'InternalServerError',
  'InternalFailure',
  'ServiceUnavailable',
  'ServiceUnavailableException',
  'RequestTimeout',
  'RequestTimeoutException',
  'TimeoutError',
]);

/** Socket errors that say the service could not be reached, not that it refused the request. */
const networkCodes = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
]);

/**
 * Whether an error the SDK threw, after its own retries, means the service was unavailable for a
 * while (throttled, 5xx, unreachable) rather than that the request was wrong.
 */
export function isTransient(error: unknown): boolean {
  if (typeof error !== 'object' || error === null) return false;
  const e = error as { name?: unknown; code?: unknown; $retryable?: unknown; $metadata?: { httpStatusCode?: unknown } };
  const status = e.$metadata?.httpStatusCode;
  return (
    (typeof e.name === 'string' && transientNames.has(e.name)) ||
    (typeof e.code === 'string' && networkCodes.has(e.code)) ||
    e.$retryable !== undefined ||
    status === 429 ||
    (typeof status === 'number' && status >= 500)
  );
}

/**
 * Makes a client throw {@link DependencyUnavailableError} for what {@link isTransient} calls
 * transient, once the SDK's own retries are spent: the HTTP layer answers it 503 with Retry-After
 * (not a 500 that reads as a defect), and queue consumers leave the message to be redelivered.
 * Errors that are answers (a failed condition, an unknown queue, a refused ciphertext) pass as
 * they are, for the adapters to interpret.
 */
export function reportTransientErrorsAsUnavailable<C extends { middlewareStack: unknown }>(
  client: C,
  service: string,
): C {
  // Every SDK client's stack takes the same initialize middleware; DynamoDB's type stands for all.
  (client.middlewareStack as DynamoDBClient['middlewareStack']).add(
    (next) => async (args) => {
      try {
        return await next(args);
      } catch (error) {
        if (!isTransient(error)) throw error;
        throw new DependencyUnavailableError(service, error);
      }
    },
    { step: 'initialize', name: 'gpuaiTransientErrors', priority: 'high' },
  );
  return client;
}
