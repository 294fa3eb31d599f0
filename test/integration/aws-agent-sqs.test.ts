import { randomUUID } from 'node:crypto';
import {
  DeleteQueueCommand,
  GetQueueAttributesCommand,
  ListQueuesCommand,
  ReceiveMessageCommand,
  SendMessageCommand,
} from '@aws-sdk/client-sqs';
import { afterAll, afterEach, describe, expect, inject, it } from 'vitest';
import type { Agent, AgentOptions } from '../../edge-agent/agent.js';
import { testJobId, testProbe } from '../../edge-agent/test-support/fixtures.js';
import { awsClients } from '../../functions/adapters/aws/clients.js';
import { SqsWorkHints } from '../../functions/adapters/aws/sqs-work-hints.js';
import { StsCredentialIssuer } from '../../functions/adapters/aws/sts-credentials.js';
import type { CredentialIssuer } from '../../functions/ports/node-credentials.js';
import { sha256Hex } from '../../protocol/index.js';
import { emulatorCredentials } from '../emulators/emulators.js';
import { AgentHarness, waitUntil } from '../support/agent-harness.js';
import { type FaultProxy, startFaultProxy } from '../support/fault-proxy.js';
import { cpuInventory, TestNode } from '../support/in-process.js';
import { ShortLivedCredentials } from '../support/sqs-dispatch.js';

/**
 * The agent's `sqs` dispatch against a real SQS (moto) and the real control plane
 * (test/support/agent-harness.ts) over the cloud's work-hints adapter: the server creates the pool
 * queues and sends the hints, the agent receives them with credentials from STS (moto's), claims
 * them, releases the ones that do not fit, and the server deletes the hints of claims that held.
 * Agents reach SQS through a fault proxy, whose log shows when their receive is in flight.
 */
const endpoints = inject('awsEndpoints');
if (endpoints === undefined) {
  throw new Error('no emulator endpoints: run with test/emulators/global-setup.ts as a vitest globalSetup');
}
const region = 'us-east-1';
// moto serves every service on one port, STS included.
const clients = awsClients({
  region,
  endpoints: { ...endpoints, sts: endpoints.sqs },
  credentials: emulatorCredentials,
});
const pool = 'local/l40s';
const prefixes: string[] = [];

let harness: AgentHarness | undefined;
let sqsProxy: FaultProxy | undefined;
let hints: SqsWorkHints;

afterEach(async () => {
  await harness?.stop();
  await sqsProxy?.close();
  harness = undefined;
  sqsProxy = undefined;
});

afterAll(async () => {
  for (const prefix of prefixes) {
    const { QueueUrls = [] } = await clients.sqs.send(new ListQueuesCommand({ QueueNamePrefix: prefix }));
    await Promise.all(QueueUrls.map((QueueUrl) => clients.sqs.send(new DeleteQueueCommand({ QueueUrl }))));
  }
  for (const client of Object.values(clients)) client.destroy();
});

async function setUp(credentials: CredentialIssuer = new StsCredentialIssuer(clients.sts, roleArn, 900)) {
  sqsProxy = await startFaultProxy(endpoints?.sqs ?? '');
  const prefix = `gpuai-agent-${randomUUID().slice(0, 8)}`;
  prefixes.push(prefix);
  hints = new SqsWorkHints(clients.sqs, { prefix, region, endpoint: sqsProxy.url });
  harness = await AgentHarness.start({ dataDirPrefix: 'gpuai-agent-sqs-', ports: { hints, credentials } });
  return { harness, queue: await hints.queueUrl(pool) };
}
const roleArn = 'arn:aws:iam::123456789012:role/gpuai-node-work-reader';

function startAgent(h: AgentHarness, overrides: Partial<AgentOptions> = {}): { agent: Agent; running: Promise<void> } {
  return h.startAgent({ name: 'sqs-node', ...overrides });
}

/** Receives the agent's SQS client has sent through the proxy. */
const receives = () => sqsProxy?.requests.filter((r) => r.body.includes('"WaitTimeSeconds"')) ?? [];

async function sendHint(queueUrl: string, taskId: string): Promise<void> {
  const body = JSON.stringify({ taskId, pool, queuedAt: new Date().toISOString() });
  await clients.sqs.send(new SendMessageCommand({ QueueUrl: queueUrl, MessageBody: body }));
}

async function counts(queueUrl: string): Promise<{ visible: number; inFlight: number }> {
  const { Attributes } = await clients.sqs.send(
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

describe('edge agent with sqs dispatch (moto)', { timeout: 60_000 }, () => {
  it('claims the hinted task, runs it and reports its result; the server deletes the hint', async () => {
    const { harness: h, queue } = await setUp();
    startAgent(h);
    await waitUntil('a receive', () => receives().length > 0);
    const job = await h.submit({ command: ['printf', 'hello'] });

    const done = await h.finished(job.id);
    expect(done.status).toBe('succeeded');
    expect(done.tasks[0]?.result).toMatchObject({
      exitCode: 0,
      outputs: [{ name: 'stdout', sha256: sha256Hex('hello'), bytes: 5 }],
    });
    expect(JSON.parse(h.sent('POST', '/claims')[0]?.body ?? '{}')).toEqual({
      taskId: done.tasks[0]?.id,
      queueUrl: queue,
      receiptHandle: expect.any(String),
    });
    expect(await counts(queue)).toEqual({ visible: 0, inFlight: 0 });
    expect(h.sent('POST', '/credentials')).toHaveLength(1);
  });

  it('makes a hint that does not fit visible again at once', async () => {
    const { harness: h, queue } = await setUp();
    startAgent(h);
    await waitUntil('a receive', () => receives().length > 0);
    // A node with two L40S joins the pool; the server hints a two-GPU job there, which the agent
    // (one L40S) receives and cannot run.
    const bigNode = new TestNode((path, init) => fetch(`${h.api.url}${path}`, init));
    const l40s = (await testProbe()).inventory.gpus[0];
    if (l40s === undefined) throw new Error('testProbe has a GPU');
    await bigNode.register(cpuInventory({ gpus: [l40s, { ...l40s, index: 1, uuid: 'GPU-2' }] }));
    const job = await h.submit({ command: ['true'], resources: { gpus: { count: 2 } } });
    const taskId = job.tasks[0]?.id ?? '';
    await waitUntil('the agent to refuse it', () => h.logged(`task ${taskId} does not fit this node`));

    // Another node's receive gets it well within the 30 s visibility timeout.
    const startedAt = Date.now();
    let received: string | undefined;
    while (received === undefined && Date.now() - startedAt < 3_000) {
      const { Messages } = await clients.sqs.send(
        new ReceiveMessageCommand({ QueueUrl: queue, WaitTimeSeconds: 1, VisibilityTimeout: 30 }),
      );
      received = Messages?.[0]?.Body;
    }
    expect(received).toContain(taskId);
    expect(Date.now() - startedAt).toBeLessThan(2_500);
    // This node remembered the misfit: it did not claim the task again.
    expect(h.sent('POST', '/claims').map((claim) => claim.status)).toEqual([409]);
  });

  it('leaves a stale hint alone', async () => {
    const { harness: h, queue } = await setUp();
    const taskId = `${testJobId('S')}.0`;
    await sendHint(queue, taskId);
    startAgent(h);
    await waitUntil('the claim answered', () => h.sent('POST', '/claims')[0]?.status);
    await waitUntil('the agent to log it', () => h.logged(`stale work hint for task ${taskId}`));
    const { Messages } = await clients.sqs.send(new ReceiveMessageCommand({ QueueUrl: queue, WaitTimeSeconds: 1 }));
    expect(Messages ?? []).toEqual([]);
    expect(await counts(queue)).toEqual({ visible: 0, inFlight: 1 });
    expect(h.sent('POST', '/claims')).toHaveLength(1);
  });

  it('refreshes credentials that expire, and keeps working with the new ones', async () => {
    // STS gives at least 900 s; a stand-in issues credentials that expire while the test watches.
    const credentials = new ShortLivedCredentials();
    credentials.lifetimeMs = 1_400;
    const { harness: h } = await setUp(credentials);
    startAgent(h);
    await waitUntil('three issues', () => credentials.issued.length >= 3);
    const job = await h.submit({ command: ['true'] });
    expect((await h.finished(job.id)).status).toBe('succeeded');
    expect(h.logLines.filter((line) => line.startsWith('warn') || line.startsWith('error'))).toEqual([]);
  });

  it('aborts an in-flight ReceiveMessage at shutdown', async () => {
    const { harness: h } = await setUp();
    const started = startAgent(h, { pollWaitSeconds: 20 });
    await waitUntil('a 20-second receive in flight', () =>
      receives().some((r) => r.body.includes('"WaitTimeSeconds":20')),
    );
    const stoppingAt = Date.now();
    await started.agent.shutdown();
    await started.running;
    h.forget(started);
    expect(Date.now() - stoppingAt).toBeLessThan(2_000);
  });
});
