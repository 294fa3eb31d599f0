import { randomUUID } from 'node:crypto';
import {
  DeleteTableCommand,
  DescribeTableCommand,
  DescribeTimeToLiveCommand,
  type DynamoDBClient,
  TransactionCanceledException,
} from '@aws-sdk/client-dynamodb';
import { DecryptCommand, InvalidCiphertextException } from '@aws-sdk/client-kms';
import { DeleteQueueCommand, GetQueueAttributesCommand } from '@aws-sdk/client-sqs';
import { afterAll, describe, expect, inject, it, vi } from 'vitest';
import { type AwsClients, awsClients } from '../../functions/adapters/aws/clients.js';
import {
  createTable,
  DynamoDbStore,
  indexKeyAttributes,
  tableDefinition,
  timeToLiveAttribute,
} from '../../functions/adapters/aws/dynamodb-store.js';
import { createDataKeyKey, KmsKeys } from '../../functions/adapters/aws/kms-keys.js';
import { createQueues, SqsQueue } from '../../functions/adapters/aws/sqs-queue.js';
import { ContentionError } from '../../functions/domain/errors.js';
import { retryPolicies } from '../../functions/domain/retry.js';
import { KeyUnwrapError } from '../../functions/ports/keys.js';
import type { QueueDefinition } from '../../functions/ports/queue.js';
import { ConditionFailedError, type QueryOptions, type StoredItem, type Write } from '../../functions/ports/store.js';
import { deadLetterQueueOf, queueDefinitions } from '../../functions/workers/queues.js';
import { keysContract } from '../contract/keys-contract.js';
import { queueContract } from '../contract/queue-contract.js';
import { ManualClock, storeContract } from '../contract/store-contract.js';
import { emulatorCredentials } from '../emulators/emulators.js';

const endpoints = inject('awsEndpoints');
if (endpoints === undefined) {
  throw new Error('no emulator endpoints: run with test/emulators/global-setup.ts as a vitest globalSetup');
}
const clients: AwsClients = awsClients({ region: 'us-east-1', endpoints, credentials: emulatorCredentials });

/** Tables and queues this file made, removed at the end so a long-lived emulator stays small. */
const tables: string[] = [];
const queueUrls = new Set<string>();

afterAll(async () => {
  await Promise.all([
    ...tables.map((TableName) => clients.dynamodb.send(new DeleteTableCommand({ TableName }))),
    ...[...queueUrls].map((QueueUrl) => clients.sqs.send(new DeleteQueueCommand({ QueueUrl }))),
  ]);
  for (const client of Object.values(clients)) {
    client.destroy();
  }
});

async function newTable(): Promise<string> {
  const name = `gpuai-${randomUUID()}`;
  await createTable(clients.dynamodb, name);
  tables.push(name);
  return name;
}

async function newQueues(definitions: readonly QueueDefinition[]): Promise<Record<string, string>> {
  const urls = await createQueues(clients.sqs, definitions);
  for (const url of Object.values(urls)) {
    queueUrls.add(url);
  }
  return urls;
}

/**
 * A table of its own for each test: moto answers an index query by scanning the whole table, so a
 * table shared by the suite would make later tests slower the more earlier ones wrote. Half the
 * property runs of the embedded store: each run costs a few dozen requests, at about 300 a second
 * through moto, and half keeps that test near 8 s on 2 cores.
 */
storeContract(
  'DynamoDbStore on moto',
  async () => {
    const table = await newTable();
    const clock = new ManualClock();
    return {
      store: new DynamoDbStore(clients.dynamodb, table, clock),
      clock,
      reopen: async () => new DynamoDbStore(clients.dynamodb, table, clock),
      cleanup: async () => {},
    };
  },
  { propertyRuns: 50 },
);

queueContract(
  'SqsQueue on moto',
  async (definitions) => {
    const urls = await newQueues(definitions);
    const queues = [new SqsQueue(clients.sqs, urls, definitions)];
    const [queue] = queues as [SqsQueue];
    return {
      queue,
      reopen: async () => {
        const reopened = new SqsQueue(clients.sqs, urls, definitions);
        queues.push(reopened);
        return reopened;
      },
      cleanup: async () => {
        await Promise.all(queues.map((q) => q.close()));
      },
    };
  },
  { exclusiveReceive: false },
);

let dataKeyKey: Promise<string> | undefined;

keysContract('KmsKeys on local-kms', async () => {
  dataKeyKey ??= createDataKeyKey(clients.kms);
  return new KmsKeys(clients.kms, await dataKeyKey);
});

describe('DynamoDbStore on moto', () => {
  const put = (pk: string, expectVersion: number): Write => ({
    kind: 'put',
    key: { pk, sk: 'item' },
    data: pk,
    expectVersion,
  });

  it('creates the table it documents: keys, sparse indexes and time to live', async () => {
    const table = await newTable();
    const { Table } = await clients.dynamodb.send(new DescribeTableCommand({ TableName: table }));
    const { TimeToLiveDescription } = await clients.dynamodb.send(new DescribeTimeToLiveCommand({ TableName: table }));

    expect(Table?.KeySchema).toEqual(tableDefinition(table).KeySchema);
    expect(Table?.GlobalSecondaryIndexes?.map((index) => index.IndexName).sort()).toEqual(
      Object.keys(indexKeyAttributes).sort(),
    );
    expect(TimeToLiveDescription).toMatchObject({ AttributeName: timeToLiveAttribute, TimeToLiveStatus: 'ENABLED' });
  });

  it('maps the cancellation reasons of TransactWriteItems to the indexes of the failed writes', async () => {
    const store = new DynamoDbStore(clients.dynamodb, await newTable());
    const ns = randomUUID();
    await store.transact([put(`${ns}-a`, 0), put(`${ns}-b`, 0)]);

    const error = await store
      .transact([
        put(`${ns}-a`, 0),
        put(`${ns}-b`, 1),
        { kind: 'check', key: { pk: `${ns}-c`, sk: 'item' }, expectVersion: 1 },
        { kind: 'delete', key: { pk: `${ns}-d`, sk: 'item' }, expectVersion: 0 },
        put(`${ns}-e`, 0),
      ])
      .then(
        () => undefined,
        (e: unknown) => e,
      );

    expect(error).toBeInstanceOf(ConditionFailedError);
    expect((error as ConditionFailedError).failed).toEqual([0, 2]);
    // Proof that the answer came from DynamoDB's cancellation, not from reads of the adapter's own.
    const cause = (error as ConditionFailedError).cause;
    expect(cause).toBeInstanceOf(TransactionCanceledException);
    expect((cause as TransactionCanceledException).CancellationReasons?.map((r) => r.Code)).toEqual([
      'ConditionalCheckFailed',
      'None',
      'ConditionalCheckFailed',
      'None',
      'None',
    ]);
  });
});

describe('DynamoDbStore queries on moto', () => {
  it('pages through a long stretch of expired items, returning each live item once and in order', async () => {
    const clock = new ManualClock();
    const store = new DynamoDbStore(clients.dynamodb, await newTable(), clock);
    const pk = `expiring-${randomUUID()}`;
    const soon = Math.ceil(clock.now() / 1000) + 10;
    const live = ['a', 'y', 'z'];
    const writes = Array.from(
      'abcdefghijklmnopqrstuvwxyz',
      (sk): Write => ({
        kind: 'put',
        key: { pk, sk },
        data: sk,
        ...(live.includes(sk) ? {} : { expiresAt: soon }),
        expectVersion: 0,
      }),
    );
    await store.transact(writes);
    clock.advance(60_000);

    const pages = await readAllPages(store, { pk, limit: 2 });
    expect(pages.flat().map((item) => item.sk)).toEqual(live);
    // 23 expired items in a row are more than one page's reads: a short page says where to go on.
    expect(pages.some((page) => page.length < 2)).toBe(true);
  });

  it('drops index keys equal to skBefore when it narrows a prefix, however many share that key', async () => {
    const store = new DynamoDbStore(clients.dynamodb, await newTable());
    const pool = `POOL#${randomUUID()}`;
    const sortKeys = ['0#z', '1#a', '1#b', '1#b', '1#b', '1#b', '1#b', '1#c', '2#a'];
    await store.transact(
      sortKeys.map(
        (sk, i): Write => ({
          kind: 'put',
          key: { pk: `${pool}#${i}`, sk: 'task' },
          data: sk,
          indexes: { byPool: { pk: pool, sk } },
          expectVersion: 0,
        }),
      ),
    );
    const query = { index: 'byPool', pk: pool, skPrefix: '1#', skBefore: '1#b' } as const;

    expect((await readAllPages(store, { ...query, limit: 1, descending: true })).flat().map((i) => i.data)).toEqual([
      '1#a',
    ]);
    expect((await readAllPages(store, { ...query, skBefore: '1#c' })).flat().map((i) => i.data)).toEqual([
      '1#a',
      '1#b',
      '1#b',
      '1#b',
      '1#b',
      '1#b',
    ]);
    expect((await store.query({ ...query, skBefore: '1' })).items).toEqual([]);
    expect((await store.query({ ...query, skBefore: '2' })).items.map((i) => i.data)).toEqual([
      '1#a',
      '1#b',
      '1#b',
      '1#b',
      '1#b',
      '1#b',
      '1#c',
    ]);
  });

  it('refuses a cursor of another partition or query shape', async () => {
    const store = new DynamoDbStore(clients.dynamodb, await newTable());
    const pk = `cursor-${randomUUID()}`;
    await store.transact(['a', 'b'].map((sk): Write => ({ kind: 'put', key: { pk, sk }, data: sk, expectVersion: 0 })));
    const { cursor } = await store.query({ pk, limit: 1 });
    expect(cursor).toBeDefined();

    await expect(store.query({ pk: `${pk}-other`, cursor: cursor ?? '' })).rejects.toThrow(/another partition/);
    await expect(store.query({ index: 'byPool', pk, cursor: cursor ?? '' })).rejects.toThrow(/shape/);
    await expect(store.query({ pk, cursor: 'not-a-cursor' })).rejects.toThrow(/cursor/);
  });
});

describe('DynamoDbStore against transaction conflicts', () => {
  const writes: Write[] = [
    { kind: 'put', key: { pk: 'a', sk: 'a' }, data: 1, expectVersion: 0 },
    { kind: 'check', key: { pk: 'b', sk: 'b' }, expectVersion: 1 },
  ];
  const cancelled = (...codes: string[]) =>
    new TransactionCanceledException({
      message: 'Transaction cancelled',
      $metadata: {},
      CancellationReasons: codes.map((Code) => ({ Code })),
    });

  /** A DynamoDB client that answers TransactWriteItems from a script, recording each request. */
  function scriptedClient(answers: (Error | undefined)[]) {
    const tokens: unknown[] = [];
    const send = vi.fn(async (command: { input: { ClientRequestToken?: unknown } }) => {
      tokens.push(command.input.ClientRequestToken);
      const answer = answers.shift();
      if (answer !== undefined) {
        throw answer;
      }
      return {};
    });
    return { client: { send } as unknown as DynamoDBClient, send, tokens };
  }

  it('retries a transaction that lost a race, each attempt under a token of its own', async () => {
    const { client, send, tokens } = scriptedClient([
      cancelled('TransactionConflict', 'None'),
      cancelled('ConditionalCheckFailed', 'TransactionConflict'),
      undefined,
    ]);

    await new DynamoDbStore(client, 'table').transact(writes);
    expect(send).toHaveBeenCalledTimes(3);
    expect(new Set(tokens).size).toBe(3);
  });

  it('gives up with a retryable ContentionError when the races go on', async () => {
    const { client, send } = scriptedClient(Array.from({ length: 10 }, () => cancelled('None', 'TransactionConflict')));

    const error = await new DynamoDbStore(client, 'table').transact(writes).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ContentionError);
    expect((error as ContentionError).retryable).toBe(true);
    expect(send).toHaveBeenCalledTimes(retryPolicies.transactionRace.maxAttempts);
  });

  it('passes on cancellations that no retry can fix', async () => {
    const invalid = cancelled('ValidationError', 'None');
    const { client, send } = scriptedClient([invalid]);

    await expect(new DynamoDbStore(client, 'table').transact(writes)).rejects.toBe(invalid);
    expect(send).toHaveBeenCalledTimes(1);
  });
});

describe('SqsQueue on moto', () => {
  /** The control plane's own queue definitions, under names of this test's own. */
  function prefixed(prefix: string): QueueDefinition[] {
    return queueDefinitions.map((definition) => ({
      ...definition,
      name: prefix + definition.name,
      ...(definition.deadLetterQueue === undefined ? {} : { deadLetterQueue: prefix + definition.deadLetterQueue }),
    }));
  }

  it('parks a poison message in the dead-letter queue after maxReceives deliveries, as deployed', async () => {
    const definitions = prefixed(`t${randomUUID().slice(0, 8)}-`);
    const urls = await newQueues(definitions);
    const queue = new SqsQueue(clients.sqs, urls, definitions);
    const work = definitions.find((d) => d.deadLetterQueue !== undefined);
    if (work?.deadLetterQueue === undefined || work.maxReceives === undefined) {
      throw new Error('the control plane defines no queue with a dead-letter queue');
    }
    expect(work.deadLetterQueue).toBe(deadLetterQueueOf(work.name));

    const { Attributes } = await clients.sqs.send(
      new GetQueueAttributesCommand({ QueueUrl: urls[work.name], AttributeNames: ['RedrivePolicy'] }),
    );
    const { Attributes: deadLetter } = await clients.sqs.send(
      new GetQueueAttributesCommand({ QueueUrl: urls[work.deadLetterQueue], AttributeNames: ['QueueArn'] }),
    );
    expect(JSON.parse(Attributes?.RedrivePolicy ?? '{}')).toMatchObject({
      deadLetterTargetArn: deadLetter?.QueueArn,
      maxReceiveCount: work.maxReceives,
    });

    const id = await queue.send(work.name, 'poison');
    for (let receiveCount = 1; receiveCount <= work.maxReceives; receiveCount++) {
      const [delivery] = await queue.receive(work.name, { waitSeconds: 2 });
      expect(delivery).toMatchObject({ id, receiveCount });
      expect(await queue.changeVisibility(work.name, delivery?.receiptHandle ?? '', 0)).toBe(true);
    }

    expect(await queue.receive(work.name, { waitSeconds: 1 })).toEqual([]);
    expect(await queue.receive(work.deadLetterQueue, { waitSeconds: 2 })).toMatchObject([{ id, body: 'poison' }]);
  });

  it('reports the handle of a deleted message as stale where SQS says so', async () => {
    const definitions: QueueDefinition[] = [
      { name: `stale-${randomUUID().slice(0, 8)}`, visibilityTimeoutSeconds: 30 },
    ];
    const queue = new SqsQueue(clients.sqs, await newQueues(definitions), definitions);
    const name = definitions[0]?.name ?? '';
    await queue.send(name, 'job');
    const [message] = await queue.receive(name, { waitSeconds: 2 });

    expect(await queue.delete(name, message?.receiptHandle ?? '')).toBe(true);
    expect(await queue.changeVisibility(name, message?.receiptHandle ?? '', 0)).toBe(false);
    expect(await queue.delete(name, 'not-a-receipt-handle')).toBe(false);
    expect(await queue.depth(name)).toBe(0);
  });

  it('ends pending long polls with no messages when closed, and refuses work afterwards', async () => {
    const definitions: QueueDefinition[] = [
      { name: `close-${randomUUID().slice(0, 8)}`, visibilityTimeoutSeconds: 30 },
    ];
    const queue = new SqsQueue(clients.sqs, await newQueues(definitions), definitions);
    const name = definitions[0]?.name ?? '';
    const started = Date.now();
    const polling = queue.receive(name, { waitSeconds: 20 });
    await new Promise((resolve) => setTimeout(resolve, 100));
    await queue.close();

    expect(await polling).toEqual([]);
    expect(Date.now() - started).toBeLessThan(2000);
    await expect(queue.send(name, 'late')).rejects.toThrow(/closed/);
  });

  it('refuses a configuration that leaves a defined queue without a URL', () => {
    const definitions: QueueDefinition[] = [{ name: 'work', visibilityTimeoutSeconds: 30 }];
    expect(() => new SqsQueue(clients.sqs, {}, definitions)).toThrow(/no URL/);
  });
});

describe('KmsKeys on local-kms', () => {
  it('binds the wrapped key to its context in KMS itself, and to its KMS key', async () => {
    const keyId = await createDataKeyKey(clients.kms);
    const keys = new KmsKeys(clients.kms, keyId);
    const { plaintext, wrapped } = await keys.generateDataKey({ jobId: 'job-1' });
    expect(wrapped.startsWith('kms1.')).toBe(true);
    const CiphertextBlob = Buffer.from(wrapped.slice('kms1.'.length), 'base64url');

    const { Plaintext } = await clients.kms.send(
      new DecryptCommand({ KeyId: keyId, CiphertextBlob, EncryptionContext: { jobId: 'job-1' } }),
    );
    expect(Buffer.from(Plaintext ?? []).equals(Buffer.from(plaintext))).toBe(true);
    await expect(
      clients.kms.send(new DecryptCommand({ KeyId: keyId, CiphertextBlob, EncryptionContext: { jobId: 'job-2' } })),
    ).rejects.toBeInstanceOf(InvalidCiphertextException);

    await expect(keys.unwrap(wrapped, { jobId: 'job-2' })).rejects.toBeInstanceOf(KeyUnwrapError);
    const otherKey = new KmsKeys(clients.kms, await createDataKeyKey(clients.kms));
    await expect(otherKey.unwrap(wrapped, { jobId: 'job-1' })).rejects.toBeInstanceOf(KeyUnwrapError);
  });
});

/** Every page of a query, following its cursors to the end. */
async function readAllPages(store: DynamoDbStore, options: QueryOptions): Promise<StoredItem[][]> {
  const pages: StoredItem[][] = [];
  let cursor: string | undefined;
  do {
    const page = await store.query(cursor === undefined ? options : { ...options, cursor });
    pages.push(page.items);
    cursor = page.cursor;
  } while (cursor !== undefined && pages.length < 100);
  return pages;
}
