import { type Message, ReceiveMessageCommand, type SQSClient } from '@aws-sdk/client-sqs';
import type { SQSBatchResponse } from 'aws-lambda';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ControlPlane } from '../../functions/control-plane.js';
import type { NodeRecord } from '../../functions/domain/resource/node-record.js';
import type { TaskRecord } from '../../functions/domain/scheduling/task-record.js';
import { generateNodeKeyPair, JobSpec, resultHash, sha256Hex } from '../../protocol/index.js';
import { cpuInventory } from '../support/in-process.js';
import { deployToEmulators } from './deployment.js';
import { lambdaContext, sqsEvent } from './harness.js';

/**
 * SQS delivers at least once and in any order. Each message the control plane sends is here
 * delivered 1 to 5 times, shuffled, to the real scheduler and verifier handlers: the outcome must
 * be the one a single delivery gives, with every task written exactly as often as its
 * transitions require. A message that keeps failing reaches the dead-letter queue.
 */

type Handler = (event: ReturnType<typeof sqsEvent>, context: ReturnType<typeof lambdaContext>) => Promise<unknown>;
let deployment: Awaited<ReturnType<typeof deployToEmulators>>;
let cp: ControlPlane;
let scheduler: Handler;
let verifier: Handler;

beforeAll(async () => {
  // Each property run registers its node in a region of its own (`r<N>`), so that runs cannot take
  // each other's tasks: the deployment allows any region.
  deployment = await deployToEmulators({ leaseMs: 60_000, heartbeatMs: 5000, recheckMs: 250, regions: '*' });
  cp = (await import('../../functions/handlers/config.js')).controlPlane();
  scheduler = (await import('../../functions/handlers/scheduler.js')).handler as Handler;
  verifier = (await import('../../functions/handlers/verifier.js')).handler as Handler;
}, 120_000);

afterAll(async () => {
  await deployment?.close();
});

async function receiveAll(sqs: SQSClient, url: string, expected: number): Promise<Message[]> {
  const messages: Message[] = [];
  for (let round = 0; round < 20 && messages.length < expected; round++) {
    const r = await sqs.send(
      new ReceiveMessageCommand({
        QueueUrl: url,
        MaxNumberOfMessages: 10,
        WaitTimeSeconds: 1,
        VisibilityTimeout: 60,
        MessageSystemAttributeNames: ['ApproximateReceiveCount'],
      }),
    );
    messages.push(...(r.Messages ?? []));
  }
  return messages;
}

async function receive(url: string, waitSeconds: number, visibilitySeconds: number): Promise<Message[]> {
  const r = await deployment.sqs.send(
    new ReceiveMessageCommand({
      QueueUrl: url,
      MaxNumberOfMessages: 10,
      WaitTimeSeconds: waitSeconds,
      VisibilityTimeout: visibilitySeconds,
      MessageSystemAttributeNames: ['ApproximateReceiveCount'],
    }),
  );
  return r.Messages ?? [];
}

/** Each message `times[i]` times (1-5), in the order `order` shuffles them into, one record per event. */
async function deliver(handler: Handler, queueUrl: string, messages: Message[], times: number[], seed: number) {
  const deliveries = messages.flatMap((m, i) => Array.from({ length: times[i % times.length] ?? 1 }, () => m));
  const shuffled =
    fc.sample(fc.shuffledSubarray(deliveries, { minLength: deliveries.length }), { seed, numRuns: 1 })[0] ?? deliveries;
  for (const message of shuffled) {
    const response = (await handler(sqsEvent(queueUrl, [message]), lambdaContext('consumer'))) as SQSBatchResponse;
    expect(response.batchItemFailures).toEqual([]);
  }
}

async function taskItems(jobId: string) {
  const loaded = await cp.jobs.load(jobId);
  return (loaded?.tasks ?? []).map((t) => ({ version: t.version, data: t.data as TaskRecord }));
}

describe('duplicate and out-of-order SQS delivery', () => {
  it('changes nothing beyond what one delivery does', async () => {
    const output = 'ok\n';
    const hash = resultHash([{ name: 'stdout', sha256: sha256Hex(output), bytes: 3 }]);
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.integer({ min: 1, max: 5 }), { minLength: 3, maxLength: 3 }),
        fc.integer(),
        async (times, seed) => {
          const { node } = await cp.nodes.register({
            publicKey: generateNodeKeyPair().publicKey,
            agentVersion: 't',
            inventory: cpuInventory({ region: `r${Math.abs(seed) % 100000}` }),
          });
          cp.router.invalidate();
          const { job } = await cp.jobs.submit(
            'default',
            JobSpec.parse({ command: ['true'], tasks: 3, regions: [node.inventory.region] }),
          );

          const schedule = await receiveAll(deployment.sqs, deployment.queueUrls.schedule as string, 1);
          expect(schedule.map((m) => JSON.parse(m.Body ?? '{}').jobId)).toContain(job.id);
          await deliver(scheduler, deployment.queueUrls.schedule as string, schedule, times, seed);
          // Created (version 1), then routed once (version 2), however often the message came.
          expect((await taskItems(job.id)).map((t) => [t.version, t.data.state, t.data.pool])).toEqual(
            Array.from({ length: 3 }, () => [2, 'queued', `${node.inventory.region}/cpu`]),
          );

          for (let i = 0; i < 3; i++) {
            const a = await cp.dispatcher.poll(node.id, 0);
            if (a === undefined) throw new Error('no assignment');
            await cp.reports.result(node.id, a.taskId, {
              attempt: a.attempt,
              exitCode: 0,
              resultHash: hash,
              outputs: [{ name: 'stdout', sha256: sha256Hex(output), bytes: 3 }],
              metrics: { wallMs: 1 },
            });
          }
          const verify = await receiveAll(deployment.sqs, deployment.queueUrls.verify as string, 3);
          expect(verify).toHaveLength(3);
          await deliver(verifier, deployment.queueUrls.verify as string, verify, times, seed + 1);
          // Claimed (3), reported (4), verified (5): once each.
          expect((await taskItems(job.id)).map((t) => [t.version, t.data.state])).toEqual(
            Array.from({ length: 3 }, () => [5, 'verified']),
          );
          const stats = (await cp.nodes.get(node.id)) as NodeRecord;
          expect(stats.stats.tasksCompleted).toBe(3); // no verification counted twice
        },
      ),
      { numRuns: 6 },
    );
  }, 180_000);
});

describe('messages that cannot be handled', () => {
  it('parks a malformed message in the dead-letter queue at once', async () => {
    const url = deployment.queueUrls.schedule as string;
    const response = (await scheduler(
      sqsEvent(url, [{ MessageId: 'm1', ReceiptHandle: 'r1', Body: '{not json' }]),
      lambdaContext('scheduler'),
    )) as SQSBatchResponse;
    expect(response.batchItemFailures).toEqual([]);
    const parked = await receiveAll(deployment.sqs, deployment.queueUrls['schedule-dlq'] as string, 1);
    expect(parked.map((m) => m.Body)).toContain('{not json');
  });

  it('redelivers a message that fails retryably, then dead-letters it after its receive count', async () => {
    const { job } = await cp.jobs.submit('default', JobSpec.parse({ command: ['true'] }));
    const url = deployment.queueUrls.schedule as string;
    const dlq = deployment.queueUrls['schedule-dlq'] as string;
    const body = JSON.stringify({ jobId: job.id });
    deployment.dynamodbOutage(true);
    try {
      // Each receive once the message's visibility (1 s) has run out counts one more; the receive
      // after maxReceives moves it to the dead-letter queue instead. Waiting for it to land there,
      // not for a number of rounds, holds however slowly a loaded machine gets through them.
      let receives = 0;
      let parked: Message[] = [];
      const until = Date.now() + 100_000;
      while (parked.length === 0) {
        if (Date.now() > until) throw new Error(`not dead-lettered after ${receives} receives`);
        const mine = (await receive(url, 1, 1)).filter((m) => m.Body === body);
        if (mine.length > 0) {
          receives++;
          const response = (await scheduler(sqsEvent(url, mine), lambdaContext('scheduler'))) as SQSBatchResponse;
          expect(response.batchItemFailures.map((f) => f.itemIdentifier)).toEqual(mine.map((m) => m.MessageId));
        }
        parked = (await receive(dlq, 0, 60)).filter((m) => m.Body === body);
      }
      expect(receives).toBe(5); // maxReceives, then SQS moved it
    } finally {
      deployment.dynamodbOutage(false);
    }
  }, 120_000);
});
