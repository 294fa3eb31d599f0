import { ConditionFailedError, type ItemKey, type Store, type StoredItem, type Write } from '../ports/store.js';
import { ContentionError } from './errors.js';

/** Epoch milliseconds as a fixed-width string, so index sort keys order by time. */
export const sortableTime = (ms: number): string => String(Math.max(0, Math.floor(ms))).padStart(15, '0');

export const isoTime = (ms: number): string => new Date(ms).toISOString();

/**
 * Optimistic read-modify-write: reads the item, lets `change` compute the writes from it, and
 * retries from a fresh read when another writer got there first. `change` returns undefined to
 * write nothing. Gives up with a retryable {@link ContentionError} after `attempts` rounds.
 */
export async function updateWithRetry<T, R>(
  store: Store,
  key: ItemKey,
  change: (current: StoredItem<T> | undefined) => { writes: Write[]; result: R } | undefined,
  attempts = 8,
): Promise<R | undefined> {
  for (let round = 0; round < attempts; round++) {
    const current = await store.get<T>(key);
    const planned = change(current);
    if (planned === undefined) return undefined;
    try {
      await store.transact(planned.writes);
      return planned.result;
    } catch (error) {
      if (!(error instanceof ConditionFailedError)) throw error;
    }
  }
  throw new ContentionError(`gave up updating ${key.pk}/${key.sk} after ${attempts} conflicting writes`);
}
