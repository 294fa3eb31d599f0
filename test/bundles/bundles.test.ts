import { readdir } from 'node:fs/promises';
import { ReceiveMessageCommand, SendMessageCommand } from '@aws-sdk/client-sqs';
import type {
  APIGatewayProxyEventV2,
  APIGatewayProxyResultV2,
  ScheduledEvent,
  SQSBatchResponse,
  SQSEvent,
} from 'aws-lambda';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { bootstrapKey } from '../../functions/handlers/bootstrap-key.js';
import { resultHash, sha256Hex } from '../../protocol/index.js';
import { deployToEmulators } from '../cloud/deployment.js';
import { startApiGateway, startEventSource } from '../cloud/harness.js';
import { Api, type Proc, startAgent, tempDir, waitFor } from '../support/processes.js';
import { EmulatedFunction, ensureLambdaEmulatorInstalled } from './lambda-emulator.js';
import { type SynthesisedApp, synthesise } from './synth.js';

/**
 * The artifacts `cdk deploy` would upload, run as Lambda runs them: the real `cdk synth` bundles
 * every function, and each asset folder runs under AWS's Lambda Runtime Interface Emulator with
 * the Node.js runtime interface client on Node 22, from a temporary folder with no node_modules
 * above it. The in-process cloud tests (test/cloud) cannot see a bundling mistake (a module esbuild
 * left out, a native addon, ESM against CommonJS, an SDK the runtime would have to provide); here
 * each function is invoked with the events its triggers send: API Gateway HTTP API (payload 2.0)
 * events built from real HTTP requests of a real agent process, SQS events built from messages
 * received from the emulator's queues, and an EventBridge scheduled event, against DynamoDB, SQS
 * and KMS on the emulators (moto, local-kms).
 */

const line = 'echo "job $GPUAI_JOB_ID task $GPUAI_TASK_INDEX"';
const hashOf = (stdout: string) =>
  resultHash([{ name: 'stdout', sha256: sha256Hex(stdout), bytes: Buffer.byteLength(stdout) }]);

/** The functions the stack deploys, by construct id. */
const functionNames = ['Api', 'Scheduler', 'Verifier', 'Reaper'] as const;

let app: SynthesisedApp;
let functions: Record<(typeof functionNames)[number], EmulatedFunction>;
let api: Api;
let deadLetters: { receive(): Promise<string[]> };
let sendToSchedule: (body: string) => Promise<void>;
const agentDir = tempDir('bundles-agent');
const stops: (() => Promise<unknown>)[] = [];
let agent: Proc | undefined;
/** Every SQS record handed to a consumer bundle, and whether its answer asked SQS to redeliver it. */
const deliveries: { queue: string; body: string; failed: boolean }[] = [];

beforeAll(async () => {
  [app] = await Promise.all([synthesise(), ensureLambdaEmulatorInstalled()]);
  stops.push(app.remove);

  // The deployment writes the functions' environment into this process's; what it adds is what
  // CloudFormation would resolve for the functions (names, URLs, the key) plus the endpoints.
  const before = { ...process.env };
  const deployment = await deployToEmulators({
    leaseMs: 10_000,
    heartbeatMs: 1000,
    recheckMs: 250,
    dispatch: 'sqs',
    // Behind the emulated gateway every client is 127.0.0.1, and this test's one key both
    // submits and polls; rate limits are test/security's subject.
    rateLimits: 'address=0/60,key=0/60',
  });
  stops.push(deployment.close);
  const environment = Object.fromEntries(
    Object.entries(process.env).filter(
      (entry): entry is [string, string] => entry[1] !== undefined && before[entry[0]] !== entry[1],
    ),
  );
  // The functions log what they would in production (the template's level), kept for failures.
  delete environment.POWERTOOLS_LOG_LEVEL;

  const bundled = (name: string) => {
    const fn = app.functions.get(name);
    if (fn === undefined) throw new Error(`cdk synth has no bundled function ${name}: ${[...app.functions.keys()]}`);
    return fn;
  };
  functions = {
    // The agent's heartbeats, claims and reports overlap: a few instances, as Lambda would scale.
    Api: new EmulatedFunction(bundled('Api'), environment, 3),
    Scheduler: new EmulatedFunction(bundled('Scheduler'), environment),
    Verifier: new EmulatedFunction(bundled('Verifier'), environment),
    Reaper: new EmulatedFunction(bundled('Reaper'), environment),
  };
  stops.push(() => Promise.all(Object.values(functions).map((f) => f.stop())));

  const gateway = await startApiGateway(async (event: APIGatewayProxyEventV2) => {
    const { payload, functionError } = await functions.Api.invoke(event);
    // API Gateway's answer when the integration fails.
    if (functionError !== undefined) return { statusCode: 500, body: '{"message":"Internal Server Error"}' };
    return payload as APIGatewayProxyResultV2;
  }, deployment.meter);
  stops.push(gateway.close);
  // The API bundle loads here first, so a bundling mistake fails with the function's own words
  // rather than as an agent that never joins.
  const health = await fetch(`${gateway.url}/healthz`);
  expect(health.status, functions.Api.logs()).toBe(200);
  for (const [queue, fn] of [
    ['schedule', functions.Scheduler],
    ['verify', functions.Verifier],
  ] as const) {
    const source = startEventSource(
      deployment.sqs,
      deployment.queueUrls[queue] as string,
      queue,
      async (event: SQSEvent) => {
        const { payload, functionError } = await fn.invoke(event);
        // A failed invocation fails the whole batch: every message comes back after its timeout.
        const failed = new Set(
          functionError === undefined
            ? ((payload as SQSBatchResponse | null)?.batchItemFailures ?? []).map((f) => f.itemIdentifier)
            : event.Records.map((r) => r.messageId),
        );
        for (const record of event.Records) {
          deliveries.push({ queue, body: record.body, failed: failed.has(record.messageId) });
        }
        return { batchItemFailures: [...failed].map((itemIdentifier) => ({ itemIdentifier })) };
      },
      deployment.meter,
    );
    stops.push(source.stop);
  }

  const scheduleDlq = deployment.queueUrls['schedule-dlq'] as string;
  deadLetters = {
    async receive() {
      const received = await deployment.sqs.send(
        new ReceiveMessageCommand({ QueueUrl: scheduleDlq, MaxNumberOfMessages: 10, WaitTimeSeconds: 1 }),
      );
      return (received.Messages ?? []).map((m) => m.Body ?? '');
    },
  };
  sendToSchedule = async (body) => {
    await deployment.sqs.send(
      new SendMessageCommand({ QueueUrl: deployment.queueUrls.schedule as string, MessageBody: body }),
    );
  };

  // The operator's first key, made as docs/deploy.md says (functions/handlers/bootstrap-key.ts).
  const { key } = await bootstrapKey({
    table: environment.TABLE_NAME as string,
    region: 'us-east-1',
    endpoint: environment.GPUAI_DYNAMODB_ENDPOINT as string,
    tenant: 'bundles',
    scopes: ['submit', 'read'],
  });
  api = new Api(gateway.url, key);
  agent = startAgent(gateway.url, agentDir.path, 'bundles-0');
  await waitFor('the agent to join', async () => ((await api.liveNodes()) === 1 ? true : undefined), 60_000);
}, 240_000);

afterAll(async () => {
  await agent?.kill('SIGKILL');
  for (const stop of stops.reverse()) await stop();
  agentDir.remove();
  if (functions !== undefined) {
    const figures = Object.fromEntries(
      Object.entries(functions).map(([name, fn]) => [
        name,
        {
          cold: fn.timings.cold.map(Math.round),
          warmMedian: Math.round(median(fn.timings.warm)),
          warm: fn.timings.warm.length,
        },
      ]),
    );
    console.log(`invocation ms under RIE: ${JSON.stringify(figures)}`);
  }
});

/**
 * Rejects as soon as any invocation fails, with that function's output: a bundle that cannot
 * handle its events fails the test at once instead of as a job that never finishes.
 */
async function firstFunctionError(signal: AbortSignal): Promise<never> {
  for (;;) {
    signal.throwIfAborted();
    for (const [name, fn] of Object.entries(functions)) {
      if (fn.functionErrors.length > 0) {
        throw new Error(`${name} failed: ${JSON.stringify(fn.functionErrors[0])}; its output:\n${fn.logs()}`);
      }
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Fails with the functions' own output, which says why an invocation went wrong. */
function expectNoFunctionErrors(): void {
  for (const [name, fn] of Object.entries(functions)) {
    expect(fn.functionErrors, `${name} failed; its output:\n${fn.logs()}`).toEqual([]);
  }
}

describe('the bundles cdk deploy would upload', () => {
  it('are single ES modules for nodejs22.x, with nothing beside them to install or build', async () => {
    expect([...app.functions.keys()].sort()).toEqual([...functionNames].sort());
    for (const fn of app.functions.values()) {
      expect(fn.runtime).toBe('nodejs22.x');
      expect(fn.handler).toBe('index.handler');
      // No node_modules and no native addon: a .node file built here would not load on arm64.
      expect((await readdir(fn.assetDir)).sort()).toEqual(['index.mjs', 'index.mjs.map']);
    }
  });

  it('run a job end to end: API Gateway, the schedule and verify queues, a real agent, the reaper', async () => {
    const job = await api.submit({ name: 'bundled', command: ['sh', '-c', line], tasks: 2 }, 'bundles-happy');
    const watching = new AbortController();
    const [finished] = await Promise.race([api.finished([job], 90_000), firstFunctionError(watching.signal)]).finally(
      () => watching.abort(),
    );
    expect(finished?.status).toBe('succeeded');
    for (const task of finished?.tasks ?? []) {
      expect(task.attempts.filter((a) => a.outcome === 'completed')).toHaveLength(1);
      expect(task.result?.resultHash).toBe(hashOf(`job ${job.id} task ${task.index}\n`));
    }

    const tick: ScheduledEvent = {
      version: '0',
      id: crypto.randomUUID(),
      'detail-type': 'Scheduled Event',
      source: 'aws.events',
      account: '000000000000',
      time: new Date().toISOString(),
      region: 'us-east-1',
      resources: ['arn:aws:events:us-east-1:000000000000:rule/ReaperSchedule'],
      detail: {},
    };
    const reaped = await functions.Reaper.invoke(tick);
    expect(reaped.functionError, functions.Reaper.logs()).toBeUndefined();
    expect(functions.Scheduler.timings.cold.length + functions.Scheduler.timings.warm.length).toBeGreaterThan(0);
    expect(functions.Verifier.timings.cold.length + functions.Verifier.timings.warm.length).toBeGreaterThan(0);
    expectNoFunctionErrors();
  }, 120_000);

  it('dead-letter a poison message on the schedule queue instead of failing the batch', async () => {
    const poison = `not a schedule message ${crypto.randomUUID()}`;
    await sendToSchedule(poison);
    const dead = await waitFor(
      'the poison message in schedule-dlq',
      async () => {
        const bodies = await deadLetters.receive();
        return bodies.includes(poison) ? bodies : undefined;
      },
      60_000,
      0,
    );
    expect(dead).toContain(poison);
    // The scheduler bundle moved it at its first delivery (the queue's own redrive would have
    // needed five), and reported the batch a success.
    // (The bundle sends to the dead-letter queue before its invocation returns: wait for its answer.)
    const delivered = await waitFor('the scheduler to answer', async () => {
      const mine = deliveries.filter((d) => d.body === poison);
      return mine.length > 0 ? mine : undefined;
    });
    expect(delivered).toEqual([{ queue: 'schedule', body: poison, failed: false }]);
    expectNoFunctionErrors();
  }, 90_000);
});

function median(values: readonly number[]): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] as number;
}
