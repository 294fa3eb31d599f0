import { Readable } from 'node:stream';
import { DeleteMessageCommand } from '@aws-sdk/client-sqs';
import { describe, expect, it } from 'vitest';
import { awsClients } from '../../functions/adapters/aws/clients.js';
import { SqsWorkHints } from '../../functions/adapters/aws/sqs-work-hints.js';
import type { WorkDispatch, WorkHintMessage, WorkHints } from '../../functions/ports/work-hints.js';
import { JobSpec, type NodeInventory } from '../../protocol/index.js';
import { cpuInventory, inProcessControlPlane, ManualClock, TestNode } from '../support/in-process.js';

/**
 * Review finding: the claim route took a `queueUrl` checked only by its name's prefix, and the AWS
 * SDK then sent a DeleteMessage signed with the control plane's credentials to whatever host the
 * URL named. A claim may name only one of the node's own pool queues, exactly as handed out.
 */

const queueUrl = (pool: string) =>
  `https://sqs.us-east-1.amazonaws.com/123456789012/gpuai-pool-${pool.replace(/\W/g, '-')}`;

class RecordingHints implements WorkHints {
  readonly acknowledged: { queueUrl: string; receiptHandle: string }[] = [];
  async dispatchFor(pools: readonly string[]): Promise<WorkDispatch> {
    return { mode: 'sqs', region: 'us-east-1', queues: pools.map((pool) => ({ pool, url: queueUrl(pool) })) };
  }
  async publish(_hint: WorkHintMessage): Promise<void> {}
  async acknowledge(url: string, receiptHandle: string): Promise<void> {
    this.acknowledged.push({ queueUrl: url, receiptHandle });
  }
}

const h100s: NodeInventory = cpuInventory({
  gpus: [{ index: 0, vendor: 'nvidia', model: 'NVIDIA H100 80GB HBM3', vramMiB: 81559, uuid: 'GPU-0' }],
});

async function world() {
  const clock = new ManualClock();
  const hints = new RecordingHints();
  const h = inProcessControlPlane({ clock, hints, settings: { livenessMs: 1e12 } });
  const node = new TestNode(h.request, clock);
  expect((await node.register(h100s)).status).toBe(201);
  const { job } = await h.cp.jobs.submit(
    'default',
    JobSpec.parse({ command: ['true'], resources: { gpus: { count: 1 } } }),
  );
  await h.cp.scheduler.schedule({ jobId: job.id });
  const taskId = `${job.id}.0`;
  const claim = (body: Record<string, unknown>) => node.call('POST', `/v1/nodes/${node.id}/claims`, body);
  const task = async () => (await h.cp.jobs.get('default', job.id)).tasks[0];
  return { ...h, hints, node, taskId, claim, task };
}

describe('a claim names a queue URL', () => {
  it.each([
    ['on another host, with a pool queue name', 'https://attacker.example/123456789012/gpuai-pool-local-h100'],
    ['of another account', 'https://sqs.us-east-1.amazonaws.com/999999999999/gpuai-pool-local-h100'],
    ['of a pool the node is not in', queueUrl('local/cpu')],
    [
      'with userinfo and a path trick',
      'https://sqs.us-east-1.amazonaws.com@attacker.example/123456789012/gpuai-pool-local-h100',
    ],
  ])('refuses one %s with 403, claiming and deleting nothing', async (_, url) => {
    const w = await world();
    expect((await w.task())?.state).toBe('queued');
    const before = w.snapshot();
    const response = await w.claim({ taskId: w.taskId, queueUrl: url, receiptHandle: 'rh-1' });
    expect(response.status).toBe(403);
    expect(((await response.json()) as { error: { code: string } }).error.code).toBe('foreign_queue');
    expect(w.hints.acknowledged).toEqual([]);
    expect(w.snapshot()).toEqual(before);
    expect((await w.task())?.state).toBe('queued');
    await w.close();
  });

  it('acknowledges the hint on the node’s own pool queue', async () => {
    const w = await world();
    const own = queueUrl('local/h100');
    const response = await w.claim({ taskId: w.taskId, queueUrl: own, receiptHandle: 'rh-1' });
    expect(response.status).toBe(200);
    expect(w.hints.acknowledged).toEqual([{ queueUrl: own, receiptHandle: 'rh-1' }]);
    await w.close();
  });
});

/** The SQS client of awsClients, answering from memory and recording where each request would go. */
function recordingSqs() {
  const clients = awsClients({
    region: 'us-east-1',
    credentials: { accessKeyId: 'AKIDTEST', secretAccessKey: 'secret' },
  });
  const sent: { target: string; host: string; body: string }[] = [];
  const answer = (body: unknown) =>
    // An HttpResponse of @smithy/protocol-http by shape.
    ({
      statusCode: 200,
      headers: { 'content-type': 'application/x-amz-json-1.0' },
      body: Readable.from([Buffer.from(JSON.stringify(body))]),
    });
  clients.sqs.config.requestHandler = {
    handle: async (request: { hostname: string; headers: Record<string, string>; body?: unknown }) => {
      const target = request.headers['x-amz-target'] ?? '';
      sent.push({ target, host: request.hostname, body: String(request.body) });
      if (target.endsWith('CreateQueue')) {
        const name = (JSON.parse(String(request.body)) as { QueueName: string }).QueueName;
        return { response: answer({ QueueUrl: `https://sqs.us-east-1.amazonaws.com/123456789012/${name}` }) };
      }
      return { response: answer({}) };
    },
  } as unknown as typeof clients.sqs.config.requestHandler;
  return { sqs: clients.sqs, sent };
}

describe('the SQS adapter and client never follow a foreign queue URL', () => {
  it('sends a DeleteMessage to the configured endpoint, whatever host the queue URL names', async () => {
    const { sqs, sent } = recordingSqs();
    await sqs.send(
      new DeleteMessageCommand({ QueueUrl: 'https://attacker.example/123456789012/gpuai-pool-x', ReceiptHandle: 'rh' }),
    );
    expect(sent.map((s) => s.host)).toEqual(['sqs.us-east-1.amazonaws.com']);
    sqs.destroy();
  });

  it('deletes only from pool queues it knows, character for character', async () => {
    const { sqs, sent } = recordingSqs();
    const hints = new SqsWorkHints(sqs, { prefix: 'gpuai', region: 'us-east-1' });
    const [own] = (await hints.dispatchFor(['local/h100'])).mode === 'sqs' ? await queues(hints) : [];
    sent.length = 0;
    const lookalike = own?.replace('sqs.us-east-1.amazonaws.com', 'attacker.example') ?? '';
    await hints.acknowledge(lookalike, 'rh-1');
    await hints.acknowledge(own?.replace(/gpuai-pool-[^/]+$/, 'gpuai-pool-someone-else') ?? '', 'rh-2');
    expect(sent).toEqual([]);
    await hints.acknowledge(own ?? '', 'rh-3');
    expect(sent.map((s) => [s.target, s.host])).toEqual([['AmazonSQS.DeleteMessage', 'sqs.us-east-1.amazonaws.com']]);
    expect(JSON.parse(sent[0]?.body ?? '{}')).toEqual({ QueueUrl: own, ReceiptHandle: 'rh-3' });
    sqs.destroy();
  });
});

async function queues(hints: SqsWorkHints): Promise<string[]> {
  const dispatch = await hints.dispatchFor(['local/h100']);
  return dispatch.mode === 'sqs' ? dispatch.queues.map((q) => q.url) : [];
}
