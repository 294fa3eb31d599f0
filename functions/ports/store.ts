/**
 * Store: versioned items with conditional writes, shaped by DynamoDB's single-table semantics so
 * that the embedded (SQLite) and cloud (DynamoDB) adapters can honour the same contract.
 *
 * An item lives at (pk, sk). Every write but `add` and `update` names the version it expects: `0`
 * means "must not exist", `n` means "must exist at version n"; a successful put stores version
 * expected + 1. An `add` (counters) checks nothing and bumps the version; an `update` checks the
 * item's number fields instead of its version, so it needs no read first. A batch of writes is one
 * transaction: all apply or none does.
 *
 * Number fields: an item's data is opaque to conditions (DynamoDB holds it as one JSON text), except
 * for the top-level numbers kept beside it: a put's `numbers` and the `set` fields of adds and
 * updates. They read back as fields of the data, over the data's own; an `update`'s `when` compares
 * them. A put replaces them all, as it replaces the data.
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
      /**
       * Top-level numbers kept beside the data (see the module's number fields): the fields a later
       * `update` may compare and set without a read. Read back over the data's fields of the same name.
       */
      numbers?: Readonly<Record<string, number>>;
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
    }
  | {
      /**
       * Sets number fields of an item that exists (and has not expired) when its number fields meet
       * `when`, and bumps its version by one; its other data, index keys and expiry stay as they
       * were. The condition rides on the write, so a caller that knows what the item must hold
       * (a watermark below a new date, say) writes once with no read. A number field that is absent
       * meets no condition. Fails with the transaction as a version check does.
       */
      kind: 'update';
      key: ItemKey;
      /** The number fields to set (kept as number fields, so later updates can compare them). */
      set: Readonly<Record<string, number>>;
      /** Each named number field must hold a number within these bounds. */
      when: Readonly<Record<string, FieldCondition>>;
    };

/** Bounds on one number field, all of which must hold. */
export interface FieldCondition {
  /** The field is strictly below this value. */
  below?: number;
  /** The field is at or above this value. */
  atLeast?: number;
  /** The field is exactly this value. */
  equals?: number;
}

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
   * expected version, or `update` condition, did not hold (indexes into `writes` as given).
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
