import { randomUUID } from 'node:crypto';
import {
  CreateQueueCommand,
  DeleteMessageCommand,
  DeleteQueueCommand,
  GetQueueAttributesCommand,
  ReceiveMessageCommand,
  SendMessageCommand,
  SQSClient,
} from '@aws-sdk/client-sqs';
import { afterAll, afterEach, beforeEach, describe, expect, inject, it } from 'vitest';
import type { Agent, AgentOptions } from '../../edge-agent/agent.js';
import { AgentHarness } from '../../edge-agent/test-support/agent-harness.js';
import type { FakeControlPlane } from '../../edge-agent/test-support/fake-control-plane.js';
import { testAssignment, testJobId } from '../../edge-agent/test-support/fixtures.js';
import { sha256Hex } from '../../protocol/index.js';

/**
 * The agent's `sqs` dispatch against a real SQS (moto): it receives work hints from its pools'
 * queues with the credentials the (fake) control plane hands out, claims them, and releases the
 * ones that do not fit.
 */
const endpoints = inject('awsEndpoints');
if (endpoints === undefined) {
  throw new Error('no emulator endpoints: run with test/emulators/global-setup.ts as a vitest globalSetup');
}
const region = 'us-east-1';
const admin = new SQSClient({
  region,
  endpoint: endpoints.sqs,
  credentials: { accessKeyId: 'testing', secretAccessKey: 'testing' },
});
const createdQueues: string[] = [];

let fake: FakeControlPlane;
let _dataDir: string;
let queueA: string;
let queueB: string;
let logLines: string[];
let harness: AgentHarness;

async function createQueue(): Promise<string> {
  const output = await admin.send(new CreateQueueCommand({ QueueName: `gpuai-agent-${randomUUID()}` }));
  if (output.QueueUrl === undefined) throw new Error('CreateQueue returned no url');
  createdQueues.push(output.QueueUrl);
  return output.QueueUrl;
}

beforeEach(async () => {
  [queueA, queueB] = await Promise.all([createQueue(), createQueue()]);
  harness = await AgentHarness.start('gpuai-agent-sqs-');
  fake = harness.fake;
  _dataDir = harness.dataDir;
  logLines = harness.logLines;
  fake.dispatch = {
    mode: 'sqs',
    region,
    endpoint: endpoints.sqs,
    queues: [
      { pool: 'us-east-1/a', url: queueA },
      { pool: 'us-east-1/b', url: queueB },
    ],
  };
  // As the real control plane does once a claim holds.
  fake.onClaimed = async ({ queueUrl, receiptHandle }) => {
    if (queueUrl !== undefined && receiptHandle !== undefined) {
      await admin.send(new DeleteMessageCommand({ QueueUrl: queueUrl, ReceiptHandle: receiptHandle }));
    }
  };
});

afterEach(async () => {
  await harness.stop();
});

afterAll(async () => {
  await Promise.all(createdQueues.map((QueueUrl) => admin.send(new DeleteQueueCommand({ QueueUrl }))));
  admin.destroy();
});

function startAgent(overrides: Partial<AgentOptions> = {}): { agent: Agent; running: Promise<void> } {
  return harness.startAgent({ name: 'sqs-node', ...overrides });
}

async function sendHint(queueUrl: string, taskId: string): Promise<void> {
  const body = JSON.stringify({ taskId, pool: 'us-east-1/a', queuedAt: new Date().toISOString() });
  await admin.send(new SendMessageCommand({ QueueUrl: queueUrl, MessageBody: body }));
}

async function counts(queueUrl: string): Promise<{ visible: number; inFlight: number }> {
  const { Attributes } = await admin.send(
    new GetQueueAttributesCommand({
      QueueUrl: queueUrl,
      AttributeNames: ['ApproximateNumberOfMessages', 'ApproximateNumberOfMessagesNotVisible'],
    }),
  );
  return {
    visible: Number(Attributes?.ApproximateNumberOfMessages ?? 0),
    inFlight: Number(Attributes?.ApproximateNumberOfMessagesNotVisible ?? 0),
  };
}

describe('edge agent with sqs dispatch (moto)', () => {
  it('claims the hinted task, runs it and reports its result', async () => {
    const assignment = testAssignment(['printf', 'hello']);
    fake.offer(assignment);
    await sendHint(queueB, assignment.taskId);
    startAgent();

    const result = await fake.waitFor(() => fake.results.get(assignment.taskId), 10_000);
    expect(result).toMatchObject({ exitCode: 0, outputs: [{ name: 'stdout', sha256: sha256Hex('hello'), bytes: 5 }] });
    expect(fake.claims).toEqual([{ taskId: assignment.taskId, queueUrl: queueB, receiptHandle: expect.any(String) }]);
    expect(await counts(queueB)).toEqual({ visible: 0, inFlight: 0 });
    expect(fake.issuedCredentials).toHaveLength(1);
    expect(fake.badSignatures).toBe(0);
  });

  it('makes a hint that does not fit visible again at once', async () => {
    const taskId = `${testJobId('F')}.0`;
    fake.doesNotFit.add(taskId);
    await sendHint(queueA, taskId);
    startAgent();
    await fake.waitFor(() => fake.claims.length === 1, 10_000);

    // Another node's receive gets it well within the 30 s visibility timeout.
    const startedAt = Date.now();
    let received: string | undefined;
    while (received === undefined && Date.now() - startedAt < 3_000) {
      const { Messages } = await admin.send(
        new ReceiveMessageCommand({ QueueUrl: queueA, WaitTimeSeconds: 1, VisibilityTimeout: 30 }),
      );
      received = Messages?.[0]?.Body;
    }
    expect(received).toContain(taskId);
    expect(Date.now() - startedAt).toBeLessThan(2_500);
    // This node remembered the misfit: it did not claim the task again.
    expect(fake.claims).toHaveLength(1);
    expect(logLines.some((line) => line.includes(`task ${taskId} does not fit this node`))).toBe(true);
  });

  it('leaves a stale hint alone', async () => {
    const taskId = `${testJobId('S')}.0`;
    await sendHint(queueA, taskId);
    startAgent();
    await fake.waitFor(() => fake.claims.length === 1, 10_000);
    const { Messages } = await admin.send(new ReceiveMessageCommand({ QueueUrl: queueA, WaitTimeSeconds: 1 }));
    expect(Messages ?? []).toEqual([]);
    expect(await counts(queueA)).toEqual({ visible: 0, inFlight: 1 });
    expect(fake.claims).toHaveLength(1);
  });

  it('refreshes credentials that expire, and keeps working with the new ones', async () => {
    fake.credentialLifetimeMs = 1_400;
    startAgent();
    await fake.waitFor(() => fake.issuedCredentials.length >= 3, 10_000);
    const assignment = testAssignment(['true']);
    fake.offer(assignment);
    await sendHint(queueA, assignment.taskId);
    await fake.waitFor(() => fake.results.get(assignment.taskId), 10_000);
    expect(logLines.filter((line) => line.startsWith('warn') || line.startsWith('error'))).toEqual([]);
  });

  it('aborts an in-flight ReceiveMessage at shutdown', async () => {
    const started = startAgent({ pollWaitSeconds: 20 });
    await fake.waitFor(() => fake.issuedCredentials.length === 1, 10_000);
    // Let the 20-second receive reach moto.
    await new Promise((resolve) => setTimeout(resolve, 500));
    const stoppingAt = Date.now();
    await started.agent.shutdown();
    await started.running;
    harness.forget(started);
    expect(Date.now() - stoppingAt).toBeLessThan(2_000);
  });
});
