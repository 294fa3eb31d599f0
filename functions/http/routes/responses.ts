import { ErrorBody } from '../../../protocol/index.js';

/**
 * The documented error responses, shared by every route. Every route can answer 429: rate limits
 * apply to all of them (functions/http/limits.ts), so it is always listed, with its header.
 */
export const errorResponses = (...statuses: (400 | 401 | 403 | 404 | 409 | 413 | 429)[]) =>
  Object.fromEntries(
    [...new Set([...statuses, 429 as const])].map((status) => [
      status,
      {
        description: errorDescriptions[status],
        content: { 'application/json': { schema: ErrorBody } },
        ...(status === 429 ? { headers: retryAfterHeader } : {}),
      },
    ]),
  );

const retryAfterHeader = {
  'Retry-After': {
    description: 'Seconds until the limit that refused the request allows it again.',
    schema: { type: 'integer' as const, minimum: 1 },
  },
};

const errorDescriptions = {
  400: 'Invalid request: unknown fields, wrong types, values out of range',
  401: 'Missing or invalid credentials: an API key (missing, invalid, expired, revoked) or a node signature',
  403: "The API key lacks the route's scope, or the resource belongs to another node",
  404: 'No such resource',
  409: 'Conflict with the current state',
  413: 'Body larger than 256 KiB',
  429: 'Over a rate limit (per source address, API key or node, or for registrations) or a quota; see Retry-After',
} as const;

export const json = <T>(schema: T, description: string) => ({
  description,
  content: { 'application/json': { schema } },
});
