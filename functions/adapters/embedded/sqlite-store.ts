import { type Clock, systemClock } from '../../ports/clock.js';
import type {
  FieldCondition,
  IndexName,
  ItemKey,
  QueryOptions,
  QueryPage,
  Store,
  StoredItem,
  Write,
} from '../../ports/store.js';
import { ConditionFailedError } from '../../ports/store.js';
import {
  applyAdd,
  decodeCursor,
  describeKey,
  encodeCursor,
  indexNames,
  invalidCursor,
  meetsCondition,
  type PreparedWrite,
  pageSize,
  prepareWrites,
} from '../store-rules.js';
import type { Database } from './sqlite.js';

/** The columns holding each index's key; see the schema in sqlite.ts. */
const indexColumns: Readonly<Record<IndexName, { pk: keyof ItemRow; sk: keyof ItemRow }>> = {
  byPool: { pk: 'by_pool_pk', sk: 'by_pool_sk' },
  byDue: { pk: 'by_due_pk', sk: 'by_due_sk' },
  byOwner: { pk: 'by_owner_pk', sk: 'by_owner_sk' },
};

/** Keeps only rows that have not expired; binds `@now`, in epoch seconds like `expires_at`. */
const live = '(expires_at IS NULL OR expires_at > @now)';

interface ItemRow {
  pk: string;
  sk: string;
  version: number;
  data: string;
  expires_at: number | null;
  by_pool_pk: string | null;
  by_pool_sk: string | null;
  by_due_pk: string | null;
  by_due_sk: string | null;
  by_owner_pk: string | null;
  by_owner_sk: string | null;
  /** The item's number fields as JSON (null: none); its data holds them too, so reads need not merge. */
  numbers: string | null;
}

/**
 * The {@link Store} port on SQLite. Every transaction runs under `BEGIN IMMEDIATE`, which takes the
 * database's write lock before reading the versions it checks, so conditional writes stay atomic
 * even when several processes share the file.
 *
 * Expiry follows DynamoDB TTL as seen through a filtering reader: an item whose `expiresAt` is at
 * or before the clock's current second is absent to every read and condition, although its row
 * stays until {@link SqliteStore.deleteExpired} or an overwriting put removes it.
 */
export class SqliteStore implements Store {
  readonly #db: Database;
  readonly #clock: Clock;
  readonly #applyWrites: (writes: readonly PreparedWrite[], now: number) => void;
  readonly #queries = new Map<string, ReturnType<Database['prepare']>>();

  /**
   * @param db an open database whose schema `openDatabase` created; the store takes it over
   *   and closes it in {@link SqliteStore.close}.
   * @param clock decides when items expire.
   */
  constructor(db: Database, clock: Clock = systemClock) {
    this.#db = db;
    this.#clock = clock;
    const selectVersion = db.prepare<[{ pk: string; sk: string; now: number }], number>(
      `SELECT version FROM items WHERE pk = @pk AND sk = @sk AND ${live}`,
    );
    selectVersion.pluck();
    const upsert = db.prepare<[ItemRow]>(
      `INSERT OR REPLACE INTO items (pk, sk, version, data, expires_at,
         by_pool_pk, by_pool_sk, by_due_pk, by_due_sk, by_owner_pk, by_owner_sk, numbers)
       VALUES (@pk, @sk, @version, @data, @expires_at,
         @by_pool_pk, @by_pool_sk, @by_due_pk, @by_due_sk, @by_owner_pk, @by_owner_sk, @numbers)`,
    );
    const remove = db.prepare<[ItemKey]>('DELETE FROM items WHERE pk = @pk AND sk = @sk');
    const selectRow = db.prepare<[{ pk: string; sk: string; now: number }], ItemRow>(
      `SELECT * FROM items WHERE pk = @pk AND sk = @sk AND ${live}`,
    );

    const transaction = db.transaction((writes: readonly PreparedWrite[], now: number) => {
      // Check every condition before writing anything, so the error can name all that failed.
      const failed = writes.flatMap((write) => {
        if (write.kind === 'add') return [];
        if (write.kind === 'update') {
          const row = selectRow.get({ pk: write.key.pk, sk: write.key.sk, now });
          return row !== undefined && meetsAll(row, write.when) ? [] : [write.index];
        }
        const version = selectVersion.get({ pk: write.key.pk, sk: write.key.sk, now }) ?? 0;
        return version === write.expectVersion ? [] : [write.index];
      });
      if (failed.length > 0) {
        throw new ConditionFailedError(failed);
      }
      for (const write of writes) {
        if (write.kind === 'put') {
          upsert.run(toRow(write));
        } else if (write.kind === 'delete') {
          remove.run({ pk: write.key.pk, sk: write.key.sk });
        } else if (write.kind === 'add') {
          upsert.run(addedRow(selectRow.get({ pk: write.key.pk, sk: write.key.sk, now }), write));
        } else if (write.kind === 'update') {
          const row = selectRow.get({ pk: write.key.pk, sk: write.key.sk, now });
          if (row !== undefined) upsert.run(updatedRow(row, write.set));
        }
      }
    });
    this.#applyWrites = (writes, now) => transaction.immediate(writes, now);
  }

  async get<T = unknown>(key: ItemKey): Promise<StoredItem<T> | undefined> {
    const row = this.#statement(`SELECT * FROM items WHERE pk = @pk AND sk = @sk AND ${live}`).get({
      pk: key.pk,
      sk: key.sk,
      now: this.#nowSeconds(),
    }) as ItemRow | undefined;
    return row === undefined ? undefined : toItem<T>(row);
  }

  async query<T = unknown>(options: QueryOptions): Promise<QueryPage<T>> {
    const limit = pageSize(options.limit);
    const columns = options.index === undefined ? ({ pk: 'pk', sk: 'sk' } as const) : indexColumns[options.index];
    // The order, and so the cursor, is total: on an index, equal sort keys are ordered by table key.
    const order = options.index === undefined ? ['sk'] : [columns.sk, 'pk', 'sk'];
    const params: Record<string, string | number> = { pk: options.pk, now: this.#nowSeconds(), limit: limit + 1 };
    const where = [`${columns.pk} = @pk`, live];

    if (options.skPrefix !== undefined && options.skPrefix !== '') {
      where.push(`${columns.sk} >= @prefix`);
      params.prefix = options.skPrefix;
      const end = prefixUpperBound(options.skPrefix);
      if (end !== undefined) {
        where.push(`${columns.sk} < @prefixEnd`);
        params.prefixEnd = end;
      }
    }
    if (options.skBefore !== undefined) {
      where.push(`${columns.sk} < @before`);
      params.before = options.skBefore;
    }
    if (options.cursor !== undefined) {
      // A cursor names its query's partition first, as a DynamoDB start key does: one made by another
      // query (another route's list, another tenant's) is refused instead of read as a position here.
      const [partition, ...after] = decodeCursor(options.cursor, order.length + 1);
      if (partition !== options.pk) throw invalidCursor(options.cursor, 'belongs to another partition');
      const placeholders = after.map((value, i) => {
        params[`after${i}`] = value;
        return `@after${i}`;
      });
      where.push(`(${order.join(', ')}) ${options.descending ? '<' : '>'} (${placeholders.join(', ')})`);
    }

    const direction = options.descending ? 'DESC' : 'ASC';
    const sql = `SELECT * FROM items WHERE ${where.join(' AND ')}
      ORDER BY ${order.map((column) => `${column} ${direction}`).join(', ')} LIMIT @limit`;
    const rows = this.#statement(sql).all(params) as ItemRow[];

    // One row beyond the page says whether there is a next page, so the last page has no cursor.
    const page = rows.slice(0, limit);
    const last = page.at(-1);
    const items = page.map((row) => toItem<T>(row));
    if (rows.length <= limit || last === undefined) {
      return { items };
    }
    const lastKey = options.index === undefined ? [last.sk] : [sortKeyOf(last, options.index), last.pk, last.sk];
    return { items, cursor: encodeCursor([options.pk, ...lastKey]) };
  }

  async transact(writes: readonly Write[]): Promise<void> {
    const prepared = prepareWrites(writes);
    this.#applyWrites(prepared, this.#nowSeconds());
  }

  /**
   * Deletes the rows of expired items, which reads already ignore: the analogue of DynamoDB's TTL
   * sweeper, for a host to call now and then so the file does not grow without bound.
   * @returns how many items were deleted.
   */
  deleteExpired(): number {
    return this.#statement('DELETE FROM items WHERE expires_at <= @now').run({ now: this.#nowSeconds() }).changes;
  }

  /** Closes the database; later calls do nothing. */
  async close(): Promise<void> {
    if (this.#db.open) {
      this.#db.close();
    }
  }

  #nowSeconds(): number {
    return this.#clock.now() / 1000;
  }

  /** Query shapes vary with the options given; each shape is compiled once. */
  #statement(sql: string): ReturnType<Database['prepare']> {
    let statement = this.#queries.get(sql);
    if (statement === undefined) {
      statement = this.#db.prepare(sql);
      this.#queries.set(sql, statement);
    }
    return statement;
  }
}

/** The row that a put stores. */
function toRow(write: Extract<PreparedWrite, { kind: 'put' }>): ItemRow {
  const row: ItemRow = {
    pk: write.key.pk,
    sk: write.key.sk,
    version: write.expectVersion + 1,
    data: hasFields(write.numbers) ? JSON.stringify({ ...JSON.parse(write.data), ...write.numbers }) : write.data,
    expires_at: write.expiresAt ?? null,
    by_pool_pk: null,
    by_pool_sk: null,
    by_due_pk: null,
    by_due_sk: null,
    by_owner_pk: null,
    by_owner_sk: null,
    numbers: hasFields(write.numbers) ? JSON.stringify(write.numbers) : null,
  };
  for (const name of indexNames) {
    const indexKey = write.indexes[name];
    if (indexKey !== undefined) {
      Object.assign(row, { [indexColumns[name].pk]: indexKey.pk, [indexColumns[name].sk]: indexKey.sk });
    }
  }
  return row;
}

/**
 * The row after an add: the fields summed into the live row's data, its index keys and expiry
 * kept, or a new counters row when there is none (an expired row is replaced, as a put would).
 */
function addedRow(current: ItemRow | undefined, write: Extract<PreparedWrite, { kind: 'add' }>): ItemRow {
  if (current === undefined) {
    const data = JSON.stringify(applyAdd({}, write));
    const numbers = write.set ?? {};
    return toRow({ ...write, kind: 'put', expectVersion: 0, data, expiresAt: write.expiresAt, indexes: {}, numbers });
  }
  return {
    ...current,
    version: current.version + 1,
    data: JSON.stringify(applyAdd(JSON.parse(current.data), write)),
    expires_at: write.expiresAt ?? current.expires_at,
    numbers: withNumbers(current.numbers, write.set),
  };
}

/** The row after an update whose condition held: its number fields set, in its data too. */
function updatedRow(current: ItemRow, set: Readonly<Record<string, number>>): ItemRow {
  return {
    ...current,
    version: current.version + 1,
    data: JSON.stringify({ ...JSON.parse(current.data), ...set }),
    numbers: withNumbers(current.numbers, set),
  };
}

/** The number fields column with `set` over it. */
function withNumbers(numbers: string | null, set: Readonly<Record<string, number>> | undefined): string | null {
  if (!hasFields(set)) return numbers;
  return JSON.stringify({ ...(numbers === null ? {} : JSON.parse(numbers)), ...set });
}

/**
 * Whether the row's number fields meet every condition. Only number fields count, as DynamoDB's
 * conditions see only the attributes beside a put's JSON text: a number inside the data does not.
 */
function meetsAll(row: ItemRow, when: Readonly<Record<string, FieldCondition>>): boolean {
  const numbers = (row.numbers === null ? {} : JSON.parse(row.numbers)) as Record<string, number>;
  return Object.entries(when).every(([field, condition]) => meetsCondition(numbers[field], condition));
}

function hasFields(fields: Readonly<Record<string, number>> | undefined): fields is Readonly<Record<string, number>> {
  return fields !== undefined && Object.keys(fields).length > 0;
}

function toItem<T>(row: ItemRow): StoredItem<T> {
  const indexes: StoredItem['indexes'] = {};
  for (const name of indexNames) {
    const pk = row[indexColumns[name].pk];
    const sk = row[indexColumns[name].sk];
    if (typeof pk === 'string' && typeof sk === 'string') {
      indexes[name] = { pk, sk };
    }
  }
  const item: StoredItem<T> = {
    pk: row.pk,
    sk: row.sk,
    version: row.version,
    data: JSON.parse(row.data) as T,
    indexes,
  };
  if (row.expires_at !== null) {
    item.expiresAt = row.expires_at;
  }
  return item;
}

function sortKeyOf(row: ItemRow, index: IndexName): string {
  const sk = row[indexColumns[index].sk];
  if (typeof sk !== 'string') {
    throw new Error(`item ${describeKey(row)} was returned by index ${index} but has no key in it`);
  }
  return sk;
}

/**
 * The least string above every string that starts with `prefix`, or undefined when there is none
 * (a prefix made only of U+10FFFF). SQLite compares TEXT as UTF-8 bytes, which is code point
 * order, so incrementing the last code point gives an exclusive upper bound for an index range scan.
 */
function prefixUpperBound(prefix: string): string | undefined {
  const codePoints = Array.from(prefix, (char) => char.codePointAt(0) ?? 0);
  while (codePoints.length > 0) {
    const last = codePoints.pop() ?? 0;
    if (last < 0x10ffff) {
      // Skip the surrogate range, which holds no code points of its own.
      codePoints.push(last === 0xd7ff ? 0xe000 : last + 1);
      return String.fromCodePoint(...codePoints);
    }
  }
  return undefined;
}
