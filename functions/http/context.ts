import type { Context } from 'hono';
import type { ControlPlane } from '../control-plane.js';
import type { Principal } from '../domain/security/api-keys.js';

/** Values each request carries through the app. */
export interface AppEnv {
  Variables: {
    requestId: string;
    /** The tenant on whose behalf an application request acts: `principal.tenant` (set by requireScope). */
    owner: string;
    /** Who called an application route: tenant, API key id, scopes (set by requireScope, functions/http/auth.ts). */
    principal: Principal;
    /**
     * The signed date of a node request whose route refuses replays by date, not nonce (heartbeat,
     * progress: functions/domain/security/request-auth.ts `ReplayCheck`); set by the node routes' middleware.
     */
    signedDate?: number;
    /** Authenticates the request's caller; set by the app's `authentication` middleware. */
    authenticate: (c: Context<AppEnv>) => Promise<Principal>;
  };
}

export interface AppDeps {
  cp: ControlPlane;
  log: (entry: Record<string, unknown>) => void;
  /** Only the API Lambda sets it: principals from API Gateway's JWT authorizer claims (functions/http/auth.ts). */
  oidc?: OidcOptions;
  /** The request's source address as the transport saw it, for per-address rate limits (functions/http/limits.ts). */
  sourceAddress?: SourceAddress;
}

/** How the API Lambda reads principals from API Gateway's JWT authorizer claims (functions/http/auth.ts). */
export interface OidcOptions {
  /** The claim that names the tenant (`GPUAI_OIDC_TENANT_CLAIM`, default `sub`). */
  tenantClaim: string;
}

/**
 * Where a request came from, as the transport saw it: the socket's peer in the embedded server
 * (@hono/node-server's conninfo), API Gateway's `requestContext.http.sourceIp` in the cloud. Never
 * a client-supplied header such as X-Forwarded-For, which anyone can set to anything.
 * `undefined` where the transport knows no address (in-process tests): the address scopes are skipped.
 */
export type SourceAddress = (c: Context<AppEnv>) => string | undefined;
