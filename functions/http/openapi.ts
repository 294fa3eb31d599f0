import type { Context } from 'hono';
import type { ErrorBody } from '../../protocol/index.js';

/**
 * What the app enforces for every route, written into the served OpenAPI document in one place so
 * that the document promises exactly what the server does (Schemathesis checks it, see
 * test/security/schemathesis.test.ts):
 *
 * - zod's `z.int()` accepts safe integers only, but the generator drops those bounds; an integer
 *   schema without a bound gets the safe-integer one, so that a client (or a fuzzer) is told that
 *   `2^64` is refused;
 * - the app-wide body limit answers 413 on any operation that takes a body, and the body
 *   validator 415 when that body is not declared `application/json`.
 */
export function withAppWideRules<T extends object>(document: T, bodyTooLarge: { description: string }): T {
  const doc = structuredClone(document) as T & { paths?: Record<string, Record<string, Operation>> };
  boundIntegers(doc);
  const error = (description: string) => ({
    description,
    content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } },
  });
  for (const item of Object.values(doc.paths ?? {})) {
    for (const operation of Object.values(item)) {
      if (operation?.requestBody === undefined || operation.responses === undefined) continue;
      operation.responses['413'] ??= error(bodyTooLarge.description);
      operation.responses['415'] ??= error('The body is not declared as application/json');
    }
  }
  return doc;
}

interface Operation {
  requestBody?: unknown;
  responses?: Record<string, unknown>;
}

function boundIntegers(node: unknown): void {
  if (Array.isArray(node)) {
    for (const child of node) boundIntegers(child);
    return;
  }
  if (node === null || typeof node !== 'object') return;
  const schema = node as Record<string, unknown>;
  const type = schema.type;
  if (type === 'integer' || (Array.isArray(type) && type.includes('integer'))) {
    if (schema.maximum === undefined && schema.exclusiveMaximum === undefined) schema.maximum = Number.MAX_SAFE_INTEGER;
    if (schema.minimum === undefined && schema.exclusiveMinimum === undefined) schema.minimum = Number.MIN_SAFE_INTEGER;
  }
  for (const child of Object.values(schema)) boundIntegers(child);
}

/**
 * The methods a path answers, from the app's own route table, for a 405 with `Allow` where a path
 * exists but not for the method asked (RFC 9110 15.5.6), instead of a 404 that says the path does not.
 */
export function allowedMethods(routes: readonly { method: string; path: string }[], path: string): string[] {
  const methods = new Set<string>();
  for (const route of routes) {
    if (route.method === 'ALL' || route.path.includes('*')) continue;
    const pattern = new RegExp(`^${route.path.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/:[^/]+/g, '[^/]+')}$`);
    if (pattern.test(path)) methods.add(route.method.toUpperCase());
  }
  return [...methods].sort();
}

/** The app's not-found handler: 405 with `Allow` for a known path, else 404; both in the one error shape. */
export function notFoundOrNotAllowed(routes: () => readonly { method: string; path: string }[]) {
  return (c: Context): Response => {
    const allowed = allowedMethods(routes(), c.req.path);
    if (allowed.length > 0) {
      c.header('Allow', allowed.join(', '));
      return c.json<ErrorBody>(
        {
          error: {
            code: 'method_not_allowed',
            message: `${c.req.method} is not allowed on ${c.req.path}; allowed: ${allowed.join(', ')}`,
            ...requestIdOf(c),
          },
        },
        405,
      );
    }
    return c.json<ErrorBody>(
      { error: { code: 'route_not_found', message: `no route ${c.req.method} ${c.req.path}`, ...requestIdOf(c) } },
      404,
    );
  };
}

/** The request id, as every other error body carries it (functions/http/errors.ts). */
function requestIdOf(c: Context): { requestId?: string } {
  const requestId = c.get('requestId') as string | undefined;
  return requestId ? { requestId } : {};
}
