import { randomUUID } from 'node:crypto';
import { DeleteTableCommand } from '@aws-sdk/client-dynamodb';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { awsClients } from '../../functions/adapters/aws/clients.js';
import { createTable, DynamoDbStore } from '../../functions/adapters/aws/dynamodb-store.js';
import { UnauthenticatedError } from '../../functions/domain/errors.js';
import { JoinTokens } from '../../functions/domain/resource/join-tokens.js';
import { NodeRegistry } from '../../functions/domain/resource/node-registry.js';
import { defaultRegions } from '../../functions/domain/resource/pools.js';
import { generateNodeKeyPair, loadNodeKeyPair } from '../../protocol/index.js';
import { ManualClock } from '../contract/store-contract.js';
import { emulatorCredentials } from '../emulators/emulators.js';
import { cpuInventory } from '../support/in-process.js';

/**
 * Enrollment on the DynamoDB store: a token's use is counted in the node's transaction, and a dead
 * node's TTL hides it from reads and from the byOwner listing at once (DynamoDB's own TTL deletes
 * it later), exactly as on SQLite (test/integration/enrollment.test.ts).
 */

const endpoints = inject('awsEndpoints');
if (endpoints === undefined) throw new Error('no emulator endpoints: run in the lambda project');
const clients = awsClients({ region: 'us-east-1', endpoints, credentials: emulatorCredentials });
const table = `gpuai-enroll-${randomUUID()}`;

afterAll(async () => {
  await clients.dynamodb.send(new DeleteTableCommand({ TableName: table })).catch(() => undefined);
  for (const client of Object.values(clients)) client.destroy();
});

const day = 24 * 3600_000;
const register = (nodes: NodeRegistry, joinToken?: string) =>
  nodes.register({
    publicKey: loadNodeKeyPair(generateNodeKeyPair().privateKeyPem).publicKey,
    agentVersion: '0.1.0',
    inventory: cpuInventory(),
    ...(joinToken === undefined ? {} : { joinToken }),
  });

describe('enrollment on DynamoDB', () => {
  it('admits maxUses nodes under a token, and expires a node unseen for the expiry period', async () => {
    await createTable(clients.dynamodb, table);
    const clock = new ManualClock(Date.parse('2026-11-25T12:00:00Z'));
    const store = new DynamoDbStore(clients.dynamodb, table, clock);
    const tokens = new JoinTokens(store, clock);
    const nodes = new NodeRegistry(
      store,
      clock,
      { livenessMs: 15_000, enrollment: 'token', nodeExpiryMs: 7 * day, regions: defaultRegions },
      tokens,
    );
    const { token, secret } = await tokens.create({ operator: 'acme', ttlSeconds: 30 * 24 * 3600, maxUses: 2 });
    await expect(register(nodes)).rejects.toThrow(UnauthenticatedError);
    const outcomes = await Promise.allSettled([0, 1, 2].map(() => register(nodes, secret)));
    expect(outcomes.filter((o) => o.status === 'fulfilled')).toHaveLength(2);
    expect((await tokens.get(token.id)).uses).toBe(2);

    const listed = (await nodes.list(50)).nodes;
    expect(listed.map((n) => n.operator)).toEqual(['acme', 'acme']);
    const [kept, dead] = listed;
    clock.advance(6 * day);
    await nodes.touch(kept?.id ?? '');
    clock.advance(day + 1000);
    expect(await nodes.find(dead?.id ?? '')).toBeUndefined();
    expect((await nodes.list(50)).nodes.map((n) => n.id)).toEqual([kept?.id]);
  });
});
