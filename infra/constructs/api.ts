import { RemovalPolicy } from 'aws-cdk-lib';
import { AccessLogField, AccessLogFormat } from 'aws-cdk-lib/aws-apigateway';
import { HttpApi, HttpStage, LogGroupLogDestination, type ThrottleSettings } from 'aws-cdk-lib/aws-apigatewayv2';
import { HttpLambdaIntegration } from 'aws-cdk-lib/aws-apigatewayv2-integrations';
import type { IFunction } from 'aws-cdk-lib/aws-lambda';
import { LogGroup, RetentionDays } from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';

export interface ApiProps {
  /** The function that serves every route: the hono app routes, API Gateway only forwards. */
  handler: IFunction;
  /** Requests per second (steady and burst) across the whole API, before Lambda is reached. */
  throttle: Required<ThrottleSettings>;
  retainLogs: boolean;
}

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
};

/**
 * The public HTTPS endpoint: an API Gateway HTTP API whose default route sends every request to
 * the API function (payload format 2.0, which hono's Lambda adapter reads), on a `$default` stage
 * with throttling and JSON access logs.
 *
 * HTTP APIs end an integration after 30 s at most. A long poll waits up to 20 s inside the
 * function, which leaves it 10 s for the rest of the request.
 */
export class Api extends Construct {
  readonly httpApi: HttpApi;
  readonly stage: HttpStage;
  readonly accessLogs: LogGroup;

  constructor(scope: Construct, id: string, props: ApiProps) {
    super(scope, id);
    this.httpApi = new HttpApi(this, 'HttpApi', {
      description: 'GPUAI control plane API',
      defaultIntegration: new HttpLambdaIntegration('Handler', props.handler),
      // The stage is declared below, to give it throttling and access logs.
      createDefaultStage: false,
    });
    this.accessLogs = new LogGroup(this, 'AccessLogs', {
      retention: RetentionDays.ONE_MONTH,
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
