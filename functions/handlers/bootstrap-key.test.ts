import { afterAll, beforeAll, describe, expect, inject, it, vi } from 'vitest';
import { emulatorCredentials } from '../../test/emulators/emulators.js';
import { awsClients } from '../adapters/aws/clients.js';
import { createTable, DynamoDbStore } from '../adapters/aws/dynamodb-store.js';
import { ApiKeys } from '../domain/security/api-keys.js';
import { bootstrapKey, readBootstrapOptions } from './bootstrap-key.js';

const endpoints = inject('awsEndpoints');
const clients = awsClients({ region: 'us-east-1', endpoints, credentials: emulatorCredentials });
const table = `bootstrap-${Date.now()}`;

beforeAll(async () => {
  await createTable(clients.dynamodb, table);
  // The script uses the SDK's default chain, as an operator's shell would.
  vi.stubEnv('AWS_ACCESS_KEY_ID', emulatorCredentials.accessKeyId);
  vi.stubEnv('AWS_SECRET_ACCESS_KEY', emulatorCredentials.secretAccessKey);
});
afterAll(() => {
  vi.unstubAllEnvs();
  clients.dynamodb.destroy();
});

describe('the first cloud API key', () => {
  it('is written into the table and authenticates through the same store the API reads', async () => {
    const options = readBootstrapOptions(['--tenant', 'ops', '--ttl', '1d'], {
      TABLE_NAME: table,
      AWS_REGION: 'us-east-1',
      GPUAI_DYNAMODB_ENDPOINT: endpoints.dynamodb,
    });
    const created = await bootstrapKey(options);
    expect(created).toMatchObject({ tenant: 'ops', scopes: ['admin'], status: 'active' });
    const apiKeys = new ApiKeys(new DynamoDbStore(clients.dynamodb, table), { now: () => Date.now() });
    await expect(apiKeys.authenticate(created.key)).resolves.toEqual({
      tenant: 'ops',
      keyId: created.id,
      scopes: ['admin'],
    });
    // The key design holds on DynamoDB too: listing by tenant prefix in the byOwner index, revocation.
    expect((await apiKeys.list({ tenant: 'ops', limit: 10 })).keys.map((k) => k.id)).toEqual([created.id]);
    expect((await apiKeys.list({ tenant: 'op', limit: 10 })).keys).toEqual([]);
    await apiKeys.revoke(created.id);
    await expect(apiKeys.authenticate(created.key)).rejects.toMatchObject({ code: 'api_key_revoked' });
  });

  it('names what is missing or wrong', () => {
    const env = { TABLE_NAME: table, AWS_REGION: 'us-east-1' };
    expect(() => readBootstrapOptions([], { AWS_REGION: 'us-east-1' })).toThrow(/TABLE_NAME is not set/);
    expect(() => readBootstrapOptions([], { TABLE_NAME: table })).toThrow(/AWS_REGION is not set/);
    expect(() => readBootstrapOptions(['--scopes', 'root'], env)).toThrow(/"root" is not one of/);
    expect(() => readBootstrapOptions(['--tenant', 'a#b'], env)).toThrow(/not a tenant id/);
    expect(() => readBootstrapOptions(['--ttl', 'forever'], env)).toThrow(/not a lifetime/);
    expect(readBootstrapOptions([], env)).toEqual({ table, region: 'us-east-1', tenant: 'admin', scopes: ['admin'] });
  });
});
