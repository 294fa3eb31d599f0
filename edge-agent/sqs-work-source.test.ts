import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { generateNodeKeyPair, loadNodeKeyPair, nodeIdFromPublicKey, sha256Hex } from '../protocol/index.js';
import { AgentHarness, waitUntil } from '../test/support/agent-harness.js';
import { cpuInventory, TestNode } from '../test/support/in-process.js';
import { MemorySqsWorkHints, memoryPoolQueueUrl, ShortLivedCredentials } from '../test/support/sqs-dispatch.js';
import type { Agent, AgentOptions } from './agent.js';
import { ControlPlaneClient } from './client.js';
import { CredentialCache } from './credentials.js';
import { ClaimRefusedError, RequestRejectedError } from './errors.js';
import { testJobId, testProbe } from './test-support/fixtures.js';
import { MemorySqs } from './test-support/memory-sqs.js';

/**
 * The agent's `sqs` dispatch against the real control plane (test/support/agent-harness.ts), whose
 * pool queues are the in-memory SQS here and whose credentials come from a stand-in for STS
 * (test/support/sqs-dispatch.ts); test/integration/aws-agent-sqs.test.ts runs it over moto.
 * testProbe's node has one NVIDIA L40S in region `local`: one pool.
 */
const pool = 'local/l40s';
const queue = memoryPoolQueueUrl(pool);

let sqs: MemorySqs;
let hints: MemorySqsWorkHints;
let credentials: ShortLivedCredentials;
let harness: AgentHarness;

beforeEach(async () => {
  sqs = new MemorySqs();
  hints = new MemorySqsWorkHints(sqs);
  credentials = new ShortLivedCredentials();
  harness = await AgentHarness.start({ dataDirPrefix: 'gpuai-agent-sqs-', ports: { hints, credentials } });
});

afterEach(async () => {
  await harness.stop();
});

const logged = (fragment: string) => harness.logged(fragment);

function startAgent(overrides: Partial<AgentOptions> = {}): { agent: Agent; running: Promise<void> } {
  return harness.startAgent({ name: 'sqs-node', sqs: sqs.port, ...overrides });
}

/** Starts an agent and waits until it receives from its queues. */
async function receivingAgent(overrides: Partial<AgentOptions> = {}) {
  const started = startAgent(overrides);
  await waitUntil('a receive', () => sqs.receives.length >= 1);
  return started;
}

const hint = (taskId: string) => ({ taskId, pool, queuedAt: new Date().toISOString() });

/**
 * A job for two L40S: hints name pools, not nodes, so once a node with two joins the agent's pool
 * the server hints the job there, and the agent (one L40S) receives a hint of a task it cannot run.
 */
async function jobForTheBigNode(): Promise<{ taskId: string }> {
  const bigNode = new TestNode((path, init) => fetch(`${harness.api.url}${path}`, init));
  const l40s = (await testProbe()).inventory.gpus[0];
  if (l40s === undefined) throw new Error('testProbe has a GPU');
  const registered = await bigNode.register(cpuInventory({ gpus: [l40s, { ...l40s, index: 1, uuid: 'GPU-2' }] }));
  expect(registered.status).toBe(201);
  const job = await harness.submit({ command: ['true'], resources: { gpus: { count: 2 } } });
  return { taskId: job.tasks[0]?.id ?? '' };
}

describe('Agent with sqs dispatch', { timeout: 60_000 }, () => {
  it('claims the hinted task, runs it and reports its result; the server deletes the hint', async () => {
    const { agent } = await receivingAgent();
    const job = await harness.submit({ command: ['printf', 'hello'] });
    const done = await harness.finished(job.id);
    expect(done.status).toBe('succeeded');
    expect(done.tasks[0]?.result).toMatchObject({
      exitCode: 0,
      outputs: [{ name: 'stdout', sha256: sha256Hex('hello'), bytes: 5 }],
    });

    const [claim] = harness.sent('POST', '/claims');
    expect(JSON.parse(claim?.body ?? '{}')).toEqual({
      taskId: done.tasks[0]?.id,
      queueUrl: queue,
      receiptHandle: 'rh-1',
    });
    expect(hints.acknowledged).toEqual(['rh-1']);
    expect(sqs.visible(queue)).toBe(0);
    expect(sqs.configs[0]).toMatchObject({ region: 'eu-west-1', credentials: { accessKeyId: 'ASIAFAKE1' } });
    expect(sqs.configs[0]?.endpoint).toBeUndefined();
    expect(credentials.issued).toMatchObject([{ nodeId: agent.nodeId, queueUrls: [queue] }]);
    expect(harness.sent('GET', '/work')).toEqual([]);
    expect(logged('work dispatch: sqs, 1 pool queue(s)')).toBe(true);
  });

  it('polls its pools in turn, so a hint in the second pool is found', async () => {
    const twoPools = async () => {
      const report = await testProbe();
      const h100 = {
        index: 1,
        vendor: 'nvidia' as const,
        model: 'NVIDIA H100 80GB HBM3',
        vramMiB: 81559,
        uuid: 'GPU-2',
      };
      return { ...report, inventory: { ...report.inventory, gpus: [...report.inventory.gpus, h100] } };
    };
    startAgent({ probe: twoPools });
    await waitUntil('four receives', () => sqs.receives.length >= 4);
    const queues = sqs.receives.slice(0, 4).map((receive) => receive.queueUrl);
    const [first, second] = ['local/h100', 'local/l40s'].map(memoryPoolQueueUrl);
    expect(queues).toEqual([first, second, first, second]);
    const job = await harness.submit({ command: ['true'], resources: { gpus: { count: 1, models: ['L40S'] } } });
    expect((await harness.finished(job.id)).status).toBe('succeeded');
    expect(JSON.parse(harness.sent('POST', '/claims')[0]?.body ?? '{}')).toMatchObject({ queueUrl: second });
  });

  it('releases a hint of a task that does not fit, and releases it unclaimed when it comes back', async () => {
    await receivingAgent();
    const { taskId } = await jobForTheBigNode();
    await waitUntil('two releases', () => sqs.releases.length >= 2);
    expect(sqs.releases.slice(0, 2)).toEqual(['rh-1', 'rh-2']);
    const claims = harness.sent('POST', '/claims');
    expect(claims).toHaveLength(1);
    expect(claims[0]?.status).toBe(409);
    expect(logged(`task ${taskId} does not fit this node; hint released`)).toBe(true);
    expect((await harness.task(taskId.slice(0, taskId.lastIndexOf('.')))).state).toBe('queued');
  });

  it('leaves a stale hint alone: one of a task the server does not know (404)', async () => {
    await receivingAgent();
    const taskId = `${testJobId('S')}.0`;
    sqs.send(queue, hint(taskId));
    await waitUntil('the claim answered', () => harness.sent('POST', '/claims')[0]?.status);
    await waitUntil('the agent to log it', () => logged(`stale work hint for task ${taskId}`));
    expect(sqs.releases).toEqual([]);
    expect(sqs.visible(queue)).toBe(0);
    expect(harness.sent('POST', '/claims')).toHaveLength(1);
  });

  it('leaves a stale hint alone: a duplicate of a hint whose task it already ran (409)', async () => {
    await receivingAgent();
    const job = await harness.submit({ command: ['true'] });
    expect((await harness.finished(job.id)).status).toBe('succeeded');
    const taskId = job.tasks[0]?.id ?? '';
    sqs.send(queue, hint(taskId));
    await waitUntil('the agent to log it', () => logged(`stale work hint for task ${taskId} (409 task_not_available`));
    expect(harness.sent('POST', '/claims').map((claim) => claim.status)).toEqual([200, 409]);
    expect(sqs.releases).toEqual([]);
  });

  it('sets a malformed hint aside for 12 hours and logs it', async () => {
    sqs.send(queue, 'not json');
    sqs.send(queue, { taskId: 'nope' });
    startAgent();
    await waitUntil(
      'both logged',
      () =>
        logged('malformed work hint set aside for 12 h: not JSON') &&
        logged('malformed work hint set aside for 12 h: taskId'),
    );
    expect(sqs.releases).toHaveLength(2);
    expect(sqs.visible(queue)).toBe(0);
    expect(harness.sent('POST', '/claims')).toEqual([]);
  });

  it('refreshes the credentials at 75 % of their life, and when SQS says they expired', async () => {
    credentials.lifetimeMs = 1_400;
    startAgent();
    await waitUntil('a second issue', () => credentials.issued.length >= 2);
    await waitUntil('a receive with them', () => sqs.receives.some((receive) => receive.accessKeyId === 'ASIAFAKE2'));

    credentials.lifetimeMs = 3_600_000;
    await waitUntil('a third, long-lived, issue', () => credentials.issued.length >= 3);
    const before = credentials.issued.length;
    const expired = new Error('The security token included in the request is expired');
    expired.name = 'ExpiredToken';
    sqs.failNextReceive = expired;
    await waitUntil('a fresh issue', () => credentials.issued.length === before + 1);
    expect(logged('SQS refused the node credentials')).toBe(true);
    // Each generation of credentials gets its own SQS client; the replaced ones are closed.
    await waitUntil('the old clients closed', () => sqs.destroyed >= sqs.configs.length - 1);
  });

  it('stops a waiting receive at shutdown at once', async () => {
    const started = await receivingAgent({ pollWaitSeconds: 20 });
    const stoppingAt = Date.now();
    await started.agent.shutdown();
    await started.running;
    harness.forget(started);
    expect(Date.now() - stoppingAt).toBeLessThan(1_000);
    expect(sqs.destroyed).toBe(sqs.configs.length);
  });

  it('switches to the dispatch a new registration names', async () => {
    await receivingAgent();
    // A control plane that forgot the node and dispatches by long poll: the next signed call (a
    // heartbeat) gets 401, and the agent registers again.
    await harness.replaceControlPlane('embedded');
    await waitUntil('a second registration', () => harness.sent('POST', '/v1/nodes').length === 2);
    const job = await harness.submit({ command: ['true'] });
    expect((await harness.finished(job.id)).status).toBe('succeeded');
    expect(harness.sent('GET', '/work').length).toBeGreaterThan(0);
  });
});

describe('ControlPlaneClient claims and credentials', { timeout: 60_000 }, () => {
  async function registeredClient(): Promise<ControlPlaneClient> {
    const keyPair = loadNodeKeyPair(generateNodeKeyPair().privateKeyPem);
    const client = new ControlPlaneClient({
      api: harness.url,
      nodeId: nodeIdFromPublicKey(keyPair.publicKey),
      keyPair,
      backoff: { initialMs: 10, maxMs: 20 },
    });
    const { inventory } = await testProbe();
    await client.register({ publicKey: keyPair.publicKey, agentVersion: '0.0.0-test', inventory });
    return client;
  }

  it('claims a task and gets its assignment; the hint it names is deleted', async () => {
    const client = await registeredClient();
    const job = await harness.submit({ command: ['true'] });
    const taskId = job.tasks[0]?.id ?? '';
    await waitUntil('the task hinted', () => sqs.visible(queue) === 1);
    await expect(client.claim(taskId, queue, 'rh-x')).resolves.toMatchObject({
      taskId,
      jobId: job.id,
      attempt: 1,
      command: ['true'],
    });
    expect(hints.acknowledged).toEqual(['rh-x']);
    expect((await harness.task(job.id)).state).toBe('assigned');
  });

  it('surfaces the 409 codes of a refused claim as ClaimRefusedError, and an unknown task as 404', async () => {
    const client = await registeredClient();
    const job = await harness.submit({ command: ['true'] });
    const taskId = job.tasks[0]?.id ?? '';
    await waitUntil('the task hinted', () => sqs.visible(queue) === 1);
    await client.claim(taskId, queue, 'rh-x');
    const taken = await client.claim(taskId, queue, 'rh-y').catch((error: unknown) => error);
    expect(taken).toBeInstanceOf(ClaimRefusedError);
    expect(taken).toMatchObject({ status: 409, code: 'task_not_available' });

    const misfit = await client
      .claim((await jobForTheBigNode()).taskId, queue, 'rh-z')
      .catch((error: unknown) => error);
    expect(misfit).toBeInstanceOf(ClaimRefusedError);
    expect(misfit).toMatchObject({ status: 409, code: 'does_not_fit' });

    // A task the server never had is not a refused claim: 404, which the agent treats as a stale hint.
    const unknown = await client.claim(`${testJobId('R')}.0`, queue, 'rh-w').catch((error: unknown) => error);
    expect(unknown).toBeInstanceOf(RequestRejectedError);
    expect(unknown).not.toBeInstanceOf(ClaimRefusedError);
    expect(unknown).toMatchObject({ status: 404, code: 'task_not_found' });
  });

  it('fetches credentials scoped to its pool queues with an empty signed body', async () => {
    const client = await registeredClient();
    expect(await client.credentials()).toMatchObject({
      accessKeyId: 'ASIAFAKE1',
      secretAccessKey: 'secret-1',
      sessionToken: 'token-1',
    });
    expect(credentials.issued).toMatchObject([{ queueUrls: [queue] }]);
    const [sent] = harness.sent('POST', '/credentials');
    expect(sent).toMatchObject({ body: '{}', status: 200 });
  });
});

describe('CredentialCache', () => {
  it('keeps credentials for 75 % of their life and shares one fetch', async () => {
    let now = 1_000_000;
    let fetches = 0;
    const cache = new CredentialCache({
      now: () => now,
      fetch: () => {
        fetches++;
        return Promise.resolve({
          accessKeyId: `key-${fetches}`,
          secretAccessKey: 's',
          sessionToken: 't',
          expiresAt: new Date(now + 100_000).toISOString(),
        });
      },
    });
    const signal = new AbortController().signal;
    const [first, second] = await Promise.all([cache.get(signal), cache.get(signal)]);
    expect(first).toBe(second);
    expect(fetches).toBe(1);
    now += 74_000;
    expect(await cache.get(signal)).toBe(first);
    now += 2_000;
    const refreshed = await cache.get(signal);
    expect(refreshed.accessKeyId).toBe('key-2');
    cache.invalidate(first);
    expect(await cache.get(signal)).toBe(refreshed);
    cache.invalidate(refreshed);
    expect((await cache.get(signal)).accessKeyId).toBe('key-3');
  });
});
