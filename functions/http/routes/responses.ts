import { ErrorBody } from '../../../protocol/index.js';

/** The documented error responses, shared by every route. */
export const errorResponses = (...statuses: (400 | 401 | 403 | 404 | 409 | 413)[]) =>
  Object.fromEntries(
    statuses.map((status) => [
      status,
      { description: errorDescriptions[status], content: { 'application/json': { schema: ErrorBody } } },
    ]),
  );

const errorDescriptions = {
  400: 'Invalid request: unknown fields, wrong types, values out of range',
  401: 'Missing, invalid or replayed node signature',
  403: 'The resource belongs to another node',
  404: 'No such resource',
  409: 'Conflict with the current state',
  413: 'Body larger than 256 KiB',
} as const;

export const json = <T>(schema: T, description: string) => ({
  description,
  content: { 'application/json': { schema } },
});
