import { setTimeout as delay } from 'node:timers/promises';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { generateNodeKeyPair, loadNodeKeyPair, nodeIdFromPublicKey, sha256Hex } from '../protocol/index.js';
import type { Agent, AgentOptions } from './agent.js';
import { ControlPlaneClient } from './client.js';
import { CredentialCache } from './credentials.js';
import { ClaimRefusedError, RequestRejectedError } from './errors.js';
import { AgentHarness } from './test-support/agent-harness.js';
import type { FakeControlPlane } from './test-support/fake-control-plane.js';
import { testAssignment, testJobId, testProbe } from './test-support/fixtures.js';
import { MemorySqs } from './test-support/memory-sqs.js';

const queueA = 'https://sqs.eu-west-1.amazonaws.com/123456789012/gpuai-pool-a';
const queueB = 'https://sqs.eu-west-1.amazonaws.com/123456789012/gpuai-pool-b';

let fake: FakeControlPlane;
let sqs: MemorySqs;
let _dataDir: string;
let _logLines: string[];
let harness: AgentHarness;

beforeEach(async () => {
  harness = await AgentHarness.start('gpuai-agent-sqs-');
  fake = harness.fake;
  _dataDir = harness.dataDir;
  _logLines = harness.logLines;
  fake.dispatch = {
    mode: 'sqs',
    region: 'eu-west-1',
    queues: [
      { pool: 'eu-west-1/a', url: queueA },
      { pool: 'eu-west-1/b', url: queueB },
    ],
  };
  sqs = new MemorySqs();
});

afterEach(async () => {
  await harness.stop();
});

const logged = (fragment: string) => harness.logged(fragment);

function startAgent(overrides: Partial<AgentOptions> = {}): { agent: Agent; running: Promise<void> } {
  return harness.startAgent({ name: 'sqs-node', sqs: sqs.port, ...overrides });
}

const hint = (taskId: string, pool = 'eu-west-1/a') => ({ taskId, pool, queuedAt: new Date().toISOString() });

describe('Agent with sqs dispatch', () => {
  it('claims the hinted task, runs it and reports its result', async () => {
    const assignment = testAssignment(['printf', 'hello']);
    fake.offer(assignment);
    sqs.send(queueA, hint(assignment.taskId));
    startAgent();

    const result = await fake.waitFor(() => fake.results.get(assignment.taskId));
    expect(result).toMatchObject({ exitCode: 0, outputs: [{ name: 'stdout', sha256: sha256Hex('hello'), bytes: 5 }] });
    expect(fake.claims).toEqual([{ taskId: assignment.taskId, queueUrl: queueA, receiptHandle: 'rh-1' }]);
    expect(sqs.configs[0]).toMatchObject({ region: 'eu-west-1', credentials: { accessKeyId: 'ASIAFAKE1' } });
    expect(sqs.configs[0]?.endpoint).toBeUndefined();
    expect(fake.issuedCredentials).toHaveLength(1);
    expect(fake.received.some((request) => request.path.endsWith('/work'))).toBe(false);
    expect(fake.badSignatures).toBe(0);
    expect(logged('work dispatch: sqs, 2 pool queue(s)')).toBe(true);
  });

  it('polls its pools in turn, so a hint in the second pool is found', async () => {
    const assignment = testAssignment(['true']);
    fake.offer(assignment);
    sqs.send(queueB, hint(assignment.taskId, 'eu-west-1/b'));
    startAgent();
    await fake.waitFor(() => fake.results.get(assignment.taskId));
    await fake.waitFor(() => sqs.receives.length >= 4);
    const queues = sqs.receives.slice(0, 4).map((receive) => receive.queueUrl);
    expect(queues).toEqual([queueA, queueB, queueA, queueB]);
  });

  it('releases a hint that does not fit, and releases it unclaimed when it comes back', async () => {
    const assignment = testAssignment(['true']);
    fake.doesNotFit.add(assignment.taskId);
    sqs.send(queueA, hint(assignment.taskId));
    startAgent();
    await fake.waitFor(() => sqs.releases.length >= 2);
    expect(sqs.releases.slice(0, 2)).toEqual(['rh-1', 'rh-2']);
    expect(fake.claims).toHaveLength(1);
    expect(logged(`task ${assignment.taskId} does not fit this node; hint released`)).toBe(true);
  });

  it('leaves a stale hint alone', async () => {
    const taskId = `${testJobId('S')}.0`;
    sqs.send(queueA, hint(taskId));
    startAgent();
    await fake.waitFor(() => fake.claims.length === 1);
    await delay(300);
    expect(sqs.releases).toEqual([]);
    expect(sqs.visible(queueA)).toBe(0);
    expect(fake.claims).toHaveLength(1);
    expect(logged(`stale work hint for task ${taskId}`)).toBe(true);
  });

  it('releases and logs a malformed hint', async () => {
    sqs.send(queueA, 'not json');
    sqs.send(queueB, { taskId: 'nope' });
    startAgent();
    await fake.waitFor(() => sqs.releases.length >= 2);
    expect(fake.claims).toEqual([]);
    expect(logged('malformed work hint released: not JSON')).toBe(true);
    expect(logged('malformed work hint released: taskId')).toBe(true);
  });

  it('refreshes the credentials at 75 % of their life, and when SQS says they expired', async () => {
    fake.credentialLifetimeMs = 1_400;
    startAgent();
    await fake.waitFor(() => fake.issuedCredentials.length >= 2, 5_000);
    await fake.waitFor(() => sqs.receives.some((receive) => receive.accessKeyId === 'ASIAFAKE2'));

    fake.credentialLifetimeMs = 3_600_000;
    await fake.waitFor(() => fake.issuedCredentials.length >= 3, 5_000);
    const before = fake.issuedCredentials.length;
    const expired = new Error('The security token included in the request is expired');
    expired.name = 'ExpiredToken';
    sqs.failNextReceive = expired;
    await fake.waitFor(() => fake.issuedCredentials.length === before + 1);
    expect(logged('SQS refused the node credentials')).toBe(true);
    // Each generation of credentials gets its own SQS client; the replaced ones are closed.
    await fake.waitFor(() => sqs.destroyed >= sqs.configs.length - 1);
  });

  it('stops a waiting receive at shutdown at once', async () => {
    const started = startAgent({ pollWaitSeconds: 20 });
    await fake.waitFor(() => sqs.receives.length === 1);
    const stoppingAt = Date.now();
    await started.agent.shutdown();
    await started.running;
    harness.forget(started);
    expect(Date.now() - stoppingAt).toBeLessThan(1_000);
    expect(sqs.destroyed).toBe(sqs.configs.length);
  });

  it('switches to the dispatch a new registration names', async () => {
    startAgent();
    await fake.waitFor(() => sqs.receives.length >= 1);
    fake.dispatch = undefined;
    fake.forgetNodes();
    // The next signed call (a heartbeat) gets 401, and the agent registers again: now long-poll.
    await fake.waitFor(() => fake.registrations.length === 2);
    const assignment = testAssignment(['true']);
    fake.enqueue(assignment);
    await fake.waitFor(() => fake.results.get(assignment.taskId));
  });
});

describe('ControlPlaneClient claims and credentials', () => {
  async function registeredClient(): Promise<ControlPlaneClient> {
    const keyPair = loadNodeKeyPair(generateNodeKeyPair().privateKeyPem);
    const client = new ControlPlaneClient({
      api: fake.url,
      nodeId: nodeIdFromPublicKey(keyPair.publicKey),
      keyPair,
      backoff: { initialMs: 10, maxMs: 20 },
    });
    const { inventory } = await testProbe();
    await client.register({ publicKey: keyPair.publicKey, agentVersion: '0.0.0-test', inventory });
    return client;
  }

  it('claims a task and gets its assignment', async () => {
    const client = await registeredClient();
    const assignment = testAssignment(['true']);
    fake.offer(assignment);
    await expect(client.claim(assignment.taskId, queueA, 'rh-x')).resolves.toEqual(assignment);
    expect(fake.claims).toEqual([{ taskId: assignment.taskId, queueUrl: queueA, receiptHandle: 'rh-x' }]);
    expect(fake.badSignatures).toBe(0);
  });

  it('surfaces the 409 codes of a refused claim as ClaimRefusedError', async () => {
    const client = await registeredClient();
    const taskId = `${testJobId('R')}.0`;
    const stale = await client.claim(taskId, queueA, 'rh-y').catch((error: unknown) => error);
    expect(stale).toBeInstanceOf(ClaimRefusedError);
    expect(stale).toMatchObject({ status: 409, code: 'task_not_available' });
    fake.doesNotFit.add(taskId);
    const misfit = await client.claim(taskId, queueA, 'rh-y').catch((error: unknown) => error);
    expect(misfit).toMatchObject({ status: 409, code: 'does_not_fit' });
    expect(misfit).toBeInstanceOf(RequestRejectedError);
  });

  it('fetches credentials with an empty signed body', async () => {
    const client = await registeredClient();
    const credentials = await client.credentials();
    expect(credentials).toMatchObject({
      accessKeyId: 'ASIAFAKE1',
      secretAccessKey: 'secret-1',
      sessionToken: 'token-1',
    });
    expect(fake.received.at(-1)).toMatchObject({ method: 'POST', body: {} });
    expect(fake.received.at(-1)?.path).toMatch(/\/credentials$/);
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
