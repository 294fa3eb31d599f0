import { ConditionFailedError, type ItemKey, type Store, type StoredItem, type Write } from '../ports/store.js';
import { ContentionError } from './errors.js';
import { type RetryOptions, retrying, retryPolicies } from './retry.js';

/** Epoch milliseconds as a fixed-width string, so index sort keys order by time. */
export const sortableTime = (ms: number): string => String(Math.max(0, Math.floor(ms))).padStart(15, '0');

export const isoTime = (ms: number): string => new Date(ms).toISOString();

/**
 * Optimistic read-modify-write: reads the item, lets `change` compute the writes from it, and
 * retries from a fresh read, after a jittered pause, when another writer got there first. `change`
 * returns undefined to write nothing. Gives up with a retryable {@link ContentionError} once
 * {@link retryPolicies}.staleRead is spent (functions/domain/retry.ts has the bound per operation).
 */
export async function updateWithRetry<T, R>(
  store: Store,
  key: ItemKey,
  change: (current: StoredItem<T> | undefined) => { writes: Write[]; result: R } | undefined,
  options: Partial<Pick<RetryOptions, 'policy' | 'sleep' | 'random'>> = {},
): Promise<R | undefined> {
  const outcome = await retrying<{ result: R } | undefined>(
    async () => {
      const planned = change(await store.get<T>(key));
      if (planned === undefined) return undefined;
      await store.transact(planned.writes);
      return { result: planned.result };
    },
    {
      policy: retryPolicies.staleRead,
      ...options,
      retryOn: (error) => error instanceof ConditionFailedError,
      giveUp: (cause, attempts) =>
        new ContentionError(`gave up updating ${key.pk}/${key.sk} after ${attempts} conflicting writes`, { cause }),
    },
  );
  return outcome?.result;
}
