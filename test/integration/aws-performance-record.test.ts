import { randomUUID } from 'node:crypto';
import { DeleteTableCommand } from '@aws-sdk/client-dynamodb';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { awsClients } from '../../functions/adapters/aws/clients.js';
import { createTable, DynamoDbStore } from '../../functions/adapters/aws/dynamodb-store.js';
import { learningRates, type Outcome } from '../../functions/domain/scheduling/performance.js';
import { StoredPerformance } from '../../functions/domain/scheduling/performance-record.js';
import { ManualClock } from '../contract/store-contract.js';
import { emulatorCredentials } from '../emulators/emulators.js';

/**
 * The learned estimates on the DynamoDB store, as on SQLite (test/integration/performance-record.test.ts):
 * the class sums are fractional `add`s (UpdateItem ADD) from processes recording at once, the node's
 * estimate a conditional put, and a process started afresh reads back what the others learned.
 */

const endpoints = inject('awsEndpoints');
if (endpoints === undefined) throw new Error('no emulator endpoints: run in the lambda project');
const clients = awsClients({ region: 'us-east-1', endpoints, credentials: emulatorCredentials });
const table = `gpuai-perf-${randomUUID()}`;

afterAll(async () => {
  await clients.dynamodb.send(new DeleteTableCommand({ TableName: table })).catch(() => undefined);
  for (const client of Object.values(clients)) client.destroy();
});

describe('stored performance estimates on DynamoDB', () => {
  it('takes outcomes from processes recording at once, reads them back afresh, and drops rather than fails under contention', async () => {
    await createTable(clients.dynamodb, table);
    const clock = new ManualClock(Date.parse('2026-11-25T12:00:00Z'));
    const store = new DynamoDbStore(clients.dynamodb, table, clock);
    const a = new StoredPerformance(store, clock);
    const b = new StoredPerformance(store, clock);
    const at = clock.now();
    // Twelve nodes finish a task of one workload at once, recorded by two processes: the class's
    // sums take twelve fractional adds at once, each node's item one conditional put.
    const outcome = (i: number): Outcome => ({
      nodeId: `n${i}`,
      kind: i === 0 ? 'lost' : 'completed',
      at,
      workload: 'batch/0001',
      acceleratorClass: 'h100',
      runtimeMs: 50_000 + 1_000 * i,
    });
    const recorded = await Promise.all(
      Array.from({ length: 12 }, (_, i) => (i % 2 === 0 ? a : b).recordOutcome(outcome(i))),
    );
    expect(recorded.every(Boolean)).toBe(true);

    const fresh = new StoredPerformance(store, clock);
    const nodeIds = Array.from({ length: 12 }, (_, i) => `n${i}`);
    await fresh.prepare({ nodeIds, classes: [{ workload: 'batch/0001', acceleratorClass: 'h100' }] });
    const samples = Array.from({ length: 11 }, (_, i) => Math.log(50_000 + 1_000 * (i + 1)));
    const mean = samples.reduce((x, y) => x + y) / samples.length;
    const variance = samples.reduce((s, x) => s + (x - mean) ** 2, 0) / samples.length;
    const expected = Math.exp((11 * mean + 0.5 * Math.log(60_000)) / 11.5 + variance / 2);
    expect(fresh.runtimeMs('batch/0001', 'h100')).toBeCloseTo(expected, 3);
    expect(fresh.runtimeMs('batch', 'h100')).toBeCloseTo(expected, 3);
    const prior = learningRates.reliabilityPriorWeight;
    expect(fresh.reliability('n0')).toBeCloseTo((prior * 0.95) / (1 + prior), 9);
    expect(fresh.reliability('n1')).toBeCloseTo((1 + prior * 0.95) / (1 + prior), 9);

    // A burst on one node's item past the retries drops samples rather than failing the caller.
    const burst = await Promise.all(
      Array.from({ length: 12 }, (_, i) => (i % 2 === 0 ? a : b).recordOutcome({ ...outcome(1), nodeId: 'busy' })),
    );
    expect(burst.filter(Boolean).length).toBeGreaterThan(0);
  });
});
