import { randomBytes } from 'node:crypto';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { LocalKeys } from '../../functions/adapters/embedded/local-keys.js';
import {
  type Assignment,
  canonicalJson,
  generateSealingKeyPair,
  JobSpec,
  type JobWithTasks,
  openResultText,
  openSealedEnv,
  resultHash,
  SealError,
  type SealingKeyPair,
  sealResultText,
  sha256Hex,
} from '../../protocol/index.js';
import { cpuInventory, inProcessControlPlane, TestNode } from '../support/in-process.js';

/**
 * Jobs sealed to the node, through the HTTP API: the env leaves the control plane only sealed to
 * the claiming node's X25519 key, nodes without one never receive a job with secrets, results
 * can be sealed to a key given at submit, and no secret shows in any response, log or record.
 */
type Harness = ReturnType<typeof inProcessControlPlane>;
let h: Harness;
/** Every response body read through this file's helpers: grepped for the secret at the end of tests. */
let bodies: string[];
const secret = `s3cret-${randomBytes(8).toString('hex')}`;

beforeEach(() => {
  h = inProcessControlPlane();
  bodies = [];
});
afterEach(async () => {
  vi.restoreAllMocks();
  await h.close();
});

async function text(response: Response | Promise<Response>): Promise<{ status: number; body: string }> {
  const r = await response;
  const body = await r.text();
  bodies.push(body);
  return { status: r.status, body };
}

const submit = (body: unknown, headers: Record<string, string> = {}) =>
  text(
    h.api('/v1/jobs', {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...headers },
      body: JSON.stringify(body),
    }),
  );

async function submitJob(body: unknown): Promise<JobWithTasks> {
  const { status, body: json } = await submit(body);
  expect(status).toBe(201);
  const job = JSON.parse(json) as JobWithTasks;
  await h.cp.scheduler.schedule({ jobId: job.id });
  return job;
}

/** A test node that registers an X25519 sealing key (as the agent does), or none. */
class SealingNode extends TestNode {
  readonly sealing: SealingKeyPair | undefined;
  constructor(withKey: boolean) {
    super(h.request);
    this.sealing = withKey ? generateSealingKeyPair() : undefined;
  }
  override register() {
    return this.call('POST', '/v1/nodes', {
      publicKey: this.key.publicKey,
      agentVersion: '0.1.0',
      inventory: cpuInventory(),
      ...(this.sealing === undefined ? {} : { sealingKey: this.sealing.publicKey }),
    });
  }
  async work(): Promise<{ status: number; assignment?: Assignment }> {
    const { status, body } = await text(this.poll(0));
    return status === 200
      ? { status, assignment: (JSON.parse(body) as { assignment: Assignment }).assignment }
      : { status };
  }
}

async function registered(withKey: boolean): Promise<SealingNode> {
  const node = new SealingNode(withKey);
  expect((await text(node.register())).status).toBe(201);
  return node;
}

const ctxOf = (a: Assignment, nodeId: string) => ({ jobId: a.jobId, taskId: a.taskId, attempt: a.attempt, nodeId });

describe('jobs sealed to the node', () => {
  it('sends the env only sealed to the claiming node, which opens it', async () => {
    const node = await registered(true);
    const job = await submitJob({ command: ['printenv', 'TOKEN'], env: { TOKEN: secret, MODE: 'fast' } });
    const { status, assignment } = await node.work();
    expect(status).toBe(200);
    if (assignment?.sealedEnv === undefined || node.sealing === undefined) throw new Error('no sealed env');
    expect(assignment.jobId).toBe(job.id);
    expect(assignment).not.toHaveProperty('env');
    expect(JSON.stringify(assignment)).not.toContain(secret);
    expect(assignment.sealedEnv?.suite).toBe('hpke-x25519-sha256-aes256gcm-v1');
    expect(await openSealedEnv(node.sealing.privateKey, assignment.sealedEnv, ctxOf(assignment, node.id))).toEqual({
      TOKEN: secret,
      MODE: 'fast',
    });
  });

  it("refuses to open with another node's key, for another node id, or with one byte flipped", async () => {
    const node = await registered(true);
    await submitJob({ command: ['true'], env: { TOKEN: secret } });
    const { assignment } = await node.work();
    if (assignment?.sealedEnv === undefined || node.sealing === undefined) throw new Error('no sealed env');
    const sealed = assignment.sealedEnv;
    const other = generateSealingKeyPair();
    await expect(openSealedEnv(other.privateKey, sealed, ctxOf(assignment, node.id))).rejects.toBeInstanceOf(SealError);
    await expect(
      openSealedEnv(node.sealing.privateKey, sealed, ctxOf(assignment, new TestNode(h.request).id)),
    ).rejects.toBeInstanceOf(SealError);
    const flipped = Buffer.from(sealed.key, 'base64url');
    flipped[3] = (flipped[3] ?? 0) ^ 0x80;
    await expect(
      openSealedEnv(
        node.sealing.privateKey,
        { ...sealed, key: flipped.toString('base64url') },
        ctxOf(assignment, node.id),
      ),
    ).rejects.toBeInstanceOf(SealError);
  });

  it('never gives a job with env secrets to a node without a sealing key; jobs without env still go to it', async () => {
    const plain = await registered(false);
    const secretJob = await submitJob({ command: ['true'], env: { TOKEN: secret } });
    expect((await plain.work()).status).toBe(204);
    const open = await submitJob({ command: ['true'] });
    const { assignment } = await plain.work();
    expect(assignment?.jobId).toBe(open.id);
    expect(assignment?.sealedEnv).toBeUndefined();
    expect((await plain.work()).status).toBe(204);
    // Nor a job with a result key: an agent without a sealing key would report its logs in the clear.
    const resultKeyJob = await submitJob({ command: ['true'], resultKey: generateSealingKeyPair().publicKey });
    expect((await plain.work()).status).toBe(204);
    // Both are still queued, and a node that can open and seal gets them.
    const sealing = await registered(true);
    const taken = [(await sealing.work()).assignment?.jobId, (await sealing.work()).assignment?.jobId];
    expect(taken.sort()).toEqual([secretJob.id, resultKeyJob.id].sort());
  });

  it('seals to the key of the latest signed registration (an agent that made a new key)', async () => {
    const node = await registered(true);
    const renewed = generateSealingKeyPair();
    const again = await text(
      node.call('POST', '/v1/nodes', {
        publicKey: node.key.publicKey,
        agentVersion: '0.1.0',
        inventory: cpuInventory(),
        sealingKey: renewed.publicKey,
      }),
    );
    expect(again.status).toBe(200);
    await submitJob({ command: ['true'], env: { TOKEN: secret } });
    const { assignment } = await node.work();
    if (assignment?.sealedEnv === undefined || node.sealing === undefined) throw new Error('no sealed env');
    const ctx = ctxOf(assignment, node.id);
    expect(await openSealedEnv(renewed.privateKey, assignment.sealedEnv, ctx)).toEqual({ TOKEN: secret });
    await expect(openSealedEnv(node.sealing.privateKey, assignment.sealedEnv, ctx)).rejects.toBeInstanceOf(SealError);
  });

  it('unwraps the data key only for the node that won the claim', async () => {
    const unwrap = vi.spyOn(LocalKeys.prototype, 'unwrap');
    const plain = await registered(false);
    const racers = await Promise.all([registered(true), registered(true), registered(true)]);
    await submitJob({ command: ['true'], env: { TOKEN: secret } });
    expect((await plain.work()).status).toBe(204);
    expect(unwrap).not.toHaveBeenCalled();
    const outcomes = await Promise.all(racers.map((node) => node.work()));
    expect(outcomes.filter((o) => o.status === 200)).toHaveLength(1);
    expect(unwrap).toHaveBeenCalledTimes(1);
  });

  it('refuses a result key nothing can be sealed to (a low-order point), writing nothing', async () => {
    const before = h.snapshot();
    for (const hex of ['00'.repeat(32), `01${'00'.repeat(31)}`, `ec${'ff'.repeat(30)}7f`]) {
      const { status, body } = await submit({
        command: ['true'],
        resultKey: Buffer.from(hex, 'hex').toString('base64url'),
      });
      expect(status, hex).toBe(400);
      expect(body).toContain('low-order point');
    }
    expect(h.snapshot()).toEqual(before);
  });

  it('keeps results sealed to the key given at submit: the control plane holds only ciphertext', async () => {
    const resultKey = generateSealingKeyPair();
    const node = await registered(true);
    const job = await submitJob({
      command: ['printenv', 'TOKEN'],
      env: { TOKEN: secret },
      resultKey: resultKey.publicKey,
    });
    expect(job.spec.resultKey).toBe(resultKey.publicKey);
    const { assignment } = await node.work();
    if (assignment === undefined) throw new Error('no assignment');
    expect(assignment.resultKey).toBe(resultKey.publicKey);
    const ctx = { jobId: assignment.jobId, taskId: assignment.taskId };
    const progress = {
      attempt: assignment.attempt,
      message: await sealResultText(resultKey.publicKey, `loaded ${secret}`, { ...ctx, field: 'message' }),
      logTail: await sealResultText(resultKey.publicKey, `${secret}\n`, { ...ctx, field: 'logTail' }),
    };
    const path = `/v1/nodes/${node.id}/tasks/${assignment.taskId}`;
    expect((await text(node.call('POST', `${path}/progress`, progress))).status).toBe(200);
    const outputs = [{ name: 'stdout', sha256: sha256Hex(`${secret}\n`), bytes: secret.length + 1 }];
    const result = {
      attempt: assignment.attempt,
      exitCode: 0,
      resultHash: resultHash(outputs),
      outputs,
      metrics: { wallMs: 5 },
      logTail: await sealResultText(resultKey.publicKey, `${secret}\n`, { ...ctx, field: 'logTail' }),
    };
    expect((await text(node.call('POST', `${path}/result`, result))).status).toBe(200);
    const { body } = await text(h.api(`/v1/jobs/${job.id}`));
    const logTail = (JSON.parse(body) as JobWithTasks).tasks[0]?.result?.logTail;
    expect(logTail).toMatch(/^hpke1\./);
    expect(await openResultText(resultKey.privateKey, logTail ?? '', { ...ctx, field: 'logTail' })).toBe(`${secret}\n`);
    expect(JSON.stringify(h.snapshot())).not.toContain(secret);
  });

  it('refuses a result key that is not an X25519 public key', async () => {
    const { status } = await submit({ command: ['true'], resultKey: 'not-a-key' });
    expect(status).toBe(400);
  });
});

describe('idempotency without a plain hash of secrets', () => {
  const body = { command: ['true'], env: { TOKEN: secret } };

  it('stores no sha-256 of the request nor any env value, and still tells a replay from a reused key', async () => {
    const first = await submit(body, { 'idempotency-key': 'order-7' });
    expect(first.status).toBe(201);
    const plainHash = sha256Hex(canonicalJson(JobSpec.parse(body)));
    const stored = JSON.stringify(h.snapshot());
    expect(stored).not.toContain(plainHash);
    expect(stored).not.toContain(secret);
    const idem = h.snapshot().filter((row) => (row as { pk: string }).pk.startsWith('IDEM#'));
    expect(idem).toHaveLength(1);
    expect(JSON.stringify(idem)).toContain('requestMac');

    const again = await submit(body, { 'idempotency-key': 'order-7' });
    expect(again.status).toBe(200);
    expect((JSON.parse(again.body) as JobWithTasks).id).toBe((JSON.parse(first.body) as JobWithTasks).id);

    const before = JSON.stringify(h.snapshot());
    const other = await submit({ ...body, env: { TOKEN: `${secret}-2` } }, { 'idempotency-key': 'order-7' });
    expect(other.status).toBe(409);
    expect(JSON.parse(other.body).error.code).toBe('idempotency_key_reused');
    expect(JSON.stringify(h.snapshot())).toBe(before);
  });

  it('keys the comparison for jobs without env too', async () => {
    const plainBody = { command: ['echo', 'hello'] };
    expect((await submit(plainBody, { 'idempotency-key': 'k1' })).status).toBe(201);
    expect(JSON.stringify(h.snapshot())).not.toContain(sha256Hex(canonicalJson(JobSpec.parse(plainBody))));
    expect((await submit(plainBody, { 'idempotency-key': 'k1' })).status).toBe(200);
    expect((await submit({ command: ['echo', 'bye'] }, { 'idempotency-key': 'k1' })).status).toBe(409);
  });
});

describe('no secret in responses, errors or logs', () => {
  it('a job with a secret env: every response body and every captured log line is free of it', async () => {
    const node = await registered(true);
    const job = await submitJob({ command: ['true'], env: { TOKEN: secret }, name: 'secretive' });
    await submit({ command: ['true'], env: { TOKEN: secret } }, { 'idempotency-key': 'x' });
    await submit({ command: ['false'], env: { TOKEN: secret } }, { 'idempotency-key': 'x' }); // 409
    await submit({ command: ['true'], env: { TOKEN: secret, 'BAD-NAME': secret } }); // 400
    await text(h.api(`/v1/jobs/${job.id}`));
    await text(h.api('/v1/jobs'));
    await text(h.api(`/v1/jobs/${job.id}/tasks`));
    const { assignment } = await node.work();
    if (assignment === undefined) throw new Error('no assignment');
    const path = `/v1/nodes/${node.id}/tasks/${assignment.taskId}`;
    await text(node.call('POST', `${path}/progress`, { attempt: assignment.attempt }));
    await text(node.call('POST', `${path}/fail`, { attempt: assignment.attempt, reason: 'error', message: 'boom' }));
    await text(h.api(`/v1/jobs/${job.id}/cancel`, { method: 'POST' }));
    await text(h.api(`/v1/nodes/${node.id}`));
    await text(h.api('/v1/nodes'));
    // A sealing failure after the claim (KMS down) answers 503 and logs the error: without the secret.
    await submitJob({ command: ['true'], env: { TOKEN: secret } });
    vi.spyOn(LocalKeys.prototype, 'unwrap').mockRejectedValueOnce(new Error('KMS is unavailable'));
    expect((await node.work()).status).toBe(503);
    expect(bodies.length).toBeGreaterThan(10);
    for (const body of bodies) expect(body).not.toContain(secret);
    expect(h.logs.length).toBeGreaterThan(0);
    for (const line of h.logs) expect(JSON.stringify(line)).not.toContain(secret);
    expect(JSON.stringify(h.snapshot())).not.toContain(secret);
  });
});
