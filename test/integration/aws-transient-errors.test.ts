import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { awsClients } from '../../functions/adapters/aws/clients.js';
import { DynamoDbStore } from '../../functions/adapters/aws/dynamodb-store.js';
import { KmsKeys } from '../../functions/adapters/aws/kms-keys.js';
import { DependencyUnavailableError } from '../../functions/domain/errors.js';
import { ConditionFailedError } from '../../functions/ports/store.js';
import { emulatorCredentials } from '../emulators/emulators.js';

/**
 * A throttled or unreachable AWS service is an outage, not a defect: once the SDK's retries are
 * spent, the adapters throw DependencyUnavailableError (HTTP 503 with Retry-After, a redelivery
 * for queue consumers), where the raw SDK error used to surface as a 500 `internal`. Answers that
 * are not outages (a failed condition) still reach the adapters as they are.
 */

/** A real HTTP server speaking the JSON protocol that answers every request with one error. */
let answer: { status: number; type: string } = { status: 400, type: 'ThrottlingException' };
let requests = 0;
let server: Server;
let endpoint: string;

beforeAll(async () => {
  server = createServer((req, res) => {
    requests++;
    req.resume();
    req.on('end', () => {
      res.writeHead(answer.status, { 'content-type': 'application/x-amz-json-1.0' });
      res.end(JSON.stringify({ __type: `com.amazonaws.dynamodb.v20120810#${answer.type}`, message: 'from the test' }));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  endpoint = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise((resolve) => server.close(resolve));
});

const clientsAt = (url: string) =>
  awsClients({ region: 'us-east-1', endpoints: { dynamodb: url, kms: url }, credentials: emulatorCredentials });

describe('AWS clients report outages as DependencyUnavailableError', () => {
  it('when DynamoDB throttles past the SDK retries, and after those retries only', async () => {
    answer = { status: 400, type: 'ThrottlingException' };
    requests = 0;
    const clients = clientsAt(endpoint);
    const store = new DynamoDbStore(clients.dynamodb, 'gpuai');
    const error = await store.get({ pk: 'JOB#x', sk: 'JOB' }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DependencyUnavailableError);
    expect(error).toMatchObject({ kind: 'unavailable', code: 'dependency_unavailable', retryable: true });
    expect((error as Error).message).toMatch(/^DynamoDB is unavailable: ThrottlingException/);
    expect(requests).toBe(3);
    clients.dynamodb.destroy();
  });

  it('when DynamoDB answers 500', async () => {
    answer = { status: 500, type: 'InternalServerError' };
    const clients = clientsAt(endpoint);
    const store = new DynamoDbStore(clients.dynamodb, 'gpuai');
    await expect(store.get({ pk: 'JOB#x', sk: 'JOB' })).rejects.toBeInstanceOf(DependencyUnavailableError);
    clients.dynamodb.destroy();
  });

  it('when KMS cannot be reached at all', async () => {
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const url = `http://127.0.0.1:${(closed.address() as AddressInfo).port}`;
    await new Promise((resolve) => closed.close(resolve));
    const clients = clientsAt(url);
    const keys = new KmsKeys(clients.kms, 'alias/gpuai');
    const error = await keys.generateDataKey({ jobId: 'job-1' }).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(DependencyUnavailableError);
    expect((error as Error).message).toMatch(/^KMS is unavailable/);
    clients.kms.destroy();
  });

  it('but a failed condition is still an answer the store interprets', async () => {
    answer = { status: 400, type: 'ConditionalCheckFailedException' };
    const clients = clientsAt(endpoint);
    const store = new DynamoDbStore(clients.dynamodb, 'gpuai');
    const write = store.transact([{ kind: 'put', key: { pk: 'JOB#x', sk: 'JOB' }, data: {}, expectVersion: 1 }]);
    await expect(write).rejects.toBeInstanceOf(ConditionFailedError);
    clients.dynamodb.destroy();
  });
});
