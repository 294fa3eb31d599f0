import { createRoute, type OpenAPIHono } from '@hono/zod-openapi';
import { z } from 'zod';
import {
  ApiKeyId,
  ApiKeyList,
  ApiKeyView,
  CreateApiKeyRequest,
  CreatedApiKey,
  PageQuery,
  TenantId,
  ttlMs,
} from '../../../protocol/index.js';
import { authorized } from '../auth.js';
import type { AppDeps, AppEnv } from '../context.js';
import { errorResponses, json } from './responses.js';

/**
 * API key management. Every route needs the `admin` scope, and an admin is the operator of the
 * whole control plane: it creates, lists and revokes keys of every tenant (docs/api.md).
 */

const createKey = createRoute({
  method: 'post',
  path: '/v1/keys',
  tags: ['keys'],
  ...authorized('admin'),
  summary: 'Create an API key (the secret is in this response only)',
  // Optional: every field has a default (a read+submit key of the caller's tenant, no expiry).
  request: { body: { required: false, content: { 'application/json': { schema: CreateApiKeyRequest } } } },
  responses: { 201: json(CreatedApiKey, 'The new key'), ...errorResponses(400, 401, 403, 413) },
});

const listKeys = createRoute({
  method: 'get',
  path: '/v1/keys',
  tags: ['keys'],
  ...authorized('admin'),
  summary: "List API keys, every tenant's or one tenant's; never a secret",
  request: { query: PageQuery.extend({ tenant: TenantId.optional() }) },
  responses: { 200: json(ApiKeyList, 'A page of keys, by tenant then oldest first'), ...errorResponses(400, 401, 403) },
});

const revokeKey = createRoute({
  method: 'delete',
  path: '/v1/keys/{keyId}',
  tags: ['keys'],
  ...authorized('admin'),
  summary: 'Revoke an API key: its next request is refused with 401 api_key_revoked',
  request: { params: z.object({ keyId: ApiKeyId }) },
  responses: { 200: json(ApiKeyView, 'The revoked key'), ...errorResponses(400, 401, 403, 404) },
});

export function keyRoutes(app: OpenAPIHono<AppEnv>, { cp }: AppDeps): void {
  app.openapi(createKey, async (c) => {
    // Without a body the validator does not run: parse `{}` so that the defaults apply there too
    // (a key with no scopes at all was made before).
    const body = CreateApiKeyRequest.parse(c.req.valid('json') ?? {});
    const principal = c.get('principal');
    const created = await cp.apiKeys.create({
      tenant: body.tenant ?? principal.tenant,
      scopes: body.scopes,
      ...(body.name === undefined ? {} : { name: body.name }),
      ...(body.expiresAt === undefined ? {} : { expiresAt: Date.parse(body.expiresAt) }),
      ...(body.ttl === undefined ? {} : { ttlMs: ttlMs(body.ttl) }),
      createdBy: principal.keyId ?? `jwt:${principal.tenant}`,
    });
    return c.json(created, 201);
  });

  app.openapi(listKeys, async (c) => {
    const q = c.req.valid('query');
    return c.json(
      await cp.apiKeys.list({
        limit: q.limit,
        ...(q.tenant === undefined ? {} : { tenant: q.tenant }),
        ...(q.cursor === undefined ? {} : { cursor: q.cursor }),
      }),
      200,
    );
  });

  app.openapi(revokeKey, async (c) => c.json(await cp.apiKeys.revoke(c.req.valid('param').keyId), 200));
}
