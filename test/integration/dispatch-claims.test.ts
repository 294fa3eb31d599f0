import { describe, expect, it } from 'vitest';
import type { CredentialIssuer, IssuedCredentials } from '../../functions/ports/node-credentials.js';
import type { WorkDispatch, WorkHintMessage, WorkHints } from '../../functions/ports/work-hints.js';
import {
  type Assignment,
  JobSpec,
  type JobSpecInput,
  NodeCredentials,
  type NodeInventory,
  RegisterNodeResponse,
} from '../../protocol/index.js';
import { cpuInventory, inProcessControlPlane, ManualClock, TestNode } from '../support/in-process.js';

const h100s = (count: number): NodeInventory =>
  cpuInventory({
    gpus: Array.from({ length: count }, (_, index) => ({
      index,
      vendor: 'nvidia' as const,
      model: 'NVIDIA H100 80GB HBM3',
      vramMiB: 81559,
      uuid: `GPU-${count}-${index}`,
      computeCapability: '9.0',
    })),
  });
const h100Pool = 'local/h100';

/**
 * A recording {@link WorkHints}: the SQS adapter is tested against moto in aws-work-hints.test.ts;
 * here only what the control plane asks of the port matters.
 */
class RecordingHints implements WorkHints {
  readonly published: WorkHintMessage[] = [];
  readonly acknowledged: { queueUrl: string; receiptHandle: string }[] = [];
  failPublish = false;
  async dispatchFor(pools: readonly string[]): Promise<WorkDispatch> {
    return { mode: 'sqs', region: 'local', queues: pools.map((pool) => ({ pool, url: queueUrl(pool) })) };
  }
  async publish(hint: WorkHintMessage): Promise<void> {
    if (this.failPublish) throw new Error('SQS is down');
    this.published.push(hint);
  }
  async acknowledge(queueUrl: string, receiptHandle: string): Promise<void> {
    this.acknowledged.push({ queueUrl, receiptHandle });
  }
}
const queueUrl = (pool: string) => `http://sqs.test/123456789012/gpuai-pool-${pool.replace(/\W/g, '-')}`;

function world(options: { hints?: WorkHints; credentials?: CredentialIssuer; hintRedriveMs?: number } = {}) {
  const clock = new ManualClock();
  const h = inProcessControlPlane({
    clock,
    settings: {
      leaseMs: 10_000,
      heartbeatIdleMs: 1000,
      livenessMs: 1e12, // nodes stay live while the clock jumps
      ...(options.hintRedriveMs === undefined ? {} : { hintRedriveMs: options.hintRedriveMs }),
    },
    ...(options.hints === undefined ? {} : { hints: options.hints }),
    ...(options.credentials === undefined ? {} : { credentials: options.credentials }),
  });
  const node = async (inventory: NodeInventory) => {
    const n = new TestNode(h.request, clock);
    expect((await n.register(inventory)).status).toBe(201);
    return n;
  };
  const submit = async (spec: JobSpecInput) => {
    const { job } = await h.cp.jobs.submit('default', JobSpec.parse(spec));
    await h.cp.scheduler.schedule({ jobId: job.id });
    const task = (await h.cp.jobs.get('default', job.id)).tasks[0];
    if (task === undefined) throw new Error('no task');
    return task.id;
  };
  const state = async (taskId: string) => {
    const [jobId] = taskId.split('.');
    return (await h.cp.jobs.get('default', jobId ?? '')).tasks[0];
  };
  const claim = (n: TestNode, body: Record<string, unknown>) => n.call('POST', `/v1/nodes/${n.id}/claims`, body);
  return { ...h, clock, node, submit, state, claim };
}

async function expectError(response: Response, status: number, code: string) {
  expect(response.status).toBe(status);
  expect(((await response.json()) as { error: { code: string } }).error.code).toBe(code);
}

describe('claims of hinted tasks', () => {
  it('binds a routed task to the claiming node and acknowledges its hint', async () => {
    const hints = new RecordingHints();
    const w = world({ hints });
    const n = await w.node(h100s(2));
    const taskId = await w.submit({ command: ['true'], resources: { gpus: { count: 2 } } });
    expect(hints.published).toEqual([{ taskId, pool: h100Pool, queuedAt: expect.any(String) }]);

    const response = await w.claim(n, { taskId, queueUrl: queueUrl(h100Pool), receiptHandle: 'rh-1' });
    expect(response.status).toBe(200);
    const { assignment } = (await response.json()) as { assignment: Assignment };
    expect(assignment).toMatchObject({ taskId, attempt: 1, gpuIndices: [0, 1], command: ['true'] });
    expect(await w.state(taskId)).toMatchObject({ state: 'assigned', nodeId: n.id });
    expect(hints.acknowledged).toEqual([{ queueUrl: queueUrl(h100Pool), receiptHandle: 'rh-1' }]);
    await w.close();
  });

  it('refuses a node that does not fit, leaving the task queued and unchanged', async () => {
    const w = world();
    await w.node(h100s(2));
    const small = await w.node(h100s(1)); // same pool, one GPU short
    const taskId = await w.submit({ command: ['true'], resources: { gpus: { count: 2 } } });
    const before = w.snapshot();
    await expectError(await w.claim(small, { taskId }), 409, 'does_not_fit');
    expect(w.snapshot().filter((row) => !String((row as { pk: string }).pk).startsWith('NODE#'))).toEqual(
      before.filter((row) => !String((row as { pk: string }).pk).startsWith('NODE#')),
    );
    expect(await w.state(taskId)).toMatchObject({ state: 'queued', pool: h100Pool, attempt: 0 });
    await w.close();
  });

  it('refuses a second claim, a claim outside the node’s pools, and an unknown task', async () => {
    const w = world();
    const first = await w.node(h100s(2));
    const second = await w.node(h100s(2));
    const cpu = await w.node(cpuInventory());
    const taskId = await w.submit({ command: ['true'], resources: { gpus: { count: 1 } } });
    await expectError(await w.claim(cpu, { taskId }), 409, 'task_not_available');
    expect((await w.claim(first, { taskId })).status).toBe(200);
    await expectError(await w.claim(second, { taskId }), 409, 'task_not_available');
    await expectError(await w.claim(first, { taskId }), 409, 'task_not_available');
    await expectError(await w.claim(first, { taskId: 'job_01JD7Z5C2Q9W8V6T4R2P0N8M6K.0' }), 404, 'task_not_found');
    await expectError(await w.claim(first, { taskId: 'not a task' }), 400, 'validation_failed');
    await w.close();
  });

  it('needs a signature of the node named in the path', async () => {
    const w = world();
    const a = await w.node(cpuInventory());
    const b = await w.node(cpuInventory());
    const taskId = await w.submit({ command: ['true'] });
    expect((await a.call('POST', `/v1/nodes/${b.id}/claims`, { taskId })).status).toBe(403);
    expect((await w.request(`/v1/nodes/${a.id}/claims`, { method: 'POST', body: '{}' })).status).toBe(401);
    expect(await w.state(taskId)).toMatchObject({ state: 'queued' });
    await w.close();
  });

  it('keeps routing when publishing a hint fails', async () => {
    const hints = new RecordingHints();
    hints.failPublish = true;
    const w = world({ hints });
    const n = await w.node(cpuInventory());
    const taskId = await w.submit({ command: ['true'] });
    expect(await w.state(taskId)).toMatchObject({ state: 'queued', pool: 'local/cpu' });
    expect((await w.claim(n, { taskId })).status).toBe(200);
    await w.close();
  });
});

describe('hint re-drive', () => {
  it('re-publishes the hints of tasks still queued after hintRedriveMs, once per period', async () => {
    const hints = new RecordingHints();
    const w = world({ hints, hintRedriveMs: 120_000 });
    const n = await w.node(cpuInventory());
    const old = await w.submit({ command: ['true'] });
    w.clock.advance(60_000);
    const young = await w.submit({ command: ['true'] });
    expect(hints.published.map((h) => h.taskId)).toEqual([old, young]);

    w.clock.advance(30_000); // old: 90 s, young: 30 s
    expect((await w.cp.reaper.tick()).hintsRedriven).toBe(0);
    w.clock.advance(40_000); // old: 130 s
    expect((await w.cp.reaper.tick()).hintsRedriven).toBe(1);
    expect(hints.published.at(-1)).toEqual({ taskId: old, pool: 'local/cpu', queuedAt: expect.any(String) });
    expect((await w.cp.reaper.tick()).hintsRedriven).toBe(0); // just hinted
    w.clock.advance(60_000); // old: hinted 60 s ago; young: 130 s
    expect((await w.cp.reaper.tick()).hintsRedriven).toBe(1);
    expect(hints.published.at(-1)?.taskId).toBe(young);
    w.clock.advance(61_000); // old: hinted 121 s ago
    expect((await w.cp.reaper.tick()).hintsRedriven).toBe(1);
    expect(hints.published.at(-1)?.taskId).toBe(old);

    // A claimed task is hinted no more; the claim still works after the re-drive's writes.
    expect((await w.claim(n, { taskId: old })).status).toBe(200);
    expect((await w.claim(n, { taskId: young })).status).toBe(200);
    w.clock.advance(500_000);
    expect((await w.cp.reaper.tick()).hintsRedriven).toBe(0);
    await w.close();
  });

  it('re-drives nothing where the deployment turns it off', async () => {
    const hints = new RecordingHints();
    const w = world({ hints, hintRedriveMs: Number.POSITIVE_INFINITY });
    await w.node(cpuInventory());
    await w.submit({ command: ['true'] });
    w.clock.advance(10_000_000);
    expect((await w.cp.reaper.tick()).hintsRedriven).toBe(0);
    expect(hints.published).toHaveLength(1);
    await w.close();
  });
});

describe('dispatch and credentials', () => {
  it('registration names long polls, and credentials are not supported, in the embedded deployment', async () => {
    const w = world();
    const n = new TestNode(w.request, w.clock);
    const registered = RegisterNodeResponse.parse(await (await n.register()).json());
    expect(registered.dispatch).toEqual({ mode: 'long-poll' });
    await expectError(await n.call('POST', `/v1/nodes/${n.id}/credentials`), 409, 'not_supported');
    await w.close();
  });

  it('registration names the pool queues, and credentials cover exactly them, where hints go over SQS', async () => {
    const issued: { nodeId: string; queueUrls: readonly string[] }[] = [];
    const credentials: CredentialIssuer = {
      issue: async (nodeId, queueUrls): Promise<IssuedCredentials> => {
        issued.push({ nodeId, queueUrls });
        return { accessKeyId: 'AK', secretAccessKey: 'SK', sessionToken: 'ST', expiresAt: '2026-11-25T13:00:00.000Z' };
      },
    };
    const w = world({ hints: new RecordingHints(), credentials });
    const n = new TestNode(w.request, w.clock);
    const registered = RegisterNodeResponse.parse(await (await n.register()).json());
    expect(registered.dispatch).toEqual({
      mode: 'sqs',
      region: 'local',
      queues: [{ pool: 'local/cpu', url: queueUrl('local/cpu') }],
    });
    const response = await n.call('POST', `/v1/nodes/${n.id}/credentials`);
    expect(response.status).toBe(200);
    expect(NodeCredentials.parse(await response.json())).toMatchObject({ accessKeyId: 'AK', sessionToken: 'ST' });
    expect(issued).toEqual([{ nodeId: n.id, queueUrls: [queueUrl('local/cpu')] }]);
    await w.close();
  });

  it('documents both routes in the OpenAPI document', async () => {
    const w = world();
    const doc = (await (await w.request('/openapi.json')).json()) as { paths: Record<string, unknown> };
    expect(Object.keys(doc.paths)).toEqual(
      expect.arrayContaining(['/v1/nodes/{nodeId}/claims', '/v1/nodes/{nodeId}/credentials']),
    );
    await w.close();
  });
});
