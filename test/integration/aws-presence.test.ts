import { randomUUID } from 'node:crypto';
import { DeleteTableCommand } from '@aws-sdk/client-dynamodb';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { awsClients } from '../../functions/adapters/aws/clients.js';
import { createTable, DynamoDbStore } from '../../functions/adapters/aws/dynamodb-store.js';
import { NodeRegistry } from '../../functions/domain/resource/node-registry.js';
import { defaultRegions } from '../../functions/domain/resource/pools.js';
import { presenceKey } from '../../functions/domain/resource/presence.js';
import { generateNodeKeyPair, loadNodeKeyPair } from '../../protocol/index.js';
import { ManualClock } from '../contract/store-contract.js';
import { emulatorCredentials } from '../emulators/emulators.js';
import { CountingStore } from '../support/counting-store.js';
import { cpuInventory } from '../support/in-process.js';

/**
 * Presence on the DynamoDB store, as Lambda instances share it (test/integration/presence.test.ts
 * on SQLite): a heartbeat is one conditional UpdateItem with no read, whose condition on the
 * presence's number attributes carries the replay check, and the beats that must do more still do.
 */

const endpoints = inject('awsEndpoints');
if (endpoints === undefined) throw new Error('no emulator endpoints: run in the lambda project');
const clients = awsClients({ region: 'us-east-1', endpoints, credentials: emulatorCredentials });
const table = `gpuai-presence-${randomUUID()}`;

afterAll(async () => {
  await clients.dynamodb.send(new DeleteTableCommand({ TableName: table })).catch(() => undefined);
  for (const client of Object.values(clients)) client.destroy();
});

describe('presence on DynamoDB', () => {
  it('takes a heartbeat in one conditional write, refuses a replay with the watermark, and turns a node dead and live again', async () => {
    await createTable(clients.dynamodb, table);
    const clock = new ManualClock(Date.parse('2026-11-25T12:00:00Z'));
    const store = new CountingStore(new DynamoDbStore(clients.dynamodb, table, clock));
    const nodes = new NodeRegistry(store, clock, {
      livenessMs: 90_000,
      enrollment: 'open',
      nodeExpiryMs: 7 * 24 * 3600_000,
      regions: defaultRegions,
      exclusiveStore: false,
    });
    const { node } = await nodes.register({
      publicKey: loadNodeKeyPair(generateNodeKeyPair().privateKeyPem).publicKey,
      agentVersion: '0.1.0',
      inventory: cpuInventory(),
    });
    await nodes.touch(node.id, { hbDate: clock.now() });

    const beats: string[] = [];
    for (let beat = 0; beat < 6; beat++) {
      clock.advance(30_000);
      store.reset();
      await nodes.touch(node.id, { hbDate: clock.now() });
      const writes = store.transactions.map((t) => t.map((w) => `${w.kind} ${w.key.sk}`).join('+'));
      beats.push(`${store.gets.length} reads, ${writes.join(' / ')}`);
    }
    expect(beats.filter((b) => b === '0 reads, update SEEN')).toHaveLength(4);
    expect(beats.filter((b) => b === '1 reads, put SEEN+put DUE')).toHaveLength(2);
    const taken = clock.now();

    const before = await store.get(presenceKey(node.id));
    await expect(nodes.touch(node.id, { hbDate: taken })).rejects.toMatchObject({
      code: 'replayed_request',
      details: { lastDate: taken },
    });
    expect((await store.get(presenceKey(node.id)))?.version).toBe(before?.version);

    clock.advance(200_000);
    expect(await nodes.sweepDead(clock.now(), 10)).toBe(1);
    expect((await nodes.describe(node.id)).lastSeenAt).toBe(taken);
    // Dead, it has no due time: the one-write beat's condition fails and the beat turns it live.
    await nodes.touch(node.id, { hbDate: clock.now() });
    expect(await store.get(presenceKey(node.id))).toMatchObject({ data: { live: true, hbDate: clock.now() } });
  });
});
