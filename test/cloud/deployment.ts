import { randomBytes } from 'node:crypto';
import { inject } from 'vitest';
import { awsClients } from '../../functions/adapters/aws/clients.js';
import { createTable } from '../../functions/adapters/aws/dynamodb-store.js';
import { createDataKeyKey } from '../../functions/adapters/aws/kms-keys.js';
import { createQueues } from '../../functions/adapters/aws/sqs-queue.js';
import { queueDefinitions } from '../../functions/workers/queues.js';
import { type EmulatorEndpoints, emulatorCredentials } from '../emulators/emulators.js';
import { Meter, startCountingProxy } from './harness.js';

/**
 * What `cdk deploy` would create, on the emulators: a table, the queues with their dead-letter
 * queues and a KMS key, plus the Lambda environment pointing at them through request-counting
 * proxies. Names are unique per call, so test files can share the emulators.
 */
export async function deployToEmulators(settings: {
  leaseMs: number;
  /** Both heartbeat intervals, idle and busy (tests beat as often when idle as when busy). */
  heartbeatMs: number;
  recheckMs: number;
  /** `sqs`: agents long-poll pool queues with STS credentials and claim through the API. */
  dispatch?: 'long-poll' | 'sqs';
  /** The regions nodes may report (`NODE_REGIONS`): `*` or comma-separated slugs; default the canonical list. */
  regions?: string;
  /** Rate limits over the defaults (`RATE_LIMITS`), `scope=limit/seconds,...`; a limit of 0 turns a scope off. */
  rateLimits?: string;
  /** Where the emulators answer; default: the vitest global setup's (outside vitest, e.g. `npm run chaos`, pass them). */
  endpoints?: EmulatorEndpoints;
}) {
  const endpoints = settings.endpoints ?? inject('awsEndpoints');
  const setup = awsClients({ region: 'us-east-1', endpoints, credentials: emulatorCredentials });
  const suffix = randomBytes(4).toString('hex');
  const tableName = `gpuai-${suffix}`;
  await createTable(setup.dynamodb, tableName);
  const named = queueDefinitions.map((d) => ({
    ...d,
    name: `${d.name}-${suffix}`,
    ...(d.deadLetterQueue === undefined ? {} : { deadLetterQueue: `${d.deadLetterQueue}-${suffix}` }),
  }));
  const created = await createQueues(setup.sqs, named);
  const queueUrls = Object.fromEntries(queueDefinitions.map((d) => [d.name, created[`${d.name}-${suffix}`] as string]));
  const keyId = await createDataKeyKey(setup.kms);

  const meter = new Meter();
  const proxies = await Promise.all([
    startCountingProxy(endpoints.dynamodb, meter),
    startCountingProxy(endpoints.sqs, meter),
    startCountingProxy(endpoints.kms, meter),
  ]);
  const [dynamodbProxy, sqsProxy, kmsProxy] = proxies;
  Object.assign(process.env, {
    AWS_REGION: 'us-east-1',
    AWS_ACCESS_KEY_ID: emulatorCredentials.accessKeyId,
    AWS_SECRET_ACCESS_KEY: emulatorCredentials.secretAccessKey,
    TABLE_NAME: tableName,
    QUEUE_URLS: JSON.stringify(queueUrls),
    KEY_ID: keyId,
    LEASE_MS: String(settings.leaseMs),
    HEARTBEAT_IDLE_MS: String(settings.heartbeatMs),
    HEARTBEAT_BUSY_MS: String(settings.heartbeatMs),
    RECHECK_MS: String(settings.recheckMs),
    GPUAI_DYNAMODB_ENDPOINT: dynamodbProxy?.url,
    GPUAI_SQS_ENDPOINT: sqsProxy?.url,
    GPUAI_KMS_ENDPOINT: kmsProxy?.url,
    POWERTOOLS_LOG_LEVEL: 'ERROR',
    // Enrollment is not what the cloud suites test: their agents join without a token.
    GPUAI_ENROLLMENT: 'open',
    DISPATCH_MODE: settings.dispatch ?? 'long-poll',
    ...(settings.regions === undefined ? {} : { NODE_REGIONS: settings.regions }),
    ...(settings.rateLimits === undefined ? {} : { RATE_LIMITS: settings.rateLimits }),
    ...(settings.dispatch === 'sqs'
      ? {
          POOL_QUEUE_PREFIX: `gpuai-${suffix}`,
          NODE_ROLE_ARN: 'arn:aws:iam::123456789012:role/NodeWorkReader',
          // moto serves STS on the same port as SQS; through the proxy, its calls are counted too.
          GPUAI_STS_ENDPOINT: sqsProxy?.url,
        }
      : {}),
  });
  // The event source mappings poll SQS through the counting proxy too: those requests are billed.
  const counted = awsClients({
    region: 'us-east-1',
    endpoints: { sqs: sqsProxy?.url ?? endpoints.sqs },
    credentials: emulatorCredentials,
  });
  return {
    meter,
    queueUrls,
    sqs: counted.sqs,
    tableName,
    endpoints,
    dynamodbOutage: (on: boolean) => dynamodbProxy?.outage(on),
    /** Throttle rules of this deployment's own proxies (off until a fraction is set). */
    throttles: { dynamodb: dynamodbProxy?.throttle, kms: kmsProxy?.throttle },
    close: async () => {
      await Promise.all(proxies.map((p) => p.close()));
    },
  };
}
