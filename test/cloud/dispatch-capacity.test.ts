import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ControlPlane } from '../../functions/control-plane.js';
import { type Assignment, generateNodeKeyPair, JobSpec, resultHash } from '../../protocol/index.js';
import { cpuInventory } from '../support/in-process.js';
import { deployToEmulators } from './deployment.js';

/**
 * The claim writes the task and the node item in one DynamoDB transaction, each conditional on
 * the version read: racing polls of one node over the real adapter never share a GPU and never
 * exceed the node's GPUs (test/integration/dispatch-capacity.test.ts has the embedded cases).
 */

let deployment: Awaited<ReturnType<typeof deployToEmulators>>;
let cp: ControlPlane;

beforeAll(async () => {
  deployment = await deployToEmulators({ leaseMs: 60_000, heartbeatMs: 5000, recheckMs: 250 });
  cp = (await import('../../functions/handlers/config.js')).controlPlane();
}, 120_000);

afterAll(async () => {
  await deployment?.close();
});

describe('dispatch over DynamoDB counts what a node holds', () => {
  it('gives a node with 4 GPUs at most 4 one-GPU tasks from 8 racing polls, on distinct GPUs', async () => {
    const { node } = await cp.nodes.register({
      publicKey: generateNodeKeyPair().publicKey,
      agentVersion: 't',
      inventory: cpuInventory({
        cpu: { model: 'Test CPU', cores: 32 },
        gpus: [0, 1, 2, 3].map((index) => ({
          index,
          vendor: 'nvidia' as const,
          model: 'NVIDIA H100 80GB HBM3',
          vramMiB: 81559,
          uuid: `GPU-cloud-${index}`,
        })),
      }),
    });
    const { job } = await cp.jobs.submit(
      'default',
      JobSpec.parse({ command: ['true'], tasks: 12, resources: { gpus: { count: 1 } } }),
    );
    await cp.scheduler.schedule({ jobId: job.id });

    const raced = (await Promise.all(Array.from({ length: 8 }, () => cp.dispatcher.poll(node.id, 0)))).filter(
      (a): a is Assignment => a !== undefined,
    );
    expect(raced.length).toBeGreaterThanOrEqual(1);
    const held = [...raced];
    for (let a = await cp.dispatcher.poll(node.id, 0); a !== undefined; a = await cp.dispatcher.poll(node.id, 0)) {
      held.push(a);
    }
    expect(held).toHaveLength(4);
    expect(held.flatMap((a) => a.gpuIndices).sort()).toEqual([0, 1, 2, 3]);

    const done = held[1] as Assignment;
    await cp.reports.result(node.id, done.taskId, {
      attempt: done.attempt,
      exitCode: 0,
      resultHash: resultHash([]),
      outputs: [],
      metrics: { wallMs: 1 },
    });
    const next = await cp.dispatcher.poll(node.id, 0);
    expect(next?.gpuIndices).toEqual(done.gpuIndices);
    expect(await cp.dispatcher.poll(node.id, 0)).toBeUndefined();
  }, 60_000);
});
