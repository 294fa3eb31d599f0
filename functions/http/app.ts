import { OpenAPIHono } from '@hono/zod-openapi';
import { requestId } from 'hono/request-id';
import { limits } from '../../protocol/index.js';
import { apiKeySchemeName, authentication } from './auth.js';
import { boundedBody } from './body-limit.js';
import type { AppDeps, AppEnv } from './context.js';
import { errorResponder, validationHook } from './errors.js';
import { rateLimits } from './limits.js';
import { notFoundOrNotAllowed, withAppWideRules } from './openapi.js';
import { attestationRoutes } from './routes/attestation.js';
import { jobRoutes } from './routes/jobs.js';
import { joinTokenRoutes } from './routes/join-tokens.js';
import { keyRoutes } from './routes/keys.js';
import { nodeRoutes } from './routes/nodes.js';

/**
 * The control plane's HTTP API: one hono app, served by node's HTTP server in the embedded
 * deployment and by API Gateway + Lambda in the cloud.
 */
export function createApp(deps: AppDeps): OpenAPIHono<AppEnv> {
  const app = new OpenAPIHono<AppEnv>({ defaultHook: validationHook });

  app.use(requestId());
  // Application routes authenticate through `authorized(scope)` (functions/http/auth.ts).
  app.use(authentication({ apiKeys: deps.cp.apiKeys, ...(deps.oidc === undefined ? {} : { oidc: deps.oidc }) }));
  app.use(rateLimits(deps));
  app.use(boundedBody(limits.maxBodyBytes));

  app.get('/healthz', (c) => c.json({ status: 'ok' }));
  nodeRoutes(app, deps);
  attestationRoutes(app, deps);
  jobRoutes(app, deps);
  keyRoutes(app, deps);
  joinTokenRoutes(app, deps);

  app.openAPIRegistry.registerComponent('securitySchemes', apiKeySchemeName, {
    type: 'http',
    scheme: 'bearer',
    bearerFormat: 'gpk_<keyId>_<secret>',
    description:
      'An API key (`gpuai keys create`) or, in the cloud, an OIDC access token accepted by the API Gateway ' +
      'JWT authorizer; see docs/api.md, "Authentication".',
  });
  app.openAPIRegistry.registerComponent('securitySchemes', 'nodeSignature', {
    type: 'apiKey',
    in: 'header',
    name: 'x-gpuai-signature',
    description: 'Ed25519 signature of the request; see docs/api.md and protocol/signing.ts.',
  });
  // The document, with what the app enforces for every route written in (functions/http/openapi.ts).
  let document: object | undefined;
  app.get('/openapi.json', (c) => {
    document ??= withAppWideRules(
      app.getOpenAPI31Document({
        openapi: '3.1.0',
        info: {
          title: 'GPUAI control plane',
          version: '1',
          description: 'Submit GPU jobs; run edge agents that register, poll for work and report results.',
        },
      }),
      { description: `Body larger than ${limits.maxBodyBytes / 1024} KiB` },
    );
    return c.json(document);
  });

  app.notFound(notFoundOrNotAllowed(() => app.routes));
  app.onError(errorResponder(deps.log));
  return app;
}
