import { afterEach, describe, expect, it } from 'vitest';
import type { WorkDispatch, WorkHintMessage, WorkHints } from '../../functions/ports/work-hints.js';
import type { JoinTokenView, NodeInventory } from '../../protocol/index.js';
import { cpuInventory, inProcessControlPlane, ManualClock, TestNode } from '../support/in-process.js';
import { expectRefused, type Harness, jsonInit, submitJob, unchanged } from './support.js';

/**
 * Node enrollment (functions/domain/resource/join-tokens.ts) and claims over SQS work hints: a
 * join token works only while it is active, and a claim may name only the node's own pool queue.
 */

let h: Harness;
afterEach(() => h?.close());

const nodeCount = () => (h.snapshot() as { sk: string }[]).filter((i) => i.sk === 'NODE').length;

async function joinToken(body: Record<string, unknown> = { operator: 'acme' }) {
  const response = await h.api('/v1/join-tokens', jsonInit('POST', body));
  expect(response.status, await response.clone().text()).toBe(201);
  return (await response.json()) as { token: JoinTokenView; secret: string };
}

describe('join tokens', () => {
  it('refuses a join token reused after its revocation (401), enrolling nothing', async () => {
    const clock = new ManualClock(Date.now());
    h = inProcessControlPlane({ clock, enrollment: 'token' });
    const { token, secret } = await joinToken({ operator: 'acme', maxUses: 10 });
    expect((await new TestNode(h.request, clock).register(cpuInventory(), secret)).status).toBe(201);
    expect((await h.api(`/v1/join-tokens/${token.id}`, { method: 'DELETE' })).status).toBe(200);
    expect(nodeCount()).toBe(1);
    await unchanged(h, async () =>
      expectRefused(await new TestNode(h.request, clock).register(cpuInventory(), secret), 401, 'join_token_revoked'),
    );
    expect(nodeCount()).toBe(1);
  });

  it('refuses a used-up, an expired and a tampered token (401), and no token at all under token enrollment', async () => {
    const clock = new ManualClock(Date.now());
    h = inProcessControlPlane({ clock, enrollment: 'token' });
    const once = await joinToken({ operator: 'acme', maxUses: 1 });
    expect((await new TestNode(h.request, clock).register(cpuInventory(), once.secret)).status).toBe(201);
    const short = await joinToken({ operator: 'acme', ttlSeconds: 60 });
    clock.advance(61_000);
    const live = await joinToken({ operator: 'acme' });
    const last = live.secret.at(-1) === 'A' ? 'B' : 'A';
    const tampered = `${live.secret.slice(0, -1)}${last}`;
    for (const [secret, code] of [
      [once.secret, 'join_token_used_up'],
      [short.secret, 'join_token_expired'],
      [tampered, undefined],
      [undefined, undefined],
    ] as const) {
      await unchanged(h, async () =>
        expectRefused(await new TestNode(h.request, clock).register(cpuInventory(), secret), 401, code),
      );
    }
    expect(nodeCount()).toBe(1);
  });
});

/** SQS dispatch as the cloud does it, with a recorder where the SQS client would be. */
class RecordingHints implements WorkHints {
  readonly acknowledged: { queueUrl: string; receiptHandle: string }[] = [];
  static url = (pool: string) =>
    `https://sqs.us-east-1.amazonaws.com/123456789012/gpuai-pool-${pool.replace(/\W/g, '-')}`;
  async dispatchFor(pools: readonly string[]): Promise<WorkDispatch> {
    return { mode: 'sqs', region: 'us-east-1', queues: pools.map((pool) => ({ pool, url: RecordingHints.url(pool) })) };
  }
  async publish(_hint: WorkHintMessage): Promise<void> {}
  async acknowledge(queueUrl: string, receiptHandle: string): Promise<void> {
    this.acknowledged.push({ queueUrl, receiptHandle });
  }
}

describe('claims', () => {
  const h100: NodeInventory = cpuInventory({
    gpus: [{ index: 0, vendor: 'nvidia', model: 'NVIDIA H100 80GB HBM3', vramMiB: 81559, uuid: 'GPU-0' }],
  });

  it.each([
    ['on another host', 'https://attacker.example/123456789012/gpuai-pool-local-h100'],
    ['of another account', 'https://sqs.us-east-1.amazonaws.com/999999999999/gpuai-pool-local-h100'],
    ['of a pool the node is not in', RecordingHints.url('local/cpu')],
    ['with userinfo', 'https://sqs.us-east-1.amazonaws.com@attacker.example/123456789012/gpuai-pool-local-h100'],
    ['over plain http', 'http://sqs.us-east-1.amazonaws.com/123456789012/gpuai-pool-local-h100'],
  ])('refuses a claim naming a queue URL %s (403), claiming and deleting nothing', async (_, queueUrl) => {
    const hints = new RecordingHints();
    h = inProcessControlPlane({ hints, settings: { livenessMs: 1e12 } });
    const node = new TestNode(h.request);
    expect((await node.register(h100)).status).toBe(201);
    const job = await submitJob(h, { command: ['true'], resources: { gpus: { count: 1 } } });
    await h.cp.scheduler.schedule({ jobId: job.id });
    const taskId = `${job.id}.0`;
    await unchanged(h, async () =>
      expectRefused(
        await node.call('POST', `/v1/nodes/${node.id}/claims`, { taskId, queueUrl, receiptHandle: 'rh-1' }),
        403,
        'foreign_queue',
      ),
    );
    expect(hints.acknowledged).toEqual([]);
    const after = (await (await h.api(`/v1/jobs/${job.id}`)).json()) as { tasks: { state: string }[] };
    expect(after.tasks[0]?.state).toBe('queued');
  });
});
