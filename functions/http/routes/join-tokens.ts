import { createRoute, type OpenAPIHono } from '@hono/zod-openapi';
import { z } from 'zod';
import {
  CreatedJoinToken,
  CreateJoinTokenRequest,
  JoinTokenId,
  JoinTokenList,
  JoinTokenView,
  PageQuery,
} from '../../../protocol/index.js';
import { authorized } from '../auth.js';
import type { AppDeps, AppEnv } from '../context.js';
import { errorResponses, json } from './responses.js';

/**
 * Join token management (node enrollment). Every route needs the `admin` scope: whoever makes a
 * token decides which operator the nodes that join with it belong to (docs/api.md).
 */

const createToken = createRoute({
  method: 'post',
  path: '/v1/join-tokens',
  tags: ['enrollment'],
  ...authorized('admin'),
  summary: 'Create a join token for an operator (the secret is in this response only)',
  request: { body: { required: true, content: { 'application/json': { schema: CreateJoinTokenRequest } } } },
  responses: { 201: json(CreatedJoinToken, 'The new token and its secret'), ...errorResponses(400, 401, 403, 413) },
});

const listTokens = createRoute({
  method: 'get',
  path: '/v1/join-tokens',
  tags: ['enrollment'],
  ...authorized('admin'),
  summary: 'List join tokens, oldest first; never a secret',
  request: { query: PageQuery },
  responses: { 200: json(JoinTokenList, 'A page of join tokens'), ...errorResponses(400, 401, 403) },
});

const revokeToken = createRoute({
  method: 'delete',
  path: '/v1/join-tokens/{tokenId}',
  tags: ['enrollment'],
  ...authorized('admin'),
  summary: 'Revoke a join token: no node joins with it any more (nodes that joined stay)',
  request: { params: z.object({ tokenId: JoinTokenId }) },
  responses: { 200: json(JoinTokenView, 'The revoked token'), ...errorResponses(400, 401, 403, 404) },
});

export function joinTokenRoutes(app: OpenAPIHono<AppEnv>, { cp }: AppDeps): void {
  app.openapi(createToken, async (c) => {
    const principal = c.get('principal');
    const { token, secret } = await cp.joinTokens.create(c.req.valid('json'), {
      tenant: principal.tenant,
      ...(principal.keyId === undefined ? {} : { keyId: principal.keyId }),
    });
    return c.json({ token: cp.joinTokens.view(token), secret }, 201);
  });

  app.openapi(listTokens, async (c) => {
    const q = c.req.valid('query');
    const page = await cp.joinTokens.list(q.limit, q.cursor);
    return c.json(
      {
        tokens: page.tokens.map((t) => cp.joinTokens.view(t)),
        ...(page.cursor === undefined ? {} : { cursor: page.cursor }),
      },
      200,
    );
  });

  app.openapi(revokeToken, async (c) =>
    c.json(cp.joinTokens.view(await cp.joinTokens.revoke(c.req.valid('param').tokenId)), 200),
  );
}
