import { afterEach, describe, expect, it } from 'vitest';
import {
  generateSealingKeyPair,
  type NodeSealContext,
  openSealedEnv,
  SealError,
  type SealedEnv,
  type SealingKeyPair,
} from '../../protocol/index.js';
import { cpuInventory, inProcessControlPlane, TestNode } from '../support/in-process.js';
import { expectRefused, type Harness, submitJob } from './support.js';

/**
 * Jobs sealed to the node (protocol/sealing.ts, functions/domain/security/seal-to-node.ts), end to
 * end through the API: the env a node receives opens only with that node's sealing key, for that
 * task and attempt; one flipped byte anywhere in it, or another node's key, and it does not open.
 * The control plane never stores nor returns the plaintext.
 */

let h: Harness;
afterEach(() => h?.close());

const secret = 'sk-live-0123456789abcdef-security-suite';

async function sealingNode(keys: SealingKeyPair = generateSealingKeyPair()) {
  const node = new TestNode(h.request);
  const res = await node.call('POST', '/v1/nodes', {
    publicKey: node.key.publicKey,
    agentVersion: '0.1.0',
    inventory: cpuInventory(),
    sealingKey: keys.publicKey,
  });
  expect(res.status, await res.clone().text()).toBe(201);
  return { node, keys };
}

/** Flips the lowest bit of byte `at` of a base64url value. */
function flip(b64: string, at: number): string {
  const bytes = Buffer.from(b64, 'base64url');
  const i = at % bytes.length;
  bytes[i] = (bytes[i] ?? 0) ^ 0x01;
  return bytes.toString('base64url');
}

async function sealedAssignment() {
  h = inProcessControlPlane({ settings: { livenessMs: 1e12 } });
  const a = await sealingNode();
  const job = await submitJob(h, { command: ['printenv', 'API_TOKEN'], env: { API_TOKEN: secret } });
  await h.cp.scheduler.schedule({ jobId: job.id });
  const work = await a.node.poll(0);
  const text = await work.text();
  expect(work.status, text).toBe(200);
  expect(text).not.toContain(secret);
  const { assignment } = JSON.parse(text) as {
    assignment: { taskId: string; jobId: string; attempt: number; sealedEnv?: SealedEnv };
  };
  expect(assignment.sealedEnv).toBeDefined();
  const ctx: NodeSealContext = {
    jobId: assignment.jobId,
    taskId: assignment.taskId,
    attempt: assignment.attempt,
    nodeId: a.node.id,
  };
  return { a, job, sealed: assignment.sealedEnv as SealedEnv, ctx };
}

describe('a job sealed to its node', () => {
  it('opens with the node key it was sealed to, and never appears in the store or the job view', async () => {
    const { a, job, sealed, ctx } = await sealedAssignment();
    expect(await openSealedEnv(a.keys.privateKey, sealed, ctx)).toEqual({ API_TOKEN: secret });
    expect(JSON.stringify(h.snapshot())).not.toContain(secret);
    expect(await (await h.api(`/v1/jobs/${job.id}`)).text()).not.toContain(secret);
    expect(JSON.stringify(h.logs)).not.toContain(secret);
  });

  it('does not open with one flipped byte in the encapsulated key, the sealed key or the envelope', async () => {
    const { a, sealed, ctx } = await sealedAssignment();
    for (const part of ['enc', 'key', 'envelope'] as const) {
      const length = Buffer.from(sealed[part], 'base64url').length;
      for (const at of [0, Math.floor(length / 2), length - 1]) {
        const tampered = { ...sealed, [part]: flip(sealed[part], at) };
        await expect(openSealedEnv(a.keys.privateKey, tampered, ctx), `${part}[${at}]`).rejects.toBeInstanceOf(
          SealError,
        );
      }
    }
  });

  it("does not open with another node's key, nor for another node, task or attempt", async () => {
    const { sealed, ctx, a } = await sealedAssignment();
    const other = generateSealingKeyPair();
    await expect(openSealedEnv(other.privateKey, sealed, ctx)).rejects.toBeInstanceOf(SealError);
    for (const moved of [
      { ...ctx, nodeId: `node_${'b'.repeat(26)}` },
      { ...ctx, taskId: `${ctx.jobId}.1` },
      { ...ctx, attempt: ctx.attempt + 1 },
    ]) {
      await expect(openSealedEnv(a.keys.privateKey, sealed, moved)).rejects.toBeInstanceOf(SealError);
    }
  });

  it('gives a job with secrets to no node without a sealing key; the task stays queued', async () => {
    h = inProcessControlPlane({ settings: { livenessMs: 1e12 } });
    const plain = new TestNode(h.request);
    expect((await plain.register()).status).toBe(201);
    const job = await submitJob(h, { command: ['true'], env: { API_TOKEN: secret } });
    await h.cp.scheduler.schedule({ jobId: job.id });
    const res = await plain.poll(0);
    expect(res.status).toBe(204);
    const view = (await (await h.api(`/v1/jobs/${job.id}`)).json()) as { tasks: { state: string }[] };
    expect(view.tasks[0]?.state).toBe('queued');
  });

  it('refuses a sealing key that is not one, registering nothing', async () => {
    h = inProcessControlPlane();
    const node = new TestNode(h.request);
    const before = h.snapshot();
    for (const sealingKey of ['', 'x'.repeat(43).replace(/x$/, '='), 'A'.repeat(44), 12]) {
      await expectRefused(
        await node.call('POST', '/v1/nodes', {
          publicKey: node.key.publicKey,
          agentVersion: '0.1.0',
          inventory: cpuInventory(),
          sealingKey,
        }),
        400,
      );
    }
    expect(h.snapshot()).toEqual(before);
  });
});
