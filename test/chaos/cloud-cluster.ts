import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { DynamoDBClient } from '@aws-sdk/client-dynamodb';
import { SendMessageCommand } from '@aws-sdk/client-sqs';
import type { APIGatewayProxyEventV2, APIGatewayProxyStructuredResultV2, Context, SQSEvent } from 'aws-lambda';
import { awsClients } from '../../functions/adapters/aws/clients.js';
import { queueNames } from '../../functions/domain/scheduling/messages.js';
import { taskIdOf } from '../../protocol/index.js';
import { deployToEmulators } from '../cloud/deployment.js';
import { lambdaContext, startApiGateway, startEventSource } from '../cloud/harness.js';
import { type EmulatorEndpoints, emulatorCredentials, type ThrottleRule } from '../emulators/emulators.js';
import { startFaultProxy } from '../support/fault-proxy.js';
import type { Proc } from '../support/processes.js';
import { openTaskCountOf, readDynamoDbState } from './dynamodb-state.js';
import { type ChaosAgent, SmallDisk, spawnChaosAgent } from './embedded-cluster.js';
import type { StoredState } from './invariants.js';
import { isServerDefect } from './run-core.js';

/**
 * The cloud deployment's timings in the chaos run. Slower than the embedded run's (3 s lease,
 * 500 ms heartbeats): every DynamoDB request goes through moto one at a time (test/emulators), some
 * 20 a second on a loaded 2-core machine, and heartbeats every 500 ms plus long polls rechecking
 * every 250 ms took most of that before a single task ran (measured: 0.24 tasks/s).
 */
export const cloudLeaseMs = 5000;
const heartbeatMs = 1500;
const recheckMs = 1000;

export interface CloudClusterOptions {
  root: string;
  endpoints: EmulatorEndpoints;
  agents: number;
  slots: number;
  /** Agents whose clock is skewed (+30 s, -30 s alternating). */
  skewedAgents: number;
  /** Give one agent a small disk that faults can fill (needs root). */
  smallDisk: boolean;
  dispatch: 'long-poll' | 'sqs';
  random: () => number;
  log?: (line: string) => void;
}

/**
 * The cloud deployment on the emulators, as the cloud lifecycle suite runs it: the real Lambda
 * handlers in this process (api behind a local API Gateway, scheduler and verifier fed by SQS event
 * source mappings, the reaper on a timer) over DynamoDB, SQS and KMS (moto, local-kms) through
 * this deployment's own proxies, whose throttle rules the run switches; real agent processes, each
 * through its own fault proxy. The gateway keeps every 5xx the handlers answer, whoever asked.
 */
export class CloudCluster {
  readonly agents: ChaosAgent[] = [];
  readonly disks: SmallDisk[] = [];
  readonly unexpectedExits: string[] = [];
  /** 5xx answers of the api handler that are defects (a 500 above all), with their request. */
  readonly serverErrors: string[] = [];
  /** 503s with Retry-After the api handler answered: a dependency throttled past its retries. */
  unavailable = 0;
  readonly unavailableExamples: string[] = [];
  /** Queue batches still to deliver a second time (the duplicate-messages fault arms it). */
  duplicateBatches = 0;
  /** Messages delivered a second time. */
  duplicatesDelivered = 0;
  url = '';
  apiKey = '';
  throttles!: { dynamodb: ThrottleRule; kms: ThrottleRule };
  private deployment!: Awaited<ReturnType<typeof deployToEmulators>>;
  private observer!: DynamoDBClient;
  private readonly stops: (() => Promise<unknown>)[] = [];
  private readonly redeliveries = new Set<Promise<unknown>>();
  private lastCount: { at: number; open: number } | undefined;

  constructor(readonly options: CloudClusterOptions) {}

  async start(): Promise<void> {
    this.deployment = await deployToEmulators({
      leaseMs: cloudLeaseMs,
      heartbeatMs,
      recheckMs,
      dispatch: this.options.dispatch,
      endpoints: this.options.endpoints,
      // One submitter and many agents behind one emulated gateway address: the abuse limits and
      // quotas are not under test here.
      rateLimits: 'address=0/60,key=0/60,node=0/60,register=0/60,registerGlobal=0/60',
    });
    this.stops.push(this.deployment.close);
    process.env.QUOTAS = 'maxOpenTasks=100000000,gpuHoursPerDay=100000000';
    // Thousands of EMF metric lines on stdout would bury the run's own output.
    process.env.POWERTOOLS_METRICS_DISABLED = 'true';
    const { dynamodb, kms } = this.deployment.throttles;
    if (dynamodb === undefined || kms === undefined) throw new Error('the deployment has no throttling proxies');
    this.throttles = { dynamodb, kms };
    this.observer = awsClients({
      region: 'us-east-1',
      endpoints: { dynamodb: this.options.endpoints.dynamodb },
      credentials: emulatorCredentials,
    }).dynamodb;

    const { handler: apiHandler } = await import('../../functions/handlers/api.js');
    const { handler: scheduler } = await import('../../functions/handlers/scheduler.js');
    const { handler: verifier } = await import('../../functions/handlers/verifier.js');
    const { handler: reaper } = await import('../../functions/handlers/reaper.js');

    const gateway = await startApiGateway(
      this.tallied(
        // hono's and @types/aws-lambda's event types disagree under strict tsc (TOOLCHAIN.md).
        apiHandler as unknown as ApiHandler,
      ),
      this.deployment.meter,
    );
    this.stops.push(gateway.close);
    this.url = gateway.url;
    for (const [queue, handler] of [
      [queueNames.schedule, scheduler],
      [queueNames.verify, verifier],
    ] as const) {
      const source = startEventSource(
        this.deployment.sqs,
        this.deployment.queueUrls[queue] as string,
        queue,
        this.duplicating(queue, handler as unknown as SqsHandler),
        this.deployment.meter,
      );
      this.stops.push(source.stop);
    }
    // One reaper tick at a time (as a schedule slower than the ticks would give); a throttled tick
    // fails and the next one does its work.
    let ticking = false;
    const tick = setInterval(() => {
      if (ticking) return;
      ticking = true;
      reaper(scheduledEvent(), lambdaContext('reaper'))
        .catch(() => undefined)
        .finally(() => {
          ticking = false;
        });
    }, 500);
    this.stops.push(async () => clearInterval(tick));

    const { controlPlane } = await import('../../functions/handlers/config.js');
    const { key } = await controlPlane().apiKeys.create({ tenant: 'chaos', scopes: ['submit', 'read'] });
    this.apiKey = key;

    for (let i = 0; i < this.options.agents; i++) {
      const skewMs = i < this.options.skewedAgents ? (i % 2 === 0 ? 30_000 : -30_000) : 0;
      const dataDir = join(this.options.root, `agent-${i}`);
      mkdirSync(dataDir, { recursive: true });
      let smallDisk: SmallDisk | undefined;
      if (this.options.smallDisk && i === this.options.agents - 1) {
        smallDisk = SmallDisk.mount(join(this.options.root, `agent-${i}-tmp`));
        if (smallDisk) this.disks.push(smallDisk);
      }
      const agent: ChaosAgent = {
        name: `chaos-cloud-agent-${i}`,
        dataDir,
        proxy: await startFaultProxy(this.url),
        skewMs,
        ...(smallDisk === undefined ? {} : { smallDisk }),
        proc: undefined as unknown as Proc,
        restarts: 0,
      };
      agent.proc = this.spawnAgent(agent);
      this.agents.push(agent);
    }
  }

  spawnAgent(agent: ChaosAgent): Proc {
    return spawnChaosAgent(agent, this.options.slots, (line) => {
      this.unexpectedExits.push(line);
      this.options.log?.(line);
    });
  }

  /** SIGKILL an agent; `downMs` later it starts again with the same identity. */
  async killAgent(agent: ChaosAgent, downMs: number): Promise<void> {
    await agent.proc.kill('SIGKILL');
    await new Promise((r) => setTimeout(r, downMs));
    agent.proc = this.spawnAgent(agent);
    agent.restarts++;
  }

  /** Handler invocations and time, and AWS requests by operation, for the report. */
  usage(): string[] {
    const { meter } = this.deployment;
    const handlers = [...meter.invocations]
      .sort((a, b) => b[1].ms - a[1].ms)
      .slice(0, 8)
      .map(([name, { count, ms }]) => `${name} ${count}x ${Math.round(ms / count)} ms`);
    const requests = [...meter.requests].sort((a, b) => b[1] - a[1]).map(([op, n]) => `${op} ${n}`);
    return [`handlers: ${handlers.join(', ')}`, `AWS requests: ${requests.join(', ')}`];
  }

  /** The whole table, read directly (not through the throttled proxies). */
  readState(): Promise<StoredState> {
    return readDynamoDbState(this.observer, this.deployment.tableName);
  }

  /** Open tasks, scanned at most every 3 s (a scan competes with the run for moto). */
  async openTasks(): Promise<number> {
    if (this.lastCount !== undefined && Date.now() - this.lastCount.at < 3000) return this.lastCount.open;
    const open = await openTaskCountOf(this.observer, this.deployment.tableName);
    this.lastCount = { at: Date.now(), open };
    return open;
  }

  /**
   * Stale and duplicate triggers sent straight to the queues, some delayed (so they arrive out of
   * order): a schedule message for a job already routed, verify messages for attempts that are not
   * (or no longer) the reported one. Returns how many were sent.
   */
  async sendStaleTriggers(accepted: readonly string[], random: () => number): Promise<number> {
    let sent = 0;
    for (let i = 0; i < 3 && accepted.length > 0; i++) {
      const jobId = accepted[Math.floor(random() * accepted.length)] as string;
      const attempt = 1 + Math.floor(random() * 3);
      for (const [queue, body] of [
        [queueNames.schedule, { jobId }],
        [queueNames.verify, { taskId: taskIdOf(jobId, 0), attempt }],
      ] as const) {
        await this.deployment.sqs.send(
          new SendMessageCommand({
            QueueUrl: this.deployment.queueUrls[queue],
            MessageBody: JSON.stringify(body),
            DelaySeconds: Math.floor(random() * 3),
          }),
        );
        sent++;
      }
    }
    return sent;
  }

  async stop(): Promise<void> {
    await Promise.all(this.agents.map((a) => a.proc.kill('SIGKILL')));
    for (const stop of this.stops.splice(0).reverse()) await stop().catch(() => undefined);
    await Promise.allSettled([...this.redeliveries]);
    await Promise.all(this.agents.map((a) => a.proxy.close()));
    for (const disk of this.disks) disk.unmount();
    this.observer?.destroy();
  }

  /** The api handler, with every 5xx it answers sorted into defects and throttled 503s. */
  private tallied(handler: ApiHandler): ApiHandler {
    return async (event, context) => {
      const result = (await handler(event, context)) as APIGatewayProxyStructuredResultV2;
      const status = result.statusCode ?? 200;
      if (status >= 500) {
        const headers = Object.fromEntries(
          Object.entries(result.headers ?? {}).map(([k, v]) => [k.toLowerCase(), String(v)]),
        );
        const request = `${event.requestContext.http.method} ${event.rawPath}`;
        if (isServerDefect(status, headers['retry-after'] ?? null)) {
          this.serverErrors.push(`${request}: ${status} ${String(result.body ?? '').slice(0, 300)}`);
        } else {
          this.unavailable++;
          if (this.unavailableExamples.length < 5)
            this.unavailableExamples.push(`${request}: ${String(result.body ?? '').slice(0, 300)}`);
        }
      }
      return result;
    };
  }

  /**
   * A queue consumer that, while {@link duplicateBatches} is armed, is given a batch a second
   * time, its records in reverse order, after a random delay: SQS's at-least-once delivery, with
   * the copy arriving before, during or after the first delivery's work.
   */
  private duplicating(name: string, handler: SqsHandler): SqsHandler {
    return async (event, context) => {
      if (this.duplicateBatches > 0 && event.Records.length > 0) {
        this.duplicateBatches--;
        this.duplicatesDelivered += event.Records.length;
        const again: SQSEvent = { Records: [...event.Records].reverse() };
        const delayMs = Math.floor(this.options.random() * 2000);
        const redelivery = new Promise((r) => setTimeout(r, delayMs))
          .then(() => handler(again, lambdaContext(name)))
          .catch(() => undefined);
        this.redeliveries.add(redelivery);
        void redelivery.finally(() => this.redeliveries.delete(redelivery));
      }
      return handler(event, context);
    };
  }
}

type SqsHandler = (event: SQSEvent, context: Context) => Promise<unknown>;
type ApiHandler = (event: APIGatewayProxyEventV2, context: Context) => Promise<unknown>;

function scheduledEvent() {
  return {
    version: '0',
    id: 'tick',
    'detail-type': 'Scheduled Event' as const,
    source: 'aws.events' as const,
    account: '0',
    time: new Date().toISOString(),
    region: 'us-east-1',
    resources: [],
    detail: {},
  };
}
