import { type DynamoDBClient, TransactionCanceledException } from '@aws-sdk/client-dynamodb';
import { describe, expect, it, vi } from 'vitest';
import { awsClients } from '../../functions/adapters/aws/clients.js';
import { DynamoDbStore } from '../../functions/adapters/aws/dynamodb-store.js';
import { openDatabase } from '../../functions/adapters/embedded/sqlite.js';
import { SqliteStore } from '../../functions/adapters/embedded/sqlite-store.js';
import { ContentionError } from '../../functions/domain/errors.js';
import { updateWithRetry } from '../../functions/domain/records.js';
import { backoffDelayMs, retrying, retryPolicies, sdkMaxAttempts } from '../../functions/domain/retry.js';
import type { ItemKey, Store, Write } from '../../functions/ports/store.js';

const key: ItemKey = { pk: 'HOT#1', sk: 'ITEM' };

/**
 * The real SQLite store with a rival writer that changes the item between every read and write of
 * ours, so each of our version conditions fails: the hottest item there can be. Counts our calls.
 */
function hotStore(): { store: Store; calls: { get: number; transact: number } } {
  const real = new SqliteStore(openDatabase(':memory:'));
  const calls = { get: 0, transact: 0 };
  const store: Store = Object.create(real, {
    get: {
      value: async (k: ItemKey) => {
        calls.get++;
        const item = await real.get<{ n: number }>(k);
        // The rival writes after our read, so the version we read is stale by the time we write.
        await real.transact([{ kind: 'put', key: k, data: { n: -1 }, expectVersion: item?.version ?? 0 }]);
        return item;
      },
    },
    transact: {
      value: async (writes: readonly Write[]) => {
        calls.transact++;
        return real.transact(writes);
      },
    },
  });
  return { store, calls };
}

describe('one retry policy, bounded', () => {
  it('updateWithRetry reads and writes at most staleRead.maxAttempts times, pausing with jitter between', async () => {
    const { store, calls } = hotStore();
    const pauses: number[] = [];
    const error = await updateWithRetry<{ n: number }, number>(
      store,
      key,
      (current) => ({
        writes: [{ kind: 'put', key, data: { n: 1 }, expectVersion: current?.version ?? 0 }],
        result: 1,
      }),
      { sleep: async (ms) => void pauses.push(ms), random: () => 0.5 },
    ).catch((e: unknown) => e);

    expect(error).toBeInstanceOf(ContentionError);
    expect((error as ContentionError).retryable).toBe(true);
    const { maxAttempts } = retryPolicies.staleRead;
    expect(calls).toEqual({ get: maxAttempts, transact: maxAttempts });
    // A pause between each two rounds, half of a cap that doubles: 5, 10, 20 ms with the policy's 10 ms base.
    expect(pauses).toEqual([1, 2, 3].map((retry) => backoffDelayMs(retryPolicies.staleRead, retry, () => 0.5)));
    expect(pauses).toEqual([5, 10, 20]);
  });

  it('stops early when the pauses would pass the policy budget', async () => {
    const policy = { maxAttempts: 10, baseDelayMs: 100, maxDelayMs: 100, budgetMs: 250 };
    let attempts = 0;
    const pauses: number[] = [];
    await expect(
      retrying(
        async () => {
          attempts++;
          throw new Error('race');
        },
        {
          policy,
          retryOn: () => true,
          giveUp: (cause, n) => new ContentionError(`gave up after ${n}`, { cause }),
          sleep: async (ms) => void pauses.push(ms),
          random: () => 0.99,
        },
      ),
    ).rejects.toThrow('gave up after 3');
    expect(attempts).toBe(3);
    expect(pauses).toEqual([99, 99]);
  });

  it('never retries an error the policy is not for', async () => {
    let attempts = 0;
    const refused = new Error('validation');
    await expect(
      retrying(
        async () => {
          attempts++;
          throw refused;
        },
        { policy: retryPolicies.staleRead, retryOn: () => false, giveUp: () => new Error('no') },
      ),
    ).rejects.toBe(refused);
    expect(attempts).toBe(1);
  });

  it('DynamoDbStore sends a racing transaction at most transactionRace.maxAttempts times', async () => {
    let sends = 0;
    const client = {
      send: async () => {
        sends++;
        throw new TransactionCanceledException({
          message: 'cancelled',
          $metadata: {},
          CancellationReasons: [{ Code: 'TransactionConflict' }, { Code: 'None' }],
        });
      },
    } as unknown as DynamoDBClient;
    const writes: Write[] = [
      { kind: 'put', key, data: { n: 1 }, expectVersion: 0 },
      { kind: 'put', key: { pk: 'HOT#2', sk: 'ITEM' }, data: { n: 1 }, expectVersion: 0 },
    ];
    await expect(new DynamoDbStore(client, 'table').transact(writes)).rejects.toBeInstanceOf(ContentionError);
    expect(sends).toBe(retryPolicies.transactionRace.maxAttempts);
  });

  it('the SDK clients make sdkMaxAttempts requests per call, whatever AWS_MAX_ATTEMPTS says', async () => {
    vi.stubEnv('AWS_MAX_ATTEMPTS', '10');
    try {
      const clients = awsClients({ region: 'eu-west-1' });
      for (const client of Object.values(clients)) {
        expect(await client.config.maxAttempts()).toBe(sdkMaxAttempts);
        client.destroy();
      }
    } finally {
      vi.unstubAllEnvs();
    }
  });

  it('documents the worst case of one read-modify-write on DynamoDB as the product of the three layers', () => {
    const { staleRead, transactionRace } = retryPolicies;
    expect(staleRead.maxAttempts * (1 + transactionRace.maxAttempts) * sdkMaxAttempts).toBe(48);
  });
});
