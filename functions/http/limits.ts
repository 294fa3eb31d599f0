import { createHash } from 'node:crypto';
import type { Context, MiddlewareHandler } from 'hono';
import type { AppDeps, AppEnv, SourceAddress } from './context.js';

/** The source address of an API Gateway HTTP API (payload 2.0) request, from the Lambda event. */
export const apiGatewaySourceAddress: SourceAddress = (c) => {
  const env = c.env as { requestContext?: { http?: { sourceIp?: unknown } } } | undefined;
  const ip = env?.requestContext?.http?.sourceIp;
  return typeof ip === 'string' && ip !== '' ? ip : undefined;
};

/**
 * Counts every request in the rate-limit scopes that apply before any route runs, so that a flood
 * is refused with 429 before bodies are parsed, signatures verified or keys looked up:
 *
 * - per source address, every route;
 * - `POST /v1/nodes` (registration) also per source address under a much tighter limit, and
 *   against a global limit for all sources together;
 * - requests carrying an API key (`Authorization: Bearer`), per key. The key is counted by the
 *   authenticated key id where authentication already ran (`principal.keyId`), else by a hash of
 *   the bearer token: only its holder can spend that budget, and a made-up token only spends its
 *   own (and its address's).
 *
 * Agent routes are counted per node after their signature verified (routes/nodes.ts), since an
 * unverified node id would let anyone spend another node's budget.
 */
export function rateLimits({ cp, sourceAddress }: AppDeps): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const address = sourceAddress?.(c);
    if (address !== undefined) await cp.limits.consume('address', address);
    if (c.req.method === 'POST' && c.req.path === '/v1/nodes') {
      if (address !== undefined) await cp.limits.consume('register', address);
      await cp.limits.consume('registerGlobal', 'all');
    }
    const caller = apiKeyId(c);
    if (caller !== undefined) await cp.limits.consume('key', caller);
    await next();
  };
}

function apiKeyId(c: Context<AppEnv>): string | undefined {
  const principal = (c.var as { principal?: { keyId?: string } }).principal;
  if (principal?.keyId !== undefined) return principal.keyId;
  const authorization = c.req.header('authorization');
  const match = authorization === undefined ? null : /^Bearer\s+(\S+)$/i.exec(authorization);
  if (match?.[1] === undefined) return undefined;
  return `token-${createHash('sha256').update(match[1]).digest('base64url').slice(0, 32)}`;
}
