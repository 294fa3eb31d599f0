import { randomUUID } from 'node:crypto';
import { DeleteQueueCommand, GetQueueAttributesCommand, ReceiveMessageCommand } from '@aws-sdk/client-sqs';
import { type AssumeRoleCommandInput, STSClient } from '@aws-sdk/client-sts';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { awsClients } from '../../functions/adapters/aws/clients.js';
import { poolQueueName, SqsWorkHints } from '../../functions/adapters/aws/sqs-work-hints.js';
import {
  nodeQueueActions,
  nodeSessionPolicy,
  queueArn,
  StsCredentialIssuer,
} from '../../functions/adapters/aws/sts-credentials.js';
import { NodeCredentials, WorkHint } from '../../protocol/index.js';
import { emulatorCredentials } from '../emulators/emulators.js';

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
const created = new Set<string>();

afterAll(async () => {
  await Promise.all([...created].map((QueueUrl) => clients.sqs.send(new DeleteQueueCommand({ QueueUrl }))));
  for (const client of Object.values(clients)) client.destroy();
});

function hints(prefix = `t${randomUUID().slice(0, 8)}`) {
  return new SqsWorkHints(clients.sqs, { prefix, region, endpoint: endpoints?.sqs ?? '' });
}

async function dispatchOf(h: SqsWorkHints, pools: string[]) {
  const dispatch = await h.dispatchFor(pools);
  if (dispatch.mode !== 'sqs') throw new Error('expected sqs dispatch');
  for (const q of dispatch.queues) created.add(q.url);
  return dispatch;
}

describe('poolQueueName', () => {
  it('is a valid, stable SQS name of at most 80 characters, distinct for pools that sanitise alike', () => {
    const pools = ['local/cpu', 'local-cpu', 'eu-west-1/nvidia-h100-80gb-hbm3', `r/${'x'.repeat(200)}`, 'ü/ß'];
    const names = pools.map((pool) => poolQueueName('gpuai-stack', pool));
    for (const name of names) {
      expect(name).toMatch(/^gpuai-stack-pool-[A-Za-z0-9_-]+-[0-9a-f]{8}$/);
      expect(name.length).toBeLessThanOrEqual(80);
    }
    expect(new Set(names).size).toBe(pools.length);
    expect(poolQueueName('gpuai-stack', 'local/cpu')).toBe(names[0]);
    expect(poolQueueName('p'.repeat(64), 'local/cpu')).toHaveLength(80);
    expect(() => poolQueueName('p'.repeat(65), 'local/cpu')).toThrow(/prefix/);
    expect(() => poolQueueName('bad prefix', 'local/cpu')).toThrow(/prefix/);
  });
});

describe('SqsWorkHints on moto', () => {
  it('creates one queue per pool on first use, with the pool queue attributes, and reuses it', async () => {
    const h = hints();
    const first = await dispatchOf(h, ['local/cpu', 'local/nvidia-h100-80gb-hbm3']);
    expect(first).toMatchObject({ mode: 'sqs', region, endpoint: endpoints?.sqs });
    expect(first.queues.map((q) => q.pool)).toEqual(['local/cpu', 'local/nvidia-h100-80gb-hbm3']);
    const [cpu, gpu] = first.queues;
    expect(cpu?.url).not.toBe(gpu?.url);
    expect(cpu?.url.endsWith(`/${poolQueueName(h.prefix, 'local/cpu')}`)).toBe(true);
    const { Attributes } = await clients.sqs.send(
      new GetQueueAttributesCommand({
        QueueUrl: cpu?.url,
        AttributeNames: ['VisibilityTimeout', 'MessageRetentionPeriod'],
      }),
    );
    expect(Attributes).toEqual({ VisibilityTimeout: '30', MessageRetentionPeriod: String(4 * 24 * 3600) });
    // The same pool again, from this instance (cached) and from a fresh one (CreateQueue is idempotent).
    expect((await dispatchOf(h, ['local/cpu'])).queues).toEqual([cpu]);
    expect((await dispatchOf(hints(h.prefix), ['local/cpu'])).queues).toEqual([cpu]);
  });

  it('publishes a hint a raw receive gets as JSON, and acknowledging it deletes it', async () => {
    const h = hints();
    const { queues } = await dispatchOf(h, ['local/cpu']);
    const url = queues[0]?.url ?? '';
    const hint = {
      taskId: 'job_01JD7Z5C2Q9W8V6T4R2P0N8M6K.3',
      pool: 'local/cpu',
      queuedAt: '2026-11-25T12:00:00.000Z',
    };
    await h.publish(hint);
    const receive = (VisibilityTimeout: number) =>
      clients.sqs.send(new ReceiveMessageCommand({ QueueUrl: url, WaitTimeSeconds: 1, VisibilityTimeout }));
    const { Messages = [] } = await receive(0);
    expect(Messages).toHaveLength(1);
    expect(WorkHint.parse(JSON.parse(Messages[0]?.Body ?? ''))).toEqual(hint);
    // Received again (visibility 0 above released it): acknowledge with the current handle.
    const again = (await receive(30)).Messages?.[0];
    await h.acknowledge(url, again?.ReceiptHandle ?? '');
    const { Attributes } = await clients.sqs.send(
      new GetQueueAttributesCommand({
        QueueUrl: url,
        AttributeNames: ['ApproximateNumberOfMessages', 'ApproximateNumberOfMessagesNotVisible'],
      }),
    );
    expect(Attributes).toEqual({ ApproximateNumberOfMessages: '0', ApproximateNumberOfMessagesNotVisible: '0' });
    // A stale or invalid handle is not an error; nor is a queue that is no pool queue (ignored).
    await h.acknowledge(url, again?.ReceiptHandle ?? '');
    await h.acknowledge(url, 'not-a-receipt-handle');
    await h.acknowledge(url.replace(/[^/]+$/, 'someone-elses-queue'), 'x');
  });

  it('publishes to a pool never listed before, creating its queue', async () => {
    const h = hints();
    await h.publish({ taskId: 'job_01JD7Z5C2Q9W8V6T4R2P0N8M6K.0', pool: 'eu/cpu', queuedAt: new Date().toISOString() });
    const { queues } = await dispatchOf(h, ['eu/cpu']);
    const { Messages = [] } = await clients.sqs.send(
      new ReceiveMessageCommand({ QueueUrl: queues[0]?.url, WaitTimeSeconds: 1 }),
    );
    expect(Messages.map((m) => JSON.parse(m.Body ?? '').pool)).toEqual(['eu/cpu']);
  });
});

describe('StsCredentialIssuer', () => {
  it('derives queue ARNs from AWS and emulator URLs', () => {
    expect(queueArn('https://sqs.eu-west-1.amazonaws.com/123456789012/gpuai-pool-a-1', 'us-east-1')).toBe(
      'arn:aws:sqs:eu-west-1:123456789012:gpuai-pool-a-1',
    );
    expect(queueArn('https://eu-west-1.queue.amazonaws.com/123456789012/q', 'us-east-1')).toBe(
      'arn:aws:sqs:eu-west-1:123456789012:q',
    );
    expect(queueArn('http://127.0.0.1:4566/123456789012/q', 'us-east-1')).toBe('arn:aws:sqs:us-east-1:123456789012:q');
    expect(() => queueArn('http://127.0.0.1:4566/q', 'us-east-1')).toThrow(/not an SQS queue URL/);
  });

  it('allows only receiving, releasing and reading attributes, on exactly the given queues', () => {
    const urls = ['http://127.0.0.1:5000/123456789012/a', 'http://127.0.0.1:5000/123456789012/b'];
    expect(JSON.parse(nodeSessionPolicy(urls, region))).toEqual({
      Version: '2012-10-17',
      Statement: [
        {
          Effect: 'Allow',
          Action: ['sqs:ReceiveMessage', 'sqs:ChangeMessageVisibility', 'sqs:GetQueueAttributes'],
          Resource: ['arn:aws:sqs:us-east-1:123456789012:a', 'arn:aws:sqs:us-east-1:123456789012:b'],
        },
      ],
    });
    expect(JSON.parse(nodeSessionPolicy([], region)).Statement).toEqual([
      { Effect: 'Deny', Action: 'sqs:*', Resource: '*' },
    ]);
  });

  it('assumes the node role on moto with the node as session name and the scoped session policy', async () => {
    // moto issues credentials but enforces no policy, so what is checked here is what the adapter
    // asks STS for; the policy's effect is IAM's and is not emulated.
    const sts = new STSClient({ region, endpoint: endpoints?.sqs ?? '', credentials: emulatorCredentials });
    const sent: AssumeRoleCommandInput[] = [];
    sts.middlewareStack.add(
      (next) => async (args) => {
        sent.push(args.input as AssumeRoleCommandInput);
        return next(args);
      },
      { step: 'initialize' },
    );
    const roleArn = 'arn:aws:iam::123456789012:role/gpuai-node-work-reader';
    const issuer = new StsCredentialIssuer(sts, roleArn, 900);
    const { queues } = await dispatchOf(hints(), ['local/cpu']);
    const nodeId = `node_${'a'.repeat(80)}`;
    const credentials = NodeCredentials.parse(await issuer.issue(nodeId, [queues[0]?.url ?? '']));
    expect(credentials.accessKeyId).not.toBe('');
    expect(Date.parse(credentials.expiresAt)).toBeGreaterThan(Date.now());
    expect(sent).toHaveLength(1);
    expect(sent[0]).toMatchObject({ RoleArn: roleArn, RoleSessionName: nodeId.slice(0, 64), DurationSeconds: 900 });
    const policy = JSON.parse(sent[0]?.Policy ?? '');
    expect(policy.Statement).toEqual([
      { Effect: 'Allow', Action: nodeQueueActions, Resource: [queueArn(queues[0]?.url ?? '', region)] },
    ]);
    sts.destroy();
  });
});
