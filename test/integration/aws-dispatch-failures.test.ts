import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ControlPlane, Ports } from '../../functions/control-plane.js';
import { type NodeRecord, nodeKey } from '../../functions/domain/resource/node-record.js';
import { type JobRecord, jobKey, putJob } from '../../functions/domain/scheduling/job-record.js';
import { type TaskRecord, taskKey } from '../../functions/domain/scheduling/task-record.js';
import { type Assignment, generateNodeKeyPair, generateSealingKeyPair, JobSpec } from '../../protocol/index.js';
import { deployToEmulators } from '../cloud/deployment.js';
import { cpuInventory } from '../support/in-process.js';

/**
 * The dispatcher's give-back over the real adapters (DynamoDB, KMS: moto and local-kms): a job
 * whose wrapped key KMS refuses is skipped by the poll, which hands out the next candidate; the
 * refused task is queued again with its attempt counted and the node's slot is free of it, in
 * one DynamoDB transaction (test/integration/dispatch-failures.test.ts has the embedded cases).
 */

let deployment: Awaited<ReturnType<typeof deployToEmulators>>;
let cp: ControlPlane;
let ports: Ports;

beforeAll(async () => {
  deployment = await deployToEmulators({ leaseMs: 60_000, heartbeatMs: 5000, recheckMs: 250 });
  ({ cp, ports } = (await import('../../functions/handlers/config.js')).cloudDeployment());
}, 120_000);

afterAll(async () => {
  await deployment?.close();
});

/** Flips one character in the middle of the KMS ciphertext: well formed, but KMS refuses it. */
async function damageKey(jobId: string): Promise<void> {
  const item = await ports.store.get<JobRecord>(jobKey(jobId));
  const wrapped = item?.data.wrappedKey;
  if (item === undefined || wrapped === undefined) throw new Error(`job ${jobId} has no wrapped key`);
  const at = Math.floor(wrapped.length * 0.75);
  const flipped = `${wrapped.slice(0, at)}${wrapped[at] === 'A' ? 'B' : 'A'}${wrapped.slice(at + 1)}`;
  await ports.store.transact([putJob({ ...item.data, wrappedKey: flipped }, item.version)]);
}

describe('a job whose key KMS refuses, over DynamoDB', () => {
  it('is given back at once; the poll hands out the other candidate', async () => {
    const { node } = await cp.nodes.register({
      publicKey: generateNodeKeyPair().publicKey,
      agentVersion: 't',
      inventory: cpuInventory(),
      sealingKey: generateSealingKeyPair().publicKey,
    });
    const submit = async (spec: Record<string, unknown>) => {
      const { job } = await cp.jobs.submit('default', JobSpec.parse(spec));
      await cp.scheduler.schedule({ jobId: job.id });
      return `${job.id}.0`;
    };
    const bad = await submit({ command: ['true'], env: { TOKEN: 'secret' } });
    await damageKey(bad.split('.')[0] ?? '');
    const good = await submit({ command: ['true'] });

    // Until nothing is left for this poll: the good task, and the bad one tried and given back.
    const handedOut: Assignment[] = [];
    for (let a = await cp.dispatcher.poll(node.id, 0); a !== undefined; a = await cp.dispatcher.poll(node.id, 0)) {
      handedOut.push(a);
      expect(handedOut.length).toBeLessThan(3);
    }
    expect(handedOut.map((a) => a.taskId)).toEqual([good]);
    const task = (await ports.store.get<TaskRecord>(taskKey(bad.split('.')[0] ?? '', 0)))?.data;
    expect(task).toMatchObject({ state: 'queued', attempt: 1, failedAttempts: 1 });
    expect(task?.attempts[0]).toMatchObject({ outcome: 'failed', nodeId: node.id });
    expect(task?.attempts[0]?.detail).toMatch(/KMS refused the wrapped key/);
    const held = (await ports.store.get<NodeRecord>(nodeKey(node.id)))?.data.held ?? [];
    expect(held.map((h) => h.taskId)).toEqual([good]);
  });
});
