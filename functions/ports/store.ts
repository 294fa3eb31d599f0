/**
 * Store: versioned items with conditional writes, shaped by DynamoDB's single-table semantics so
 * that the embedded (SQLite) and cloud (DynamoDB) adapters can honour the same contract.
 *
 * An item lives at (pk, sk). Every write but `add` names the version it expects: `0` means "must
 * not exist", `n` means "must exist at version n"; a successful put stores version expected + 1.
 * An `add` (counters) checks nothing and bumps the version. A batch of writes is one transaction:
 * all apply or none does.
 *
 * Two secondary indexes, `byPool` and `byDue`, hold the keys that items choose to project:
 *   byPool  pk = POOL#<pool>      sk = <9 - priority>#<queuedAt>#<taskId>   queued tasks, highest priority then oldest first
 *   byDue   pk = DUE#<kind>       sk = <epoch ms, 15 digits>#<id>       leases and deadlines to re-drive
 * plus `byOwner` for listing jobs newest first. An item without an index key is absent from that index.
 */
export interface ItemKey {
  pk: string;
  sk: string;
}

export type IndexName = 'byPool' | 'byDue' | 'byOwner';

export interface IndexKey {
  pk: string;
  sk: string;
}

export interface StoredItem<T = unknown> extends ItemKey {
  version: number;
  data: T;
  indexes: Partial<Record<IndexName, IndexKey>>;
  /** Epoch seconds after which the item may be deleted (DynamoDB TTL). */
  expiresAt?: number;
}

export type Write =
  | {
      kind: 'put';
      key: ItemKey;
      data: unknown;
      indexes?: Partial<Record<IndexName, IndexKey>>;
      expiresAt?: number;
      /** 0: the item must not exist (or have expired); n: it must exist at version n. */
      expectVersion: number;
    }
  | { kind: 'delete'; key: ItemKey; expectVersion: number }
  | { kind: 'check'; key: ItemKey; expectVersion: number }
  | {
      /**
       * Adds each field to the item's numeric data field of that name (absent: 0), creating the
       * item with `data` = the fields when it is absent, and bumps its version by one; its index
       * keys and expiry stay as they were. It checks no condition, so counters kept this way never
       * make a transaction fail on their account. Several adds to one item in one transaction are
       * summed into one; adds to an item that the transaction puts are summed into the put's data.
       * Counters on an item written by puts survive only in the data that later puts carry on.
       */
      kind: 'add';
      key: ItemKey;
      fields: Readonly<Record<string, number>>;
      /** Fields set to a value (the last write wins), beside the sums: a "last changed at" time. */
      set?: Readonly<Record<string, number>>;
      /**
       * Sets the item's expiry (epoch seconds, DynamoDB TTL), created or not: counters of a fixed
       * window (rate limits) expire without a read to learn whether the add created them. Ignored
       * when a put of the same item in the transaction takes the add in (the put's expiry holds).
       */
      expiresAt?: number;
    };

export interface QueryOptions {
  /** Query an index instead of the table. */
  index?: IndexName;
  pk: string;
  /** Only sort keys that start with this prefix. */
  skPrefix?: string;
  /** Only sort keys strictly below this value. */
  skBefore?: string;
  limit?: number;
  descending?: boolean;
  /** Opaque cursor from a previous page. */
  cursor?: string;
}

export interface QueryPage<T = unknown> {
  items: StoredItem<T>[];
  cursor?: string;
}

/** The maximum number of writes in one transaction (DynamoDB's TransactWriteItems limit). */
export const maxTransactionWrites = 100;

export interface Store {
  get<T = unknown>(key: ItemKey): Promise<StoredItem<T> | undefined>;
  query<T = unknown>(options: QueryOptions): Promise<QueryPage<T>>;
  /**
   * Applies every write or none. Throws {@link ConditionFailedError} naming the writes whose
   * expected version did not hold (indexes into `writes` as given).
   */
  transact(writes: readonly Write[]): Promise<void>;
  close(): Promise<void>;
}

/** A write's expected version did not hold: someone else changed the item first. */
export class ConditionFailedError extends Error {
  override name = 'ConditionFailedError';
  constructor(
    /** Indexes into the transaction's writes whose condition failed. */
    readonly failed: readonly number[],
    options?: ErrorOptions,
  ) {
    super(`condition failed on write ${failed.join(', ')}`, options);
  }
}
