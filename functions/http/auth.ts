/**
 * Authentication of application routes: an API key (`Authorization: Bearer gpk_...`) or, in the
 * cloud, the claims of an OIDC token that API Gateway's JWT authorizer has already validated.
 * Node (agent) routes are not covered here: they carry Ed25519 request signatures
 * (functions/domain/security/request-auth.ts).
 *
 * Every application route names the scope it needs:
 *
 *   const route = createRoute({ ..., ...authorized('read') });
 *   // handler: c.get('owner') is the caller's tenant, c.get('principal') the whole principal
 *
 * Outcomes, in this order (a 401 before any validation of the request, so nothing is learnt or
 * written without a key):
 *   401 missing_api_key    no Authorization header
 *   401 invalid_api_key    not `Bearer <key>`, malformed, unknown, or a wrong secret
 *   401 api_key_revoked    the right secret of a revoked key
 *   401 api_key_expired    the right secret of an expired key
 *   403 insufficient_scope the key lacks the route's scope (`admin` implies `submit` and `read`)
 *
 * @module
 */
import type { Context, MiddlewareHandler } from 'hono';
import { type Scope, Scope as ScopeSchema, TenantId } from '../../protocol/api-keys.js';
import { DomainError, UnauthenticatedError } from '../domain/errors.js';
import { type ApiKeys, hasScope, type Principal } from '../domain/security/api-keys.js';
import type { AppEnv, OidcOptions } from './context.js';

/** The OpenAPI security scheme of application routes (registered in app.ts). */
export const apiKeySchemeName = 'apiKey';

/** How the app authenticates application requests. */
export interface AuthOptions {
  apiKeys: ApiKeys;
  /**
   * Set only by the API Lambda: read the principal from the claims that API Gateway's JWT
   * authorizer put in the Lambda event. The claims never come from the request itself, so a
   * client cannot forge them; the embedded server leaves this unset.
   */
  oidc?: OidcOptions;
}

/** Scopes in the token's `scope` claim (space-separated) map to ours: `gpuai:submit` -> `submit`. */
export const oidcScopePrefix = 'gpuai:';

/**
 * The principal of a validated token's claims; scopes other than `gpuai:*` are ignored.
 *
 * @throws {@link UnauthenticatedError} `invalid_token_claims` when the tenant claim is absent or
 *   not a valid tenant id.
 */
export function principalFromClaims(claims: Record<string, unknown>, options: OidcOptions): Principal {
  const tenant = TenantId.safeParse(claims[options.tenantClaim]);
  if (!tenant.success) {
    throw new UnauthenticatedError(
      'invalid_token_claims',
      `the token's "${options.tenantClaim}" claim does not name a valid tenant`,
    );
  }
  const raw = claims.scope;
  const words = typeof raw === 'string' ? raw.split(' ') : Array.isArray(raw) ? raw.map(String) : [];
  const scopes = [
    ...new Set(
      words
        .filter((w) => w.startsWith(oidcScopePrefix))
        .map((w) => ScopeSchema.safeParse(w.slice(oidcScopePrefix.length)))
        .flatMap((s) => (s.success ? [s.data] : [])),
    ),
  ];
  return { tenant: tenant.data, scopes };
}

/** The JWT authorizer's claims in the Lambda event of hono's aws-lambda adapter, if any. */
function lambdaJwtClaims(c: Context): Record<string, unknown> | undefined {
  const env = c.env as { event?: { requestContext?: { authorizer?: { jwt?: { claims?: unknown } } } } } | undefined;
  const claims = env?.event?.requestContext?.authorizer?.jwt?.claims;
  return typeof claims === 'object' && claims !== null ? (claims as Record<string, unknown>) : undefined;
}

const bearer = /^Bearer +(\S+) *$/i;

/** App-level middleware: makes {@link requireScope} able to authenticate (it adds no check itself). */
export function authentication(options: AuthOptions): MiddlewareHandler<AppEnv> {
  const authenticate = async (c: Context<AppEnv>): Promise<Principal> => {
    if (options.oidc !== undefined) {
      const claims = lambdaJwtClaims(c);
      if (claims !== undefined) return principalFromClaims(claims, options.oidc);
    }
    const header = c.req.header('authorization');
    if (header === undefined || header.trim() === '') {
      throw new UnauthenticatedError(
        'missing_api_key',
        'this route needs an API key: send "Authorization: Bearer gpk_..." (see `gpuai keys --help`)',
      );
    }
    const token = bearer.exec(header)?.[1];
    if (token === undefined) {
      throw new UnauthenticatedError('invalid_api_key', 'the Authorization header must read "Bearer <API key>"');
    }
    return options.apiKeys.authenticate(token);
  };
  return async (c, next) => {
    c.set('authenticate', authenticate);
    await next();
  };
}

/**
 * Route middleware: authenticates the caller and checks `scope`, then sets `c.get('principal')`
 * and `c.get('owner')` (the principal's tenant) for the handler.
 */
export function requireScope(scope: Scope): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const authenticate = c.get('authenticate');
    let principal: Principal;
    try {
      principal = await authenticate(c);
    } catch (error) {
      if (error instanceof UnauthenticatedError) c.header('WWW-Authenticate', 'Bearer realm="gpuai"');
      throw error;
    }
    if (!hasScope(principal, scope)) {
      throw new DomainError(
        'forbidden',
        'insufficient_scope',
        `this route needs the "${scope}" scope; the key has ${principal.scopes.length === 0 ? 'none' : principal.scopes.join(', ')}`,
        { required: scope, granted: principal.scopes },
      );
    }
    c.set('principal', principal);
    c.set('owner', principal.tenant);
    await next();
  };
}

/** What an application route spreads into its `createRoute`: the OpenAPI security and the check. */
export const authorized = (scope: Scope) => ({
  security: [{ [apiKeySchemeName]: [] }],
  middleware: [requireScope(scope)],
});
