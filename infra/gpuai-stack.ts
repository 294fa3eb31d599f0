import { CfnOutput, Stack, type StackProps } from 'aws-cdk-lib';
import type { Construct } from 'constructs';
import { queueDefinitions } from '../functions/workers/queues.js';
import { Api } from './constructs/api.js';
import { Data } from './constructs/data.js';
import { Dispatch, type DispatchMode } from './constructs/dispatch.js';
import { Keys } from './constructs/keys.js';
import { Observability } from './constructs/observability.js';
import { pascalCase, Queues } from './constructs/queues.js';
import { consumerTimeout, Workers } from './constructs/workers.js';

/** What an operator chooses per deployment; infra/context.ts reads it from the CDK context. */
export interface GpuaiSettings {
  /**
   * Keep the table, the keys and the logs when the stack is destroyed, and protect the table from
   * deletion. Only a throwaway development stack turns this off.
   */
  retainData: boolean;
  /** Lease length and heartbeat intervals (idle, busy) of the control plane, as in the embedded deployment. */
  leaseMs: number;
  heartbeatIdleMs: number;
  heartbeatBusyMs: number;
  /** API Gateway's limits for the whole API, in requests per second. */
  apiRateLimit: number;
  apiBurstLimit: number;
  /** Where alarms are emailed; none when absent (subscribe to the AlarmTopic output instead). */
  alarmEmail?: string;
  /** How agents learn of work: their pools' SQS queues (`sqs`) or the API function's long poll. */
  dispatch: DispatchMode;
  /**
   * Concurrency reserved for the API function: its ceiling, and what other functions of the account
   * cannot take from it. In the `long-poll` dispatch mode each waiting agent holds one for up to 20 s.
   */
  apiConcurrency: number;
  /**
   * An OIDC issuer whose tokens API Gateway verifies on the application routes, the audiences it
   * accepts, and the claim that names the tenant (given to the API function as
   * `GPUAI_OIDC_TENANT_CLAIM`). Without it, API keys alone authenticate application requests.
   */
  oidc?: { issuer: string; audience: readonly string[]; tenantClaim: string };
}

export interface GpuaiStackProps extends StackProps {
  settings: GpuaiSettings;
}

/**
 * The GPUAI control plane on AWS: one construct per concern, wired here. docs/deploy.md says how
 * to deploy, configure and remove it.
 *
 * ```
 *  agents, apps ──HTTPS──► HTTP API ──► Api fn ──┬──► DynamoDB table ◄──┬── Scheduler fn ◄── schedule queue
 *                                                ├──► KMS data keys     ├── Verifier fn  ◄── verify queue
 *                                                └──► schedule/verify   └── Reaper fn    ◄── every minute
 *
 *  agents ──SQS long poll (NodeWorkReader session)──► pool queues ◄── hints: Api, Scheduler, Reaper fns
 * ```
 */
export class GpuaiStack extends Stack {
  constructor(scope: Construct, id: string, props: GpuaiStackProps) {
    super(scope, id, props);
    const { settings } = props;
    const retain = settings.retainData;

    const keys = new Keys(this, 'Keys', { retain });
    const data = new Data(this, 'Data', { retain, key: keys.table });
    const queues = new Queues(this, 'Queues', { consumerTimeout });
    const workers = new Workers(this, 'Workers', {
      data,
      queues,
      dataKeys: keys.dataKeys,
      leaseMs: settings.leaseMs,
      heartbeatIdleMs: settings.heartbeatIdleMs,
      heartbeatBusyMs: settings.heartbeatBusyMs,
      retainLogs: retain,
      logsKey: keys.logs,
      apiConcurrency: settings.apiConcurrency,
      ...(settings.oidc === undefined
        ? {}
        : { apiEnvironment: { GPUAI_OIDC_TENANT_CLAIM: settings.oidc.tenantClaim } }),
    });
    const dispatch = new Dispatch(this, 'Dispatch', {
      mode: settings.dispatch,
      api: workers.api,
      publishers: [workers.scheduler, workers.reaper],
      functions: workers.all,
    });
    const api = new Api(this, 'Api', {
      handler: workers.api,
      throttle: { rateLimit: settings.apiRateLimit, burstLimit: settings.apiBurstLimit },
      retainLogs: retain,
      logsKey: keys.logs,
      ...(settings.oidc === undefined
        ? {}
        : { oidc: { issuer: settings.oidc.issuer, audience: settings.oidc.audience } }),
    });
    const deadLetterQueueNames = new Set(queueDefinitions.flatMap((q) => q.deadLetterQueue ?? []));
    const observability = new Observability(this, 'Observability', {
      deadLetterQueues: new Map([...deadLetterQueueNames].map((name) => [name, queues.queue(name)])),
      functions: new Map(workers.all.map((fn) => [fn.node.id, fn])),
      api: api.httpApi,
      topicKey: keys.alarms,
      ...(settings.alarmEmail === undefined ? {} : { alarmEmail: settings.alarmEmail }),
    });

    new CfnOutput(this, 'ApiUrl', { value: api.url, description: 'Point agents and the CLI here (--api)' });
    new CfnOutput(this, 'TableName', { value: data.table.tableName });
    for (const [name, queue] of queues.byName) {
      new CfnOutput(this, `${pascalCase(name)}QueueUrl`, { value: queue.queueUrl });
    }
    new CfnOutput(this, 'DataKeysArn', { value: keys.dataKeys.keyArn });
    new CfnOutput(this, 'PayoutSignerKeyArn', { value: keys.payoutSigner.keyArn });
    new CfnOutput(this, 'AlarmTopicArn', { value: observability.alarmTopic.topicArn });
    if (dispatch.poolQueuePrefix !== undefined) {
      new CfnOutput(this, 'PoolQueuePrefix', {
        value: dispatch.poolQueuePrefix,
        description: 'The pool queues, created at run time, are named <prefix>-pool-...',
      });
    }
  }
}
