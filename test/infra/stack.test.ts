import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { App } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { tableDefinition, timeToLiveAttribute } from '../../functions/adapters/aws/dynamodb-store.js';
import { queueNames } from '../../functions/domain/scheduling/messages.js';
import { deadLetterQueueOf, queueDefinitions } from '../../functions/workers/queues.js';
import { applicationRoutes } from '../../infra/constructs/api.js';
import { storeActions, tableKeyActions } from '../../infra/constructs/data.js';
import {
  apiQueueActions,
  maxPoolQueuePrefixLength,
  nodeQueueActions,
  poolQueuePrefix,
  publisherQueueActions,
} from '../../infra/constructs/dispatch.js';
import { alarmsKeyServiceActions, logsKeyServiceActions } from '../../infra/constructs/keys.js';
import { pascalCase } from '../../infra/constructs/queues.js';
import { workerConcurrency } from '../../infra/constructs/workers.js';
import { readContext } from '../../infra/context.js';
import { GpuaiStack } from '../../infra/gpuai-stack.js';

/** The CloudFormation that these tests read: only the parts they look at. */
interface Resource {
  Type: string;
  Properties: Record<string, unknown>;
  DeletionPolicy?: string;
}
interface Statement {
  Effect: 'Allow' | 'Deny';
  Action: string | string[];
  Resource: unknown;
  Principal?: unknown;
  Condition?: unknown;
}
interface PolicyDocument {
  Statement: Statement[];
}

/** cdk.json's context, so that these tests see the feature flags and defaults `cdk synth` sees. */
const cdkContext = JSON.parse(readFileSync(new URL('../../cdk.json', import.meta.url), 'utf8')).context as Record<
  string,
  unknown
>;

/**
 * Synthesises the app's stack as infra/app.ts does. `aws:cdk:bundling-stacks: []` is CDK's own
 * switch to skip asset bundling: the template is the same, and the esbuild run, which the last
 * describe block exercises once, would dominate every other synth.
 */
function synthesize(context: Record<string, unknown> = {}, options: { bundle?: boolean; outdir?: string } = {}) {
  const app = new App({
    context: { ...cdkContext, ...context, ...(options.bundle ? {} : { 'aws:cdk:bundling-stacks': [] }) },
    ...(options.outdir === undefined ? {} : { outdir: options.outdir }),
  });
  const { stackName, settings } = readContext(app.node);
  const stack = new GpuaiStack(app, stackName, { settings });
  return { app, stack, template: Template.fromStack(stack) };
}

let template: Template;
let resources: Record<string, Resource>;

beforeAll(() => {
  ({ template } = synthesize());
  resources = template.toJSON().Resources as Record<string, Resource>;
});

function resource(id: string): Resource {
  const found = resources[id];
  if (found === undefined) throw new Error(`no resource ${id}`);
  return found;
}

const ofType = (type: string): [string, Resource][] =>
  Object.entries(resources).filter(([, resource]) => resource.Type === type);

/** The logical id of a queue, found through its URL output (`{ Ref: id }`). */
function queueId(name: string): string {
  const output = template.toJSON().Outputs[`${pascalCase(name)}QueueUrl`] as { Value: { Ref: string } } | undefined;
  if (output === undefined) throw new Error(`no URL output for queue ${name}`);
  return output.Value.Ref;
}

/** The logical id of a KMS key, found through its alias `alias/Gpuai/<name>`. */
function keyId(name: string): string {
  const alias = ofType('AWS::KMS::Alias').find(([, a]) => a.Properties.AliasName === `alias/Gpuai/${name}`);
  const target = alias?.[1].Properties.TargetKeyId as { 'Fn::GetAtt': [string, string] } | undefined;
  if (target === undefined) throw new Error(`no key with alias ${name}`);
  return target['Fn::GetAtt'][0];
}

/** The logical id of a function, by its construct id (Api, Scheduler, Verifier, Reaper). */
function functionId(name: string): string {
  const found = ofType('AWS::Lambda::Function').find(([id]) => id.startsWith(`Workers${name}`));
  if (found === undefined) throw new Error(`no function ${name}`);
  return found[0];
}

/** Every statement of the identity policies attached to a function's role. */
function statementsOf(fn: string): Statement[] {
  const role = (resource(fn).Properties.Role as { 'Fn::GetAtt': [string, string] })['Fn::GetAtt'][0];
  return ofType('AWS::IAM::Policy')
    .filter(([, policy]) => (policy.Properties.Roles as { Ref: string }[]).some((r) => r.Ref === role))
    .flatMap(([, policy]) => (policy.Properties.PolicyDocument as PolicyDocument).Statement);
}

const actionsOf = (statement: Statement): string[] =>
  Array.isArray(statement.Action) ? statement.Action : [statement.Action];

/** The logical ids that a statement's resources name through Fn::GetAtt or Ref. */
const resourceIdsOf = (statement: Statement): string[] =>
  [...JSON.stringify(statement.Resource).matchAll(/"(?:Fn::GetAtt":\["|Ref":")([A-Za-z0-9]+)"/g)].map(
    (m) => m[1] ?? '',
  );

/** The queues (by name) on which a function's policies allow `action`. */
function queuesAllowed(fn: string, action: string): string[] {
  const byId = new Map(queueDefinitions.map(({ name }) => [queueId(name), name]));
  return statementsOf(fn)
    .filter((statement) => statement.Effect === 'Allow' && actionsOf(statement).includes(action))
    .flatMap(resourceIdsOf)
    .flatMap((id) => byId.get(id) ?? [])
    .sort();
}

describe('the table', () => {
  const definition = tableDefinition('any');

  it("mirrors the store adapter's table definition: keys, attributes, indexes, billing", () => {
    const [[, table] = ['', undefined]] = ofType('AWS::DynamoDB::Table');
    expect(table?.Properties).toMatchObject({
      KeySchema: definition.KeySchema,
      BillingMode: 'PAY_PER_REQUEST',
    });
    expect(table?.Properties.AttributeDefinitions).toEqual(
      expect.arrayContaining(definition.AttributeDefinitions ?? []),
    );
    expect(table?.Properties.AttributeDefinitions).toHaveLength(definition.AttributeDefinitions?.length ?? 0);
    expect(table?.Properties.GlobalSecondaryIndexes).toEqual(
      expect.arrayContaining(
        (definition.GlobalSecondaryIndexes ?? []).map(({ IndexName, KeySchema, Projection }) => ({
          IndexName,
          KeySchema,
          Projection,
        })),
      ),
    );
    expect(table?.Properties.GlobalSecondaryIndexes).toHaveLength(3);
  });

  it('expires items on the adapter TTL attribute, keeps point-in-time recovery, and is encrypted with its own key', () => {
    template.hasResourceProperties('AWS::DynamoDB::Table', {
      TimeToLiveSpecification: { AttributeName: timeToLiveAttribute, Enabled: true },
      PointInTimeRecoverySpecification: { PointInTimeRecoveryEnabled: true },
      SSESpecification: { SSEEnabled: true, SSEType: 'KMS', KMSMasterKeyId: { 'Fn::GetAtt': [keyId('table'), 'Arn'] } },
    });
    expect(resource(keyId('table')).Properties).toMatchObject({ EnableKeyRotation: true });
  });

  it('is retained and protected from deletion by default, and disposable in a development stack', () => {
    template.hasResource('AWS::DynamoDB::Table', {
      DeletionPolicy: 'Retain',
      Properties: Match.objectLike({ DeletionProtectionEnabled: true }),
    });
    const dev = synthesize({ 'gpuai:retainData': 'false' }).template;
    dev.hasResource('AWS::DynamoDB::Table', {
      DeletionPolicy: 'Delete',
      Properties: Match.objectLike({ DeletionProtectionEnabled: false }),
    });
    dev.hasResource('AWS::KMS::Key', { DeletionPolicy: 'Delete' });
  });
});

describe('the queues', () => {
  it("are one per queue definition, each encrypted with SSE-KMS under SQS's AWS managed key", () => {
    expect(ofType('AWS::SQS::Queue')).toHaveLength(queueDefinitions.length);
    for (const { name } of queueDefinitions) {
      expect(resource(queueId(name)).Properties).toMatchObject({ KmsMasterKeyId: 'alias/aws/sqs' });
      expect(resource(queueId(name)).Properties.SqsManagedSseEnabled).toBeUndefined();
    }
  });

  it('send each work queue to its dead-letter queue after maxReceives', () => {
    const workQueues = queueDefinitions.filter((q) => q.deadLetterQueue !== undefined);
    expect(workQueues.map((q) => q.name).sort()).toEqual(Object.values(queueNames).sort());
    for (const { name, deadLetterQueue = '', maxReceives } of workQueues) {
      expect(resource(queueId(name)).Properties.RedrivePolicy).toEqual({
        deadLetterTargetArn: { 'Fn::GetAtt': [queueId(deadLetterQueue), 'Arn'] },
        maxReceiveCount: maxReceives,
      });
    }
  });

  it("hold a message invisible for at least six times its consumer's timeout", () => {
    const mappings = ofType('AWS::Lambda::EventSourceMapping');
    expect(mappings).toHaveLength(2);
    for (const [, mapping] of mappings) {
      const queue = (mapping.Properties.EventSourceArn as { 'Fn::GetAtt': [string] })['Fn::GetAtt'][0];
      const fn = (mapping.Properties.FunctionName as { Ref: string }).Ref;
      const visibility = resource(queue).Properties.VisibilityTimeout as number;
      expect(visibility).toBeGreaterThanOrEqual(6 * (resource(fn).Properties.Timeout as number));
      expect(mapping.Properties.FunctionResponseTypes).toEqual(['ReportBatchItemFailures']);
    }
  });

  it('refuse requests without TLS', () => {
    for (const { name } of queueDefinitions) {
      template.hasResourceProperties('AWS::SQS::QueuePolicy', {
        Queues: [{ Ref: queueId(name) }],
        PolicyDocument: {
          Statement: Match.arrayWith([
            Match.objectLike({ Effect: 'Deny', Condition: { Bool: { 'aws:SecureTransport': 'false' } } }),
          ]),
        },
      });
    }
  });
});

describe('the functions', () => {
  it('run on Node.js 22 or newer, on arm64, with JSON logs and the Powertools service name', () => {
    const functions = ofType('AWS::Lambda::Function');
    expect(functions.map(([id]) => id.replace(/[0-9A-F]{8}$/, '')).sort()).toEqual([
      'WorkersApi',
      'WorkersReaper',
      'WorkersScheduler',
      'WorkersVerifier',
    ]);
    for (const [, fn] of functions) {
      expect(Number(/^nodejs(\d+)\.x$/.exec(String(fn.Properties.Runtime))?.[1])).toBeGreaterThanOrEqual(22);
      expect(fn.Properties.Architectures).toEqual(['arm64']);
      expect(fn.Properties.LoggingConfig).toMatchObject({ LogFormat: 'JSON' });
      const variables = (fn.Properties.Environment as { Variables: Record<string, unknown> }).Variables;
      expect(Object.keys(variables)).toEqual(
        expect.arrayContaining([
          'TABLE_NAME',
          'QUEUE_URLS',
          'KEY_ID',
          'LEASE_MS',
          'HEARTBEAT_IDLE_MS',
          'HEARTBEAT_BUSY_MS',
        ]),
      );
      expect(variables).toMatchObject({
        POWERTOOLS_SERVICE_NAME: 'gpuai',
        LEASE_MS: '30000',
        HEARTBEAT_IDLE_MS: '30000',
        HEARTBEAT_BUSY_MS: '10000',
      });
    }
  });

  it('reserve concurrency for each function; the queue consumers poll with no more batches than that', () => {
    const reserved = (name: string) => resource(functionId(name)).Properties.ReservedConcurrentExecutions;
    expect(reserved('Api')).toBe(100);
    expect(reserved('Scheduler')).toBe(workerConcurrency.scheduler);
    expect(reserved('Verifier')).toBe(workerConcurrency.verifier);
    expect(reserved('Reaper')).toBe(1);
    const mappings = ofType('AWS::Lambda::EventSourceMapping');
    expect(mappings).toHaveLength(2);
    for (const [, mapping] of mappings) {
      const fn = (mapping.Properties.FunctionName as { Ref: string }).Ref;
      const { MaximumConcurrency } = mapping.Properties.ScalingConfig as { MaximumConcurrency: number };
      expect(MaximumConcurrency).toBeLessThanOrEqual(resource(fn).Properties.ReservedConcurrentExecutions as number);
    }
    expect(
      synthesize({ 'gpuai:apiConcurrency': '20' }).template.toJSON().Resources[functionId('Api')].Properties,
    ).toMatchObject({ ReservedConcurrentExecutions: 20 });
  });

  it('log to log groups encrypted with the logs key, as the API access logs do', () => {
    const groups = ofType('AWS::Logs::LogGroup');
    expect(groups).toHaveLength(5);
    for (const [, group] of groups) {
      expect(group.Properties.KmsKeyId).toEqual({ 'Fn::GetAtt': [keyId('logs'), 'Arn'] });
    }
    for (const [, fn] of ofType('AWS::Lambda::Function')) {
      const group = (fn.Properties.LoggingConfig as { LogGroup: { Ref: string } }).LogGroup.Ref;
      expect(resource(group).Type).toBe('AWS::Logs::LogGroup');
    }
  });

  it('give the API function time for a 20 s long poll within the 30 s API Gateway limit', () => {
    const timeout = resource(functionId('Api')).Properties.Timeout as number;
    expect(timeout).toBeGreaterThan(20);
    expect(timeout).toBeLessThan(30);
  });

  it('run the reaper once a minute, without retrying a failed tick', () => {
    template.hasResourceProperties('AWS::Events::Rule', {
      ScheduleExpression: 'rate(1 minute)',
      Targets: [
        Match.objectLike({
          Arn: { 'Fn::GetAtt': [functionId('Reaper'), 'Arn'] },
          RetryPolicy: Match.objectLike({ MaximumRetryAttempts: 0 }),
        }),
      ],
    });
  });
});

describe('the API', () => {
  it('sends every route to the API function', () => {
    template.hasResourceProperties('AWS::ApiGatewayV2::Route', { RouteKey: '$default' });
    template.hasResourceProperties('AWS::ApiGatewayV2::Integration', {
      IntegrationType: 'AWS_PROXY',
      PayloadFormatVersion: '2.0',
      IntegrationUri: { 'Fn::GetAtt': [functionId('Api'), 'Arn'] },
    });
  });

  it('throttles its default stage and writes JSON access logs to a log group', () => {
    const [[, stage] = ['', undefined]] = ofType('AWS::ApiGatewayV2::Stage');
    expect(stage?.Properties).toMatchObject({
      StageName: '$default',
      AutoDeploy: true,
      DefaultRouteSettings: { ThrottlingRateLimit: 100, ThrottlingBurstLimit: 200 },
    });
    const logs = stage?.Properties.AccessLogSettings as { DestinationArn: { 'Fn::GetAtt': [string] }; Format: string };
    expect(resources[logs.DestinationArn['Fn::GetAtt'][0]]?.Type).toBe('AWS::Logs::LogGroup');
    expect(JSON.parse(logs.Format)).toMatchObject({ requestId: '$context.requestId', status: '$context.status' });
  });
});

/**
 * The requests of each kind the app serves, for the route tests below: application routes (API
 * keys, or the OIDC authorizer when an issuer is set) and the rest (node routes signed with
 * Ed25519, the OpenAPI document, the health check). Path parameters are filled in.
 */
const applicationRequests = [
  'GET /v1/jobs',
  'POST /v1/jobs',
  'GET /v1/jobs/j1',
  'GET /v1/jobs/j1/tasks',
  'POST /v1/jobs/j1/cancel',
  'GET /v1/keys',
  'POST /v1/keys',
  'DELETE /v1/keys/k1',
  'GET /v1/join-tokens',
  'POST /v1/join-tokens',
  'DELETE /v1/join-tokens/t1',
  'GET /v1/nodes',
  'GET /v1/nodes/n1',
];
const unauthorizedRequests = [
  'POST /v1/nodes',
  'POST /v1/nodes/n1/heartbeat',
  'GET /v1/nodes/n1/work',
  'POST /v1/nodes/n1/claims',
  'POST /v1/nodes/n1/credentials',
  'POST /v1/nodes/n1/tasks/t1/progress',
  'POST /v1/nodes/n1/tasks/t1/result',
  'POST /v1/nodes/n1/tasks/t1/fail',
  'POST /v1/nodes/n1/attestation/challenge',
  'POST /v1/nodes/n1/attestation',
  'GET /openapi.json',
  'GET /healthz',
];

/**
 * The route API Gateway (HTTP API) selects for a request, as it documents: a full match of method
 * and path (path variables match one segment), before a greedy `{proxy+}` match, a specific method
 * before `ANY`, and `$default` when nothing matches.
 */
function selectRoute(request: string, routeKeys: readonly string[]): string {
  const [method = '', path = ''] = request.split(' ');
  const segments = path.split('/');
  let best: { key: string; score: number } = { key: '$default', score: 0 };
  for (const key of routeKeys) {
    if (key === '$default') continue;
    const [routeMethod = '', routePath = ''] = key.split(' ');
    if (routeMethod !== 'ANY' && routeMethod !== method) continue;
    const parts = routePath.split('/');
    const greedy = parts.at(-1)?.endsWith('+}') ?? false;
    const fixed = greedy ? parts.slice(0, -1) : parts;
    if (greedy ? segments.length <= fixed.length : segments.length !== fixed.length) continue;
    if (!fixed.every((part, i) => part.startsWith('{') || part === segments[i])) continue;
    const score = (greedy ? 10 : 20) + (routeMethod === 'ANY' ? 0 : 1);
    if (score > best.score) best = { key, score };
  }
  return best.key;
}

describe('the routes that the app serves', () => {
  it('are each listed above as an application route or not, so a new route cannot miss the authorizer', () => {
    const dir = new URL('../../functions/http/routes/', import.meta.url);
    const served = readdirSync(dir)
      .filter((file) => file.endsWith('.ts') && !file.endsWith('.test.ts'))
      .flatMap((file) => [...readFileSync(new URL(file, dir), 'utf8').matchAll(/method: '(\w+)',\s*path: '([^']+)'/g)])
      .map(([, method = '', path = '']) => `${method.toUpperCase()} ${path}`);
    expect(served.length).toBeGreaterThan(10);
    const known = [...applicationRequests, ...unauthorizedRequests];
    const fill = (path: string) => path.replace(/\{(\w+)\}/g, (_, name: string) => `${name[0]}1`);
    for (const route of served) {
      const [method = '', path = ''] = route.split(' ');
      const request = `${method} ${fill(path)}`;
      const isKnown = known.includes(request);
      expect(isKnown, `${route} is not classified in test/infra/stack.test.ts`).toBe(true);
    }
  });
});

describe('the API without an OIDC issuer (the default)', () => {
  it('has the $default route alone, without an authorizer, and no OIDC setting in any function', () => {
    const routes = ofType('AWS::ApiGatewayV2::Route');
    expect(routes).toHaveLength(1);
    expect(routes[0]?.[1].Properties.AuthorizationType ?? 'NONE').toBe('NONE');
    expect(ofType('AWS::ApiGatewayV2::Authorizer')).toEqual([]);
    for (const [, fn] of ofType('AWS::Lambda::Function')) {
      expect(Object.keys(variablesOf(fn))).not.toContain('GPUAI_OIDC_TENANT_CLAIM');
    }
  });
});

describe('the API with an OIDC issuer (gpuai:oidcIssuer, gpuai:oidcAudience)', () => {
  const issuer = 'https://login.example.com/realms/gpuai';
  const oidc = (extra: Record<string, unknown> = {}) => {
    const synthesized = synthesize({
      'gpuai:oidcIssuer': issuer,
      'gpuai:oidcAudience': 'gpuai-api,gpuai-cli',
      ...extra,
    });
    return synthesized.template.toJSON().Resources as Record<string, Resource>;
  };
  let withOidc: Record<string, Resource>;
  beforeAll(() => {
    withOidc = oidc({ 'gpuai:oidcTenantClaim': 'tenant' });
  });
  const of = (type: string) => Object.entries(withOidc).filter(([, r]) => r.Type === type);

  it('verifies tokens of that issuer and those audiences from the Authorization header', () => {
    const authorizers = of('AWS::ApiGatewayV2::Authorizer');
    expect(authorizers).toHaveLength(1);
    expect(authorizers[0]?.[1].Properties).toMatchObject({
      AuthorizerType: 'JWT',
      IdentitySource: ['$request.header.Authorization'],
      JwtConfiguration: { Issuer: issuer, Audience: ['gpuai-api', 'gpuai-cli'] },
    });
  });

  it('puts every application route behind it, and the node routes, /openapi.json and /healthz on $default without it', () => {
    const [[authorizer] = ['']] = of('AWS::ApiGatewayV2::Authorizer');
    const routes = of('AWS::ApiGatewayV2::Route').map(([, r]) => r.Properties);
    const byKey = new Map(routes.map((r) => [r.RouteKey as string, r]));
    expect(byKey.size).toBe(routes.length);
    const defaultRoute = byKey.get('$default');
    expect(defaultRoute?.AuthorizationType ?? 'NONE').toBe('NONE');
    const declared = applicationRoutes.flatMap(({ path, methods }) => methods.map((m) => `${m} ${path}`));
    expect([...byKey.keys()].sort()).toEqual(['$default', ...declared].sort());
    for (const key of declared) {
      expect(byKey.get(key)).toMatchObject({
        AuthorizationType: 'JWT',
        AuthorizerId: { Ref: authorizer },
        // The same integration, so the same function, as $default.
        Target: defaultRoute?.Target,
      });
    }
    for (const request of applicationRequests) {
      const selected = selectRoute(request, [...byKey.keys()]);
      expect(selected, `${request} goes to ${selected}`).not.toBe('$default');
      expect(byKey.get(selected)?.AuthorizationType).toBe('JWT');
    }
    for (const request of unauthorizedRequests) {
      expect(selectRoute(request, [...byKey.keys()]), request).toBe('$default');
    }
  });

  it('tells the API function the tenant claim (sub unless gpuai:oidcTenantClaim names another), and no other function', () => {
    const fns = of('AWS::Lambda::Function');
    expect(fns).toHaveLength(4);
    for (const [id, fn] of fns) {
      if (id.startsWith('WorkersApi')) expect(variablesOf(fn)).toMatchObject({ GPUAI_OIDC_TENANT_CLAIM: 'tenant' });
      else expect(Object.keys(variablesOf(fn))).not.toContain('GPUAI_OIDC_TENANT_CLAIM');
    }
    const byDefault = Object.entries(oidc()).find(
      ([id, r]) => r.Type === 'AWS::Lambda::Function' && id.startsWith('WorkersApi'),
    );
    expect(byDefault && variablesOf(byDefault[1])).toMatchObject({ GPUAI_OIDC_TENANT_CLAIM: 'sub' });
  });
});

describe('the keys', () => {
  it('wrap data keys under a rotating symmetric key', () => {
    template.hasResourceProperties('AWS::KMS::Key', {
      EnableKeyRotation: true,
      KeySpec: Match.absent(),
      KeyUsage: Match.absent(),
    });
  });

  it('include a secp256k1 signing key for payouts', () => {
    template.hasResourceProperties('AWS::KMS::Key', { KeySpec: 'ECC_SECG_P256K1', KeyUsage: 'SIGN_VERIFY' });
    template.hasOutput('PayoutSignerKeyArn', {});
  });

  it('are all customer managed, and every symmetric one rotates', () => {
    expect(ofType('AWS::KMS::Key')).toHaveLength(5);
    for (const name of ['data-keys', 'table', 'logs', 'alarms']) {
      expect(resource(keyId(name)).Properties).toMatchObject({ EnableKeyRotation: true });
    }
  });

  it("delegate access to IAM in the account only: no role or service in the data, signer and table keys' policies", () => {
    for (const name of ['data-keys', 'payout-signer', 'table']) {
      for (const statement of (resource(keyId(name)).Properties.KeyPolicy as PolicyDocument).Statement) {
        expect(JSON.stringify(statement.Principal)).toMatch(/:root"/);
      }
    }
  });

  it("let CloudWatch Logs of the stack's region use the logs key, for this account's log groups only", () => {
    const statements = (resource(keyId('logs')).Properties.KeyPolicy as PolicyDocument).Statement;
    const others = statements.filter((s) => !JSON.stringify(s.Principal).includes(':root"'));
    expect(others).toEqual([
      {
        Sid: 'CloudWatchLogsOfThisAccount',
        Effect: 'Allow',
        Principal: { Service: { 'Fn::Join': ['', ['logs.', { Ref: 'AWS::Region' }, '.amazonaws.com']] } },
        Action: [...logsKeyServiceActions].sort(),
        Resource: '*',
        Condition: {
          ArnLike: {
            'kms:EncryptionContext:aws:logs:arn': {
              'Fn::Join': [
                '',
                [
                  'arn:',
                  { Ref: 'AWS::Partition' },
                  ':logs:',
                  { Ref: 'AWS::Region' },
                  ':',
                  { Ref: 'AWS::AccountId' },
                  ':log-group:*',
                ],
              ],
            },
          },
        },
      },
    ]);
  });

  it('let CloudWatch alarms publish to the topic encrypted under the alarms key, and no one else but IAM', () => {
    const statements = (resource(keyId('alarms')).Properties.KeyPolicy as PolicyDocument).Statement;
    const others = statements.filter((s) => !JSON.stringify(s.Principal).includes(':root"'));
    expect(others).toEqual([
      expect.objectContaining({
        Effect: 'Allow',
        Principal: { Service: 'cloudwatch.amazonaws.com' },
        Action: [...alarmsKeyServiceActions].sort(),
      }),
    ]);
    template.hasResourceProperties('AWS::SNS::Topic', {
      KmsMasterKeyId: { 'Fn::GetAtt': [keyId('alarms'), 'Arn'] },
    });
  });
});

describe('IAM', () => {
  const allowed = () =>
    ofType('AWS::IAM::Policy').flatMap(([, policy]) =>
      (policy.Properties.PolicyDocument as PolicyDocument).Statement.filter((s) => s.Effect === 'Allow'),
    );

  it('allows no wildcard action', () => {
    const actions = allowed().flatMap(actionsOf);
    expect(actions.length).toBeGreaterThan(0);
    expect(actions.filter((action) => action.includes('*'))).toEqual([]);
    expect(ofType('AWS::IAM::Role').filter(([, role]) => role.Properties.Policies !== undefined)).toEqual([]);
  });

  it("grants every function the store adapter's table actions, and no others on DynamoDB", () => {
    for (const name of ['Api', 'Scheduler', 'Verifier', 'Reaper']) {
      const dynamodb = statementsOf(functionId(name))
        .flatMap(actionsOf)
        .filter((action) => action.startsWith('dynamodb:'));
      expect(dynamodb.sort()).toEqual([...storeActions].sort());
    }
  });

  it('lets only the API function use the data key, for GenerateDataKey and Decrypt, and nobody the signer', () => {
    const kms = (name: string) =>
      statementsOf(functionId(name)).filter((statement) => actionsOf(statement).some((a) => a.startsWith('kms:')));
    const onKey = (name: string, key: string) => kms(name).filter((s) => resourceIdsOf(s).includes(keyId(key)));
    expect(onKey('Api', 'data-keys').flatMap(actionsOf).sort()).toEqual(['kms:Decrypt', 'kms:GenerateDataKey']);
    for (const name of ['Api', 'Scheduler', 'Verifier', 'Reaper']) {
      if (name !== 'Api') expect(onKey(name, 'data-keys')).toEqual([]);
      expect(onKey(name, 'payout-signer')).toEqual([]);
      // Every KMS grant names one key: the data key (API) or the table key.
      for (const statement of kms(name)) {
        expect(resourceIdsOf(statement)).toHaveLength(1);
        expect([keyId('data-keys'), keyId('table')]).toContain(resourceIdsOf(statement)[0]);
      }
    }
  });

  it('lets every function use the table key through DynamoDB alone', () => {
    for (const name of ['Api', 'Scheduler', 'Verifier', 'Reaper']) {
      const onTableKey = statementsOf(functionId(name)).filter((s) => resourceIdsOf(s).includes(keyId('table')));
      expect(onTableKey).toEqual([
        expect.objectContaining({
          Effect: 'Allow',
          Action: [...tableKeyActions],
          Condition: {
            StringEquals: {
              'kms:ViaService': { 'Fn::Join': ['', ['dynamodb.', { Ref: 'AWS::Region' }, '.amazonaws.com']] },
            },
          },
        }),
      ]);
    }
  });

  it('lets each function send to the queues its code sends to, and consume only its own queue', () => {
    const { schedule, verify } = queueNames;
    expect(queuesAllowed(functionId('Api'), 'sqs:SendMessage')).toEqual([schedule, verify]);
    expect(queuesAllowed(functionId('Scheduler'), 'sqs:SendMessage')).toEqual([deadLetterQueueOf(schedule)]);
    expect(queuesAllowed(functionId('Verifier'), 'sqs:SendMessage')).toEqual([schedule, deadLetterQueueOf(verify)]);
    expect(queuesAllowed(functionId('Reaper'), 'sqs:SendMessage')).toEqual([schedule]);
    expect(queuesAllowed(functionId('Scheduler'), 'sqs:ReceiveMessage')).toEqual([schedule]);
    expect(queuesAllowed(functionId('Verifier'), 'sqs:ReceiveMessage')).toEqual([verify]);
    for (const name of ['Api', 'Reaper']) expect(queuesAllowed(functionId(name), 'sqs:ReceiveMessage')).toEqual([]);
  });
});

/** `arn:<partition>:sqs:<region>:<account>:<prefix>-pool-*` as the template writes it. */
const poolQueueArns = (prefix: string) => ({
  'Fn::Join': [
    '',
    [
      'arn:',
      { Ref: 'AWS::Partition' },
      ':sqs:',
      { Ref: 'AWS::Region' },
      ':',
      { Ref: 'AWS::AccountId' },
      `:${prefix}-pool-*`,
    ],
  ],
});

/** Every Allow statement of every identity policy in a template, with the roles it is attached to. */
function allowStatements(resources: Record<string, Resource>): { roles: string[]; statement: Statement }[] {
  return Object.values(resources)
    .filter((resource) => resource.Type === 'AWS::IAM::Policy')
    .flatMap((policy) =>
      (policy.Properties.PolicyDocument as PolicyDocument).Statement.filter((s) => s.Effect === 'Allow').map(
        (statement) => ({ roles: (policy.Properties.Roles as { Ref: string }[]).map((r) => r.Ref), statement }),
      ),
    );
}

const variablesOf = (fn: Resource) => (fn.Properties.Environment as { Variables: Record<string, unknown> }).Variables;

describe('dispatch over SQS (the default)', () => {
  const nodeRole = () => {
    const [found, ...others] = ofType('AWS::IAM::Role').filter(([id]) => id.startsWith('DispatchNodeWorkReader'));
    if (found === undefined || others.length > 0) throw new Error('expected one NodeWorkReader role');
    return found;
  };
  const roleOf = (fn: string) => (resource(fn).Properties.Role as { 'Fn::GetAtt': [string, string] })['Fn::GetAtt'][0];
  /** The statements of the identity policies attached to a role. */
  const statementsOfRole = (role: string) =>
    allowStatements(resources)
      .filter(({ roles }) => roles.includes(role))
      .map(({ statement }) => statement);
  /** The statements of a function's policies on the pool queues. */
  const poolStatements = (fn: string) =>
    statementsOf(functionId(fn)).filter((s) => JSON.stringify(s.Resource).includes('-pool-*'));

  it('names the pool queues after the stack: lower case, at most 40 characters, distinct for long names', () => {
    expect(poolQueuePrefix('Gpuai')).toBe('gpuai');
    expect(poolQueuePrefix('GpuaiDev-2')).toBe('gpuaidev-2');
    const long = `Gpuai${'x'.repeat(60)}`;
    const [a, b] = [poolQueuePrefix(`${long}A`), poolQueuePrefix(`${long}B`)];
    for (const prefix of [a, b]) {
      expect(prefix.length).toBeLessThanOrEqual(maxPoolQueuePrefixLength);
      expect(prefix).toMatch(/^[a-z0-9-]+$/);
    }
    expect(a).not.toBe(b);
    // The longest pool name that still fits SQS's 80 characters after the longest prefix.
    expect(`${a}-pool-${'p'.repeat(25)}-0123abcd`.length).toBeLessThanOrEqual(80);
  });

  it("has a NodeWorkReader role that only the API function's role may assume, for sessions of at most an hour", () => {
    const [, role] = nodeRole();
    expect(role.Properties.MaxSessionDuration).toBe(3600);
    expect((role.Properties.AssumeRolePolicyDocument as PolicyDocument).Statement).toEqual([
      {
        Effect: 'Allow',
        Action: 'sts:AssumeRole',
        Principal: { AWS: { 'Fn::GetAtt': [roleOf(functionId('Api')), 'Arn'] } },
      },
    ]);
    expect(role.Properties.Policies).toBeUndefined();
    expect(role.Properties.ManagedPolicyArns).toBeUndefined();
  });

  it('lets NodeWorkReader sessions receive, change visibility and read attributes, on the pool queues only', () => {
    const [id] = nodeRole();
    const statements = statementsOfRole(id);
    expect(statements.flatMap(actionsOf).sort()).toEqual(
      ['sqs:ChangeMessageVisibility', 'sqs:GetQueueAttributes', 'sqs:ReceiveMessage'].sort(),
    );
    expect([...nodeQueueActions].sort()).toEqual(statements.flatMap(actionsOf).sort());
    for (const statement of statements) expect(statement.Resource).toEqual(poolQueueArns('gpuai'));
  });

  it('lets only the API function assume NodeWorkReader, and nothing else', () => {
    const [id] = nodeRole();
    const assumers = allowStatements(resources).filter(({ statement }) =>
      actionsOf(statement).includes('sts:AssumeRole'),
    );
    expect(assumers).toEqual([
      {
        roles: [roleOf(functionId('Api'))],
        statement: expect.objectContaining({ Action: 'sts:AssumeRole', Resource: { 'Fn::GetAtt': [id, 'Arn'] } }),
      },
    ]);
  });

  it('grants the API create, look up, send, delete and attributes on the pool queues; the scheduler and reaper all but delete', () => {
    const poolActions = (fn: string) => poolStatements(fn).flatMap(actionsOf).sort();
    expect(poolActions('Api')).toEqual(
      ['sqs:CreateQueue', 'sqs:DeleteMessage', 'sqs:GetQueueAttributes', 'sqs:GetQueueUrl', 'sqs:SendMessage'].sort(),
    );
    expect(poolActions('Api')).toEqual([...apiQueueActions].sort());
    for (const name of ['Scheduler', 'Reaper']) {
      expect(poolActions(name)).toEqual(
        ['sqs:CreateQueue', 'sqs:GetQueueAttributes', 'sqs:GetQueueUrl', 'sqs:SendMessage'].sort(),
      );
      expect(poolActions(name)).toEqual([...publisherQueueActions].sort());
    }
    expect(poolActions('Verifier')).toEqual([]);
  });

  it('limits every grant on run-time queues to the pool prefix, with no wildcard action', () => {
    const onPools = allowStatements(resources).filter(({ statement }) =>
      JSON.stringify(statement.Resource).includes('-pool-'),
    );
    // NodeWorkReader, Api, Scheduler, Reaper.
    expect(new Set(onPools.flatMap(({ roles }) => roles)).size).toBe(4);
    for (const { statement } of onPools) {
      expect(statement.Resource).toEqual(poolQueueArns('gpuai'));
      expect(actionsOf(statement).every((action) => action.startsWith('sqs:') && !action.includes('*'))).toBe(true);
    }
    // Creating a queue is allowed on the pool prefix alone.
    const creates = allowStatements(resources).filter(({ statement }) =>
      actionsOf(statement).includes('sqs:CreateQueue'),
    );
    expect(creates.length).toBeGreaterThan(0);
    for (const { statement } of creates) expect(statement.Resource).toEqual(poolQueueArns('gpuai'));
  });

  it('tells every function the mode, the pool-queue prefix and the role to hand nodes', () => {
    const [id] = nodeRole();
    for (const [, fn] of ofType('AWS::Lambda::Function')) {
      expect(variablesOf(fn)).toMatchObject({
        DISPATCH_MODE: 'sqs',
        POOL_QUEUE_PREFIX: 'gpuai',
        NODE_ROLE_ARN: { 'Fn::GetAtt': [id, 'Arn'] },
      });
    }
    template.hasOutput('PoolQueuePrefix', { Value: 'gpuai' });
  });

  it("derives the prefix from the stack's name", () => {
    const dev = synthesize({ 'gpuai:stackName': 'GpuaiDev' }).template;
    const devResources = dev.toJSON().Resources as Record<string, Resource>;
    for (const fn of Object.values(devResources).filter((r) => r.Type === 'AWS::Lambda::Function')) {
      expect(variablesOf(fn)).toMatchObject({ POOL_QUEUE_PREFIX: 'gpuaidev' });
    }
    const onPools = allowStatements(devResources).filter(({ statement }) =>
      JSON.stringify(statement.Resource).includes('-pool-'),
    );
    expect(onPools.length).toBeGreaterThan(0);
    for (const { statement } of onPools) expect(statement.Resource).toEqual(poolQueueArns('gpuaidev'));
  });
});

describe('dispatch by long poll (gpuai:dispatch=long-poll)', () => {
  const longPoll = () => synthesize({ 'gpuai:dispatch': 'long-poll' }).template;

  it('creates no role, grant or output for pool queues, and tells every function DISPATCH_MODE=long-poll', () => {
    const lp = longPoll();
    const lpResources = lp.toJSON().Resources as Record<string, Resource>;
    const roles = Object.keys(lpResources).filter((id) => lpResources[id]?.Type === 'AWS::IAM::Role');
    expect(roles.filter((id) => id.startsWith('Dispatch'))).toEqual([]);
    expect(roles).toHaveLength(4);
    expect(JSON.stringify(lpResources)).not.toContain('-pool-');
    const actions = allowStatements(lpResources).flatMap(({ statement }) => actionsOf(statement));
    expect(actions).not.toContain('sts:AssumeRole');
    expect(actions).not.toContain('sqs:CreateQueue');
    const functions = Object.values(lpResources).filter((r) => r.Type === 'AWS::Lambda::Function');
    expect(functions).toHaveLength(4);
    for (const fn of functions) {
      expect(variablesOf(fn)).toMatchObject({ DISPATCH_MODE: 'long-poll' });
      expect(Object.keys(variablesOf(fn))).not.toEqual(expect.arrayContaining(['POOL_QUEUE_PREFIX']));
      expect(Object.keys(variablesOf(fn))).not.toEqual(expect.arrayContaining(['NODE_ROLE_ARN']));
    }
    expect(Object.keys(lp.toJSON().Outputs as Record<string, unknown>)).not.toContain('PoolQueuePrefix');
  });
});

describe('the alarms', () => {
  const alarms = () => ofType('AWS::CloudWatch::Alarm').map(([, alarm]) => alarm.Properties);

  it('fire on any message in a dead-letter queue', () => {
    const deadLetterQueues = queueDefinitions.flatMap((q) => q.deadLetterQueue ?? []);
    expect(deadLetterQueues).toHaveLength(2);
    for (const name of deadLetterQueues) {
      expect(alarms()).toContainEqual(
        expect.objectContaining({
          Namespace: 'AWS/SQS',
          MetricName: 'ApproximateNumberOfMessagesVisible',
          Dimensions: [{ Name: 'QueueName', Value: { 'Fn::GetAtt': [queueId(name), 'QueueName'] } }],
          Threshold: 0,
          ComparisonOperator: 'GreaterThanThreshold',
        }),
      );
    }
  });

  it("fire on every function's errors and throttles, and on the API's 5xx", () => {
    for (const name of ['Api', 'Scheduler', 'Verifier', 'Reaper']) {
      for (const metric of ['Errors', 'Throttles']) {
        expect(alarms()).toContainEqual(
          expect.objectContaining({
            Namespace: 'AWS/Lambda',
            MetricName: metric,
            Dimensions: [{ Name: 'FunctionName', Value: { Ref: functionId(name) } }],
          }),
        );
      }
    }
    expect(alarms()).toContainEqual(expect.objectContaining({ Namespace: 'AWS/ApiGateway', MetricName: '5xx' }));
  });

  it('notify the alarm topic', () => {
    const [[topic] = ['']] = ofType('AWS::SNS::Topic');
    for (const alarm of alarms()) expect(alarm.AlarmActions).toEqual([{ Ref: topic }]);
  });
});

describe('the outputs', () => {
  it('name the API URL, the table and every queue', () => {
    const outputs = Object.keys(template.toJSON().Outputs as Record<string, unknown>);
    expect(outputs).toEqual(
      expect.arrayContaining([
        'ApiUrl',
        'TableName',
        'ScheduleQueueUrl',
        'ScheduleDlqQueueUrl',
        'VerifyQueueUrl',
        'VerifyDlqQueueUrl',
      ]),
    );
  });
});

describe('the CDK context', () => {
  it('is validated, naming the bad key', () => {
    expect(() => synthesize({ 'gpuai:leaseMs': 'long' })).toThrow(/gpuai:leaseMs/);
    expect(() => synthesize({ 'gpuai:heartbeatBusyMs': 30_000 })).toThrow(
      /gpuai:heartbeatBusyMs: must be below gpuai:leaseMs/,
    );
    expect(() => synthesize({ 'gpuai:dispatch': 'websocket' })).toThrow(/gpuai:dispatch/);
    expect(() => synthesize({ 'gpuai:apiConcurrency': 0 })).toThrow(/gpuai:apiConcurrency/);
  });

  it('takes an OIDC issuer over https only, with an audience, and a tenant claim only with an issuer', () => {
    const issuer = 'https://login.example.com/realms/gpuai';
    expect(() => synthesize({ 'gpuai:oidcIssuer': issuer })).toThrow(/gpuai:oidcAudience: .*set both or neither/);
    expect(() => synthesize({ 'gpuai:oidcAudience': 'gpuai' })).toThrow(/gpuai:oidcAudience/);
    expect(() => synthesize({ 'gpuai:oidcIssuer': 'http://login.example.com', 'gpuai:oidcAudience': 'a' })).toThrow(
      /gpuai:oidcIssuer/,
    );
    expect(() => synthesize({ 'gpuai:oidcIssuer': issuer, 'gpuai:oidcAudience': ' , ' })).toThrow(/gpuai:oidcAudience/);
    expect(() => synthesize({ 'gpuai:oidcTenantClaim': 'tenant' })).toThrow(
      /gpuai:oidcTenantClaim: needs gpuai:oidcIssuer/,
    );
    // cdk.json gives a list as an array.
    const fromJson = synthesize({ 'gpuai:oidcIssuer': issuer, 'gpuai:oidcAudience': ['a', 'b'] }).template;
    fromJson.hasResourceProperties('AWS::ApiGatewayV2::Authorizer', { JwtConfiguration: { Audience: ['a', 'b'] } });
  });

  it('subscribes the alarm email when one is given', () => {
    synthesize({ 'gpuai:alarmEmail': 'ops@example.com' }).template.hasResourceProperties('AWS::SNS::Subscription', {
      Protocol: 'email',
      Endpoint: 'ops@example.com',
    });
  });
});

/**
 * The one synth that bundles, as `npx cdk synth` does: esbuild turns each handler into an ES
 * module, which must load in Node and export `handler` (a missing env variable or a CommonJS
 * dependency that calls require() would fail here, not in Lambda).
 */
describe('cdk synth with esbuild bundling (slow: runs esbuild for each function)', () => {
  const outdir = mkdtempSync(join(tmpdir(), 'gpuai-cdk-'));
  afterAll(() => {
    vi.unstubAllEnvs();
    rmSync(outdir, { recursive: true, force: true });
  });

  it('bundles every handler into an ES module that loads and exports handler', async () => {
    const { app, template: bundled } = synthesize({}, { bundle: true, outdir });
    app.synth();
    const environment = {
      AWS_REGION: 'eu-west-1',
      TABLE_NAME: 'table',
      KEY_ID: 'key',
      LEASE_MS: '30000',
      HEARTBEAT_IDLE_MS: '30000',
      HEARTBEAT_BUSY_MS: '10000',
      DISPATCH_MODE: 'sqs',
      POOL_QUEUE_PREFIX: 'gpuai',
      NODE_ROLE_ARN: 'arn:aws:iam::1:role/node-work-reader',
      QUEUE_URLS: JSON.stringify(
        Object.fromEntries(queueDefinitions.map(({ name }) => [name, `https://sqs.eu-west-1.amazonaws.com/1/${name}`])),
      ),
    };
    for (const [name, value] of Object.entries(environment)) vi.stubEnv(name, value);
    const functions = Object.values(bundled.findResources('AWS::Lambda::Function')) as Resource[];
    const code = functions.map((fn) => (fn.Properties.Code as { S3Key: string }).S3Key.replace(/\.zip$/, ''));
    expect(code).toHaveLength(4);
    for (const hash of code) {
      const bundle = join(outdir, `asset.${hash}`, 'index.mjs');
      expect(existsSync(`${bundle}.map`)).toBe(true);
      const module = (await import(pathToFileURL(bundle).href)) as { handler?: unknown };
      expect(typeof module.handler).toBe('function');
    }
    // esbuild bundles four functions: seconds alone, a minute or more on a loaded machine.
  }, 180_000);
});
