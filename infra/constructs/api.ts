import { RemovalPolicy } from 'aws-cdk-lib';
import { AccessLogField, AccessLogFormat } from 'aws-cdk-lib/aws-apigateway';
import {
  HttpApi,
  HttpMethod,
  type HttpRoute,
  HttpStage,
  LogGroupLogDestination,
  type ThrottleSettings,
} from 'aws-cdk-lib/aws-apigatewayv2';
import { HttpJwtAuthorizer } from 'aws-cdk-lib/aws-apigatewayv2-authorizers';
import { HttpLambdaIntegration } from 'aws-cdk-lib/aws-apigatewayv2-integrations';
import type { IKey } from 'aws-cdk-lib/aws-kms';
import type { IFunction } from 'aws-cdk-lib/aws-lambda';
import { LogGroup, RetentionDays } from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';

export interface ApiProps {
  /** The function that serves every route: the hono app routes, API Gateway only forwards. */
  handler: IFunction;
  /** Requests per second (steady and burst) across the whole API, before Lambda is reached. */
  throttle: Required<ThrottleSettings>;
  retainLogs: boolean;
  /** Encrypts the access logs; its key policy lets CloudWatch Logs use it. */
  logsKey: IKey;
  /** When given, API Gateway verifies the OIDC token of every application request (see {@link Api}). */
  oidc?: OidcAuthorizerSettings;
}

/** An OIDC issuer whose tokens API Gateway accepts on the application routes. */
export interface OidcAuthorizerSettings {
  /** The issuer URL, the token's `iss`; API Gateway fetches its keys from `<issuer>/.well-known/openid-configuration`. */
  issuer: string;
  /** The audiences a token must name (`aud`, or `client_id` for an access token without one): at least one. */
  audience: readonly string[];
}

/**
 * The application routes: jobs, API keys, join tokens, and listing and reading nodes. With an OIDC
 * issuer, each is declared on its own and needs a token of that issuer. Everything else stays on
 * the `$default` route without an authorizer: the node (agent) routes, which carry Ed25519 request
 * signatures that the function checks (registration `POST /v1/nodes` and `/v1/nodes/{nodeId}/...`),
 * `/openapi.json` and `/healthz`.
 *
 * API Gateway picks the most specific route: `GET /v1/nodes/{nodeId}` matches one path segment
 * only, so `GET /v1/nodes/n1/work` falls through to `$default`, as does `POST /v1/nodes`.
 */
export const applicationRoutes: readonly { path: string; methods: readonly HttpMethod[] }[] = [
  { path: '/v1/jobs', methods: [HttpMethod.ANY] },
  { path: '/v1/jobs/{proxy+}', methods: [HttpMethod.ANY] },
  { path: '/v1/keys', methods: [HttpMethod.ANY] },
  { path: '/v1/keys/{proxy+}', methods: [HttpMethod.ANY] },
  { path: '/v1/join-tokens', methods: [HttpMethod.ANY] },
  { path: '/v1/join-tokens/{proxy+}', methods: [HttpMethod.ANY] },
  { path: '/v1/nodes', methods: [HttpMethod.GET] },
  { path: '/v1/nodes/{nodeId}', methods: [HttpMethod.GET] },
];

/**
 * One JSON object per request in the access log, with the fields that explain a failed or slow
 * request: the route, the status, API Gateway's and the integration's view of errors and latency.
 */
const accessLogFields = {
  requestId: AccessLogField.contextRequestId(),
  requestTime: '$context.requestTime',
  sourceIp: '$context.identity.sourceIp',
  userAgent: '$context.identity.userAgent',
  method: '$context.httpMethod',
  path: '$context.path',
  routeKey: '$context.routeKey',
  protocol: '$context.protocol',
  status: '$context.status',
  responseLength: '$context.responseLength',
  responseLatency: '$context.responseLatency',
  integrationStatus: '$context.integrationStatus',
  integrationLatency: '$context.integrationLatency',
  integrationError: '$context.integrationErrorMessage',
  error: '$context.error.message',
  // Why the JWT authorizer refused a request (routes behind it only; empty otherwise).
  authorizerError: '$context.authorizer.error',
};

/**
 * The public HTTPS endpoint: an API Gateway HTTP API whose default route sends every request to
 * the API function (payload format 2.0, which hono's Lambda adapter reads), on a `$default` stage
 * with throttling and JSON access logs encrypted under the stack's logs key.
 *
 * Without an OIDC issuer that is the only route, and the function authenticates every request:
 * API keys on application routes, Ed25519 signatures on node routes. With an issuer (CDK context
 * `gpuai:oidcIssuer` and `gpuai:oidcAudience`), each of {@link applicationRoutes} gets a route of
 * its own, to the same function, behind a JWT authorizer: API Gateway refuses with 401, before
 * the function runs, any request without a valid token of that issuer and audience (signature
 * against the issuer's published keys, `iss`, `aud`, `exp`, `nbf`), and hands the verified claims
 * to the function in `requestContext.authorizer.jwt.claims`, where functions/http/auth.ts reads the
 * tenant. API keys then no longer reach the application routes.
 *
 * HTTP APIs end an integration after 30 s at most. A long poll waits up to 20 s inside the
 * function, which leaves it 10 s for the rest of the request.
 */
export class Api extends Construct {
  readonly httpApi: HttpApi;
  readonly stage: HttpStage;
  readonly accessLogs: LogGroup;
  /** The routes behind the JWT authorizer; none without an OIDC issuer. */
  readonly applicationRoutes: HttpRoute[] = [];

  constructor(scope: Construct, id: string, props: ApiProps) {
    super(scope, id);
    const integration = new HttpLambdaIntegration('Handler', props.handler);
    this.httpApi = new HttpApi(this, 'HttpApi', {
      description: 'GPUAI control plane API',
      defaultIntegration: integration,
      // The stage is declared below, to give it throttling and access logs.
      createDefaultStage: false,
    });
    if (props.oidc !== undefined) {
      if (props.oidc.audience.length === 0) throw new Error('an OIDC authorizer needs at least one audience');
      const authorizer = new HttpJwtAuthorizer('Oidc', props.oidc.issuer, {
        authorizerName: 'oidc',
        jwtAudience: [...props.oidc.audience],
        identitySource: ['$request.header.Authorization'],
      });
      for (const { path, methods } of applicationRoutes) {
        this.applicationRoutes.push(
          ...this.httpApi.addRoutes({ path, methods: [...methods], integration, authorizer }),
        );
      }
    }
    this.accessLogs = new LogGroup(this, 'AccessLogs', {
      retention: RetentionDays.ONE_MONTH,
      encryptionKey: props.logsKey,
      removalPolicy: props.retainLogs ? RemovalPolicy.RETAIN : RemovalPolicy.DESTROY,
    });
    this.stage = new HttpStage(this, 'DefaultStage', {
      httpApi: this.httpApi,
      stageName: '$default',
      autoDeploy: true,
      throttle: props.throttle,
      accessLogSettings: {
        destination: new LogGroupLogDestination(this.accessLogs),
        format: AccessLogFormat.custom(JSON.stringify(accessLogFields)),
      },
    });
  }

  /** The API's base URL, ending in `/`. */
  get url(): string {
    return this.stage.url;
  }
}
