/**
 * Lambda entry point of the HTTP API behind API Gateway (HTTP API, payload format 2.0): the same
 * hono app that the embedded deployment serves.
 *
 * A long poll (`GET /v1/nodes/{id}/work?wait=20`) is held inside this function for up to 20 s,
 * so the function's timeout exceeds that and stays under API Gateway's 30 s integration limit.
 *
 * Application routes take an API key, or, where API Gateway's JWT authorizer validated an OIDC
 * token, the principal in the event's `requestContext.authorizer.jwt.claims`: the tenant from the
 * claim `GPUAI_OIDC_TENANT_CLAIM` names (default `sub`), scopes from `gpuai:*` words of `scope`.
 *
 * @module
 */
import { handle } from 'hono/aws-lambda';
import { createApp } from '../http/app.js';
import { apiGatewaySourceAddress } from '../http/limits.js';
import { controlPlane, readOidcOptions } from './config.js';
import { log } from './runtime.js';

// Rate limits count per API Gateway's sourceIp: the peer of its TCP connection, not a header.
export const handler = handle(
  createApp({ cp: controlPlane(), log, oidc: readOidcOptions(), sourceAddress: apiGatewaySourceAddress }),
);
