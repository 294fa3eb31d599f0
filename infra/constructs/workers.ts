import { fileURLToPath } from 'node:url';
import { Duration, RemovalPolicy, Stack } from 'aws-cdk-lib';
import { Rule, Schedule } from 'aws-cdk-lib/aws-events';
import { LambdaFunction } from 'aws-cdk-lib/aws-events-targets';
import type { IKey } from 'aws-cdk-lib/aws-kms';
import { Architecture, LoggingFormat, Runtime } from 'aws-cdk-lib/aws-lambda';
import { SqsEventSource } from 'aws-cdk-lib/aws-lambda-event-sources';
import { NodejsFunction, OutputFormat } from 'aws-cdk-lib/aws-lambda-nodejs';
import { LogGroup, RetentionDays } from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';
import { queueNames } from '../../functions/domain/scheduling/messages.js';
import { deadLetterQueueOf } from '../../functions/workers/queues.js';
import { type CheckovSkip, skipCheckov } from './checkov.js';
import type { Data } from './data.js';
import type { Queues } from './queues.js';

/** The timeout of the queue consumers; the work queues' visibility timeout is six times this. */
export const consumerTimeout = Duration.seconds(30);

/**
 * The API function's timeout: above the 20 s a long poll may wait, below API Gateway's 30 s
 * integration limit, so a stuck request ends in the function's own logs rather than as a bare 503.
 */
const apiTimeout = Duration.seconds(28);

/**
 * The concurrency reserved for each worker. The queue consumers' event sources poll with at most
 * as many concurrent batches (SQS `maxConcurrency`), so SQS never hands a batch to a function that
 * has no room for it: a throttled batch would go back to the queue and count as a receive towards
 * the dead-letter queue. The reaper runs one tick at a time: two reapers would only race each other.
 */
export const workerConcurrency = { scheduler: 5, verifier: 5, reaper: 1 } as const;

/** checkov findings that hold for every function, with the reason they do not apply. */
const functionCheckovSkips: CheckovSkip[] = [
  {
    id: 'CKV_AWS_117',
    comment:
      'the functions reach only AWS APIs (DynamoDB, SQS, KMS, STS, CloudWatch) over TLS with IAM credentials and serve no network port; a VPC would add NAT or five interface endpoints to pay for without narrowing what they can reach',
  },
  {
    id: 'CKV_AWS_173',
    comment:
      'the environment holds no secret, only resource names, ARNs, URLs and timings; Lambda encrypts it at rest with its own key, and a customer managed key would protect nothing more',
  },
];

/** The service name in every structured log line (Powertools' `service` field). */
const serviceName = 'gpuai';

export interface WorkersProps {
  data: Data;
  queues: Queues;
  /** The symmetric key that wraps job data keys. */
  dataKeys: IKey;
  /** Control plane timings; every function gets the same, so the API and the reaper agree on leases. */
  leaseMs: number;
  heartbeatIdleMs: number;
  heartbeatBusyMs: number;
  retainLogs: boolean;
  /** Encrypts every function's log group; its key policy lets CloudWatch Logs use it. */
  logsKey: IKey;
  /** The concurrency reserved for the API function (CDK context `gpuai:apiConcurrency`). */
  apiConcurrency: number;
  /** Extra environment of the API function alone (the OIDC tenant claim). */
  apiEnvironment?: Readonly<Record<string, string>>;
}

const repositoryRoot = fileURLToPath(new URL('../../', import.meta.url));
const handlersDir = fileURLToPath(new URL('../../functions/handlers/', import.meta.url));

/**
 * Every Lambda function of the control plane (the API's included) and what triggers the workers:
 * the `schedule` and `verify` queues through SQS event sources that report partial batch failures,
 * and the reaper through an EventBridge rule once a minute.
 *
 * Each function is bundled locally by esbuild into one minified ES module with a source map, the
 * AWS SDK included, so the code runs against the SDK versions it was tested with rather than the
 * runtime's.
 *
 * Each function gets exactly the access its code paths use: the store adapter's item actions on
 * the table; send on the queues the domain sends to (named beside each grant); the data key's
 * GenerateDataKey and Decrypt for the API alone, which seals job secrets on submit and opens them
 * on dispatch.
 */
export class Workers extends Construct {
  readonly api: NodejsFunction;
  readonly scheduler: NodejsFunction;
  readonly verifier: NodejsFunction;
  readonly reaper: NodejsFunction;

  constructor(scope: Construct, id: string, props: WorkersProps) {
    super(scope, id);
    const { queues } = props;
    const environment = {
      TABLE_NAME: props.data.table.tableName,
      QUEUE_URLS: Stack.of(this).toJsonString(queues.urls()),
      KEY_ID: props.dataKeys.keyArn,
      LEASE_MS: String(props.leaseMs),
      HEARTBEAT_IDLE_MS: String(props.heartbeatIdleMs),
      HEARTBEAT_BUSY_MS: String(props.heartbeatBusyMs),
      POWERTOOLS_SERVICE_NAME: serviceName,
      POWERTOOLS_METRICS_NAMESPACE: 'GPUAI',
      POWERTOOLS_LOG_LEVEL: 'INFO',
      NODE_OPTIONS: '--enable-source-maps',
    };
    const handler = (
      name: string,
      file: string,
      timeout: Duration,
      reservedConcurrentExecutions: number,
      deadLetterReason: string,
      extraEnvironment: Readonly<Record<string, string>> = {},
    ) => {
      const fn = new NodejsFunction(this, name, {
        entry: `${handlersDir}${file}`,
        handler: 'handler',
        runtime: Runtime.NODEJS_22_X,
        architecture: Architecture.ARM_64,
        memorySize: 512,
        timeout,
        reservedConcurrentExecutions,
        environment: { ...environment, ...extraEnvironment },
        loggingFormat: LoggingFormat.JSON,
        logGroup: new LogGroup(this, `${name}Logs`, {
          retention: RetentionDays.ONE_MONTH,
          encryptionKey: props.logsKey,
          removalPolicy: props.retainLogs ? RemovalPolicy.RETAIN : RemovalPolicy.DESTROY,
        }),
        projectRoot: repositoryRoot,
        depsLockFilePath: `${repositoryRoot}package-lock.json`,
        bundling: {
          forceDockerBundling: false,
          format: OutputFormat.ESM,
          target: 'node22',
          mainFields: ['module', 'main'],
          minify: true,
          sourceMap: true,
          bundleAwsSDK: true,
          // Bundled CommonJS dependencies may still call require(); an ES module has none of its own.
          banner: "import { createRequire } from 'node:module'; const require = createRequire(import.meta.url);",
        },
      });
      skipCheckov(fn, { id: 'CKV_AWS_116', comment: deadLetterReason }, ...functionCheckovSkips);
      return fn;
    };

    this.api = handler(
      'Api',
      'api.ts',
      apiTimeout,
      props.apiConcurrency,
      'API Gateway invokes this function synchronously and answers its failures as 5xx (alarmed); a Lambda dead-letter queue only ever receives failed asynchronous invocations, so it would stay empty',
      props.apiEnvironment,
    );
    const consumerDeadLetters =
      'invoked synchronously by an SQS event source mapping: a message that keeps failing goes to its queue redrive dead-letter queue (schedule-dlq, verify-dlq, alarmed), which a Lambda dead-letter queue would not see';
    this.scheduler = handler(
      'Scheduler',
      'scheduler.ts',
      consumerTimeout,
      workerConcurrency.scheduler,
      consumerDeadLetters,
    );
    this.verifier = handler(
      'Verifier',
      'verifier.ts',
      consumerTimeout,
      workerConcurrency.verifier,
      consumerDeadLetters,
    );
    // Under the one-minute schedule, so ticks do not pile up when one is slow.
    this.reaper = handler(
      'Reaper',
      'reaper.ts',
      Duration.seconds(50),
      workerConcurrency.reaper,
      'the EventBridge schedule event carries no data: a failed tick is not retried on purpose, the next tick a minute later re-reads the same state from the table, and failures raise the Errors alarm; a dead-letter queue would collect empty schedule events',
    );

    for (const fn of this.all) {
      props.data.grantStore(fn);
    }
    props.dataKeys.grant(this.api, 'kms:GenerateDataKey', 'kms:Decrypt');

    const schedule = queues.queue(queueNames.schedule);
    const verify = queues.queue(queueNames.verify);
    // API: JobService.submit and TaskReports (a failed attempt re-queued) send to schedule,
    // TaskReports (a reported result) to verify.
    schedule.grantSendMessages(this.api);
    verify.grantSendMessages(this.api);
    // Verifier: a rejected result re-queues its task. Reaper: expired leases, and the verifier's
    // path for overdue verifications.
    schedule.grantSendMessages(this.verifier);
    schedule.grantSendMessages(this.reaper);
    // Consumers park a message no redelivery can fix in their own dead-letter queue.
    queues.queue(deadLetterQueueOf(queueNames.schedule)).grantSendMessages(this.scheduler);
    queues.queue(deadLetterQueueOf(queueNames.verify)).grantSendMessages(this.verifier);

    // The event sources grant the consumers receive, delete and change-visibility on their queue.
    this.scheduler.addEventSource(
      new SqsEventSource(schedule, {
        batchSize: 10,
        reportBatchItemFailures: true,
        maxConcurrency: workerConcurrency.scheduler,
      }),
    );
    this.verifier.addEventSource(
      new SqsEventSource(verify, {
        batchSize: 10,
        reportBatchItemFailures: true,
        maxConcurrency: workerConcurrency.verifier,
      }),
    );

    new Rule(this, 'ReaperSchedule', {
      description: 'Runs the GPUAI reaper once a minute',
      schedule: Schedule.rate(Duration.minutes(1)),
      // A failed tick is not retried: the next one, a minute later, re-reads the same state.
      targets: [new LambdaFunction(this.reaper, { retryAttempts: 0, maxEventAge: Duration.minutes(1) })],
    });
  }

  /** Every function, for grants and alarms that apply to all. */
  get all(): NodejsFunction[] {
    return [this.api, this.scheduler, this.verifier, this.reaper];
  }
}
