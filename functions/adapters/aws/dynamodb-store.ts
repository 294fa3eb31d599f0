/**
 * The {@link Store} port on one DynamoDB table.
 *
 * ## Key design
 *
 * Every item of the port is one DynamoDB item:
 *
 * | attribute              | type | holds                                                          |
 * | ---------------------- | ---- | -------------------------------------------------------------- |
 * | `pk`, `sk`             | S    | the table's partition and sort key: the port's `ItemKey`        |
 * | `version`              | N    | the item's version, 1 on creation, +1 on each put               |
 * | `data`                 | S    | the item's data as JSON text, so any JSON value round-trips     |
 * | `+<field>`             | N    | a counter kept by `add` (UpdateItem `ADD`), summed into `data.<field>` on reads |
 * | `=<field>`             | N    | a number field: a put's `numbers`, or set by an `add` or `update` (UpdateItem `SET`), read as `data.<field>` |
 * | `expiresAt`            | N    | epoch seconds; the table's TTL attribute; absent: never expires |
 * | `byPoolPk`, `byPoolSk` | S    | the item's key in the `byPool` index, when it has one          |
 * | `byDuePk`, `byDueSk`   | S    | the item's key in the `byDue` index, when it has one           |
 * | `byOwnerPk`,`byOwnerSk`| S    | the item's key in the `byOwner` index, when it has one         |
 *
 * The three global secondary indexes `byPool`, `byDue` and `byOwner` key on their attribute pair
 * and project every attribute, so a query answers with whole items and needs no second read. They
 * are sparse: an item without the pair is absent from that index, and a put that leaves the pair
 * out removes the item from it (a put replaces the whole item).
 *
 * ## Access patterns
 *
 * - **get** (`pk`, `sk`): GetItem with `ConsistentRead`, so a read sees every write that
 *   succeeded before it.
 * - **query a partition of the table**: Query on `pk = :pk`, consistent, optionally narrowed on
 *   `sk` (below).
 * - **query an index partition** (`byPool`: queued tasks of a pool by priority and age; `byDue`:
 *   leases and deadlines by time; `byOwner`: an owner's jobs by time): Query on the index.
 *   Global secondary indexes are **eventually consistent** (DynamoDB refuses `ConsistentRead` on
 *   them): an index query may miss a write that succeeded a moment ago, or still show an item's
 *   previous index key. Callers treat index results as candidates and act on them through
 *   conditional writes, which read the table itself.
 * - **sort key ranges**: `skPrefix` becomes `begins_with`, `skBefore` becomes `sk < :before`. With
 *   both, the range is `[prefix, before)` when `before` starts with the prefix (a key condition of
 *   `BETWEEN :prefix AND :before`, dropping keys equal to `before` on the way back, since DynamoDB
 *   refuses filters on key attributes), just the prefix when `before` lies above every key that
 *   starts with it, and nothing when `before` is at or below the prefix.
 * - **conditional writes**: one write is a PutItem or DeleteItem with a condition expression; a
 *   lone `check` is a consistent GetItem and a comparison (it writes nothing, so nothing can
 *   interleave with it that matters). Several writes are one TransactWriteItems, with `check`
 *   writes as ConditionCheck actions. Conditions:
 *   - expect version 0: `attribute_not_exists(pk) OR expiresAt <= :now`
 *   - expect version n: `version = :n AND (attribute_not_exists(expiresAt) OR expiresAt > :now)`
 * - **add** (counters): an UpdateItem, or an `Update` action in the transaction, of
 *   `ADD version :1, +<field> :n, ... SET =<field> = :v, ...` with no condition. ADD works on
 *   top-level attributes only, so each counter is its own attribute; reads fold them into `data`.
 *   A put replaces the whole item, counters included: its data carries what it keeps.
 * - **update** (number fields, no read): an UpdateItem, or an `Update` action in the transaction,
 *   of `SET =<field> = :v, ... ADD version :1` with the condition
 *   `attribute_exists(pk) AND (attribute_not_exists(expiresAt) OR expiresAt > :now) AND =<field> < :below ...`.
 *   The number fields are top-level attributes precisely so that a condition can compare them: the
 *   data's JSON text is opaque to DynamoDB, and a comparison on an absent attribute is false.
 *
 * ## Expiry
 *
 * DynamoDB's TTL deletes expired items lazily, up to days late, so the store never relies on it:
 * every read drops items whose `expiresAt` is at or before the clock's current second (queries
 * with a filter expression), and every condition treats them as absent, as the port requires. TTL
 * only keeps the table from growing.
 *
 * ## Pagination
 *
 * A query's `Limit` counts the items DynamoDB reads before its filter drops expired ones, so a
 * DynamoDB page may be short. The store asks for one item more than the page size and goes on
 * reading (a few rounds at most) until it has a full page plus one, so that it only returns a
 * cursor when another item exists; the cursor is the DynamoDB key of the page's last item, as
 * base64url JSON. Only when the rounds run out in a long stretch of expired items does a page come
 * back short, with a cursor that resumes after the last item read.
 *
 * @module
 */
import { randomUUID } from 'node:crypto';
import {
  type AttributeValue,
  ConditionalCheckFailedException,
  CreateTableCommand,
  type CreateTableCommandInput,
  DeleteItemCommand,
  type DynamoDBClient,
  GetItemCommand,
  PutItemCommand,
  QueryCommand,
  type QueryCommandInput,
  TransactionCanceledException,
  TransactionConflictException,
  type TransactWriteItem,
  TransactWriteItemsCommand,
  UpdateItemCommand,
  UpdateTimeToLiveCommand,
  waitUntilTableExists,
} from '@aws-sdk/client-dynamodb';
import { ContentionError } from '../../domain/errors.js';
import { retrying, retryPolicies } from '../../domain/retry.js';
import { type Clock, systemClock } from '../../ports/clock.js';
import type { IndexName, ItemKey, QueryOptions, QueryPage, Store, StoredItem, Write } from '../../ports/store.js';
import { ConditionFailedError } from '../../ports/store.js';
import {
  applyAdd,
  decodeCursor,
  encodeCursor,
  indexNames,
  invalidCursor,
  type PreparedWrite,
  pageSize,
  prepareWrites,
} from '../store-rules.js';

/** The names of the table's own attributes; the CDK app declares the same table from these. */
export const itemAttributes = {
  pk: 'pk',
  sk: 'sk',
  version: 'version',
  data: 'data',
  expiresAt: 'expiresAt',
} as const;

/** The attribute that the table's time-to-live setting names. */
export const timeToLiveAttribute = itemAttributes.expiresAt;

/** The global secondary indexes, named as the port names them, and the attributes of their keys. */
export const indexKeyAttributes: Readonly<Record<IndexName, { readonly pk: string; readonly sk: string }>> = {
  byPool: { pk: 'byPoolPk', sk: 'byPoolSk' },
  byDue: { pk: 'byDuePk', sk: 'byDueSk' },
  byOwner: { pk: 'byOwnerPk', sk: 'byOwnerSk' },
};

/** Counters written by `add` are top-level number attributes named with this prefix and the field. */
export const counterPrefix = '+';
/** Fields an `add` sets are top-level number attributes named with this prefix and the field. */
export const setPrefix = '=';

/** DynamoDB reads per query page before a page made short by expired items is returned as it is. */
const maxReadsPerPage = 4;
/** Cancellation reasons that say the transaction lost a race or was throttled, not that it was wrong. */
const retryableCancellations = new Set(['TransactionConflict', 'ThrottlingError', 'ProvisionedThroughputExceeded']);

/**
 * The CreateTable input for a store table named `tableName`: on-demand capacity, the key schema
 * and the three indexes described in this module's documentation. Time to live is a separate call
 * (see {@link createTable}); the CDK app sets it on the same attribute, {@link timeToLiveAttribute}.
 */
export function tableDefinition(tableName: string): CreateTableCommandInput {
  const stringAttribute = (AttributeName: string) => ({ AttributeName, AttributeType: 'S' as const });
  return {
    TableName: tableName,
    BillingMode: 'PAY_PER_REQUEST',
    AttributeDefinitions: [
      stringAttribute(itemAttributes.pk),
      stringAttribute(itemAttributes.sk),
      ...indexNames.flatMap((name) => [
        stringAttribute(indexKeyAttributes[name].pk),
        stringAttribute(indexKeyAttributes[name].sk),
      ]),
    ],
    KeySchema: [
      { AttributeName: itemAttributes.pk, KeyType: 'HASH' },
      { AttributeName: itemAttributes.sk, KeyType: 'RANGE' },
    ],
    GlobalSecondaryIndexes: indexNames.map((name) => ({
      IndexName: name,
      KeySchema: [
        { AttributeName: indexKeyAttributes[name].pk, KeyType: 'HASH' },
        { AttributeName: indexKeyAttributes[name].sk, KeyType: 'RANGE' },
      ],
      Projection: { ProjectionType: 'ALL' },
    })),
  };
}

/**
 * Creates a store table, waits until it is active and turns on time to live: for tests and local
 * tooling; deployments create the table with the CDK app.
 */
export async function createTable(client: DynamoDBClient, tableName: string): Promise<void> {
  await client.send(new CreateTableCommand(tableDefinition(tableName)));
  await waitUntilTableExists({ client, maxWaitTime: 60, minDelay: 1 }, { TableName: tableName });
  await client.send(
    new UpdateTimeToLiveCommand({
      TableName: tableName,
      TimeToLiveSpecification: { Enabled: true, AttributeName: timeToLiveAttribute },
    }),
  );
}

/** A condition expression with exactly the names and values it uses (DynamoDB refuses unused ones). */
interface Condition {
  ConditionExpression: string;
  ExpressionAttributeNames: Record<string, string>;
  ExpressionAttributeValues: Record<string, AttributeValue>;
}

/**
 * The {@link Store} port on DynamoDB; the module documentation describes the table and how each
 * operation uses it.
 */
export class DynamoDbStore implements Store {
  readonly #client: DynamoDBClient;
  readonly #table: string;
  readonly #clock: Clock;

  /**
   * @param client a client for the table's region; the caller owns it and destroys it.
   * @param tableName a table shaped by {@link tableDefinition}.
   * @param clock decides when items expire.
   */
  constructor(client: DynamoDBClient, tableName: string, clock: Clock = systemClock) {
    this.#client = client;
    this.#table = tableName;
    this.#clock = clock;
  }

  async get<T = unknown>(key: ItemKey): Promise<StoredItem<T> | undefined> {
    const { Item } = await this.#client.send(
      new GetItemCommand({ TableName: this.#table, Key: tableKey(key), ConsistentRead: true }),
    );
    if (Item === undefined) {
      return undefined;
    }
    const item = toItem<T>(Item);
    return item.expiresAt !== undefined && item.expiresAt <= this.#nowSeconds() ? undefined : item;
  }

  async query<T = unknown>(options: QueryOptions): Promise<QueryPage<T>> {
    const limit = pageSize(options.limit);
    const range = sortKeyRange(options.skPrefix, options.skBefore);
    if (range === 'empty') {
      return { items: [] };
    }
    const keyNames = options.index === undefined ? itemAttributes : indexKeyAttributes[options.index];
    // DynamoDB's LastEvaluatedKey for an index holds the index key and the table key.
    const cursorNames =
      options.index === undefined
        ? [itemAttributes.pk, itemAttributes.sk]
        : [itemAttributes.pk, itemAttributes.sk, keyNames.pk, keyNames.sk];
    const request: QueryCommandInput = {
      TableName: this.#table,
      ...(options.index === undefined ? { ConsistentRead: true } : { IndexName: options.index }),
      KeyConditionExpression: ['#queryPk = :queryPk', ...(range.condition === undefined ? [] : [range.condition])].join(
        ' AND ',
      ),
      FilterExpression: 'attribute_not_exists(#expiresAt) OR #expiresAt > :now',
      ExpressionAttributeNames: {
        '#queryPk': keyNames.pk,
        '#expiresAt': itemAttributes.expiresAt,
        ...(range.condition === undefined ? {} : { '#querySk': keyNames.sk }),
      },
      ExpressionAttributeValues: {
        ':queryPk': { S: options.pk },
        ':now': { N: String(this.#nowSeconds()) },
        ...range.values,
      },
      ScanIndexForward: options.descending !== true,
    };

    let startKey =
      options.cursor === undefined ? undefined : startKeyOf(options.cursor, cursorNames, keyNames.pk, options.pk);
    const found: Record<string, AttributeValue>[] = [];
    for (let reads = 1; ; reads++) {
      // One item beyond the page says whether there is a next page, so the last page has no cursor.
      const page = await this.#client.send(
        new QueryCommand({
          ...request,
          Limit: limit + 1 - found.length,
          ...(startKey === undefined ? {} : { ExclusiveStartKey: startKey }),
        }),
      );
      for (const raw of page.Items ?? []) {
        if (range.excluded === undefined || raw[keyNames.sk]?.S !== range.excluded) {
          found.push(raw);
        }
      }
      startKey = page.LastEvaluatedKey;
      const last = found[limit - 1];
      if (found.length > limit && last !== undefined) {
        const items = found.slice(0, limit).map((raw) => toItem<T>(raw));
        return { items, cursor: cursorAt(last, cursorNames) };
      }
      if (startKey === undefined) {
        return { items: found.map((raw) => toItem<T>(raw)) };
      }
      if (reads >= maxReadsPerPage) {
        return { items: found.map((raw) => toItem<T>(raw)), cursor: cursorAt(startKey, cursorNames) };
      }
    }
  }

  async transact(writes: readonly Write[]): Promise<void> {
    const prepared = prepareWrites(writes);
    const [only] = prepared;
    if (only !== undefined && prepared.length === 1) {
      await this.#retryingConflicts(() => this.#writeOne(only));
    } else {
      await this.#retryingConflicts(() => this.#writeTransaction(prepared));
    }
  }

  /** The caller owns the client, so there is nothing to release. */
  async close(): Promise<void> {}

  async #writeOne(write: PreparedWrite): Promise<void> {
    if (write.kind === 'add') {
      await this.#client.send(new UpdateItemCommand({ TableName: this.#table, ...addUpdate(write) }));
      return;
    }
    if (write.kind === 'update') {
      try {
        await this.#client.send(
          new UpdateItemCommand({ TableName: this.#table, ...conditionalUpdate(write, this.#nowSeconds()) }),
        );
      } catch (error) {
        if (error instanceof ConditionalCheckFailedException) {
          throw new ConditionFailedError([0], { cause: error });
        }
        throw error;
      }
      return;
    }
    if (write.kind === 'check') {
      // A lone check writes nothing: a consistent read of the version is as good as a condition.
      const item = await this.get(write.key);
      if ((item?.version ?? 0) !== write.expectVersion) {
        throw new ConditionFailedError([0]);
      }
      return;
    }
    const condition = versionCondition(write.expectVersion, this.#nowSeconds());
    try {
      if (write.kind === 'put') {
        await this.#client.send(
          new PutItemCommand({ TableName: this.#table, Item: toDynamoItem(write), ...condition }),
        );
      } else {
        await this.#client.send(
          new DeleteItemCommand({ TableName: this.#table, Key: tableKey(write.key), ...condition }),
        );
      }
    } catch (error) {
      if (error instanceof ConditionalCheckFailedException) {
        throw new ConditionFailedError([0], { cause: error });
      }
      throw error;
    }
  }

  async #writeTransaction(writes: readonly PreparedWrite[]): Promise<void> {
    const now = this.#nowSeconds();
    const TransactItems = writes.map((write) => this.#transactItem(write, now));
    try {
      await this.#client.send(
        new TransactWriteItemsCommand({
          TransactItems,
          // Fixed for this attempt, so the SDK's own retries of it (after a timeout, say) apply it
          // once. Random rather than a hash of the writes: DynamoDB answers any call repeating a
          // token within 10 minutes as a replay, so a hash would turn a legitimate repeat of an
          // identical transaction (create, delete, create the same item again) into a silent no-op.
          ClientRequestToken: randomUUID(),
        }),
      );
    } catch (error) {
      if (error instanceof TransactionCanceledException) {
        throw cancellationError(error, writes);
      }
      throw error;
    }
  }

  #transactItem(write: PreparedWrite, now: number): TransactWriteItem {
    if (write.kind === 'add') {
      return { Update: { TableName: this.#table, ...addUpdate(write) } };
    }
    if (write.kind === 'update') {
      return { Update: { TableName: this.#table, ...conditionalUpdate(write, now) } };
    }
    const condition = versionCondition(write.expectVersion, now);
    switch (write.kind) {
      case 'put':
        return { Put: { TableName: this.#table, Item: toDynamoItem(write), ...condition } };
      case 'delete':
        return { Delete: { TableName: this.#table, Key: tableKey(write.key), ...condition } };
      case 'check':
        return { ConditionCheck: { TableName: this.#table, Key: tableKey(write.key), ...condition } };
    }
  }

  /**
   * Runs `attempt` again, after a growing, jittered pause, while it loses races against concurrent
   * transactions on the same items (which DynamoDB reports instead of queueing the writes), as
   * {@link retryPolicies}.transactionRace allows. A ConditionFailedError is an answer, not a race,
   * and is never retried here (the domain's read-modify-write re-reads instead).
   */
  async #retryingConflicts(attempt: () => Promise<void>): Promise<void> {
    await retrying(attempt, {
      policy: retryPolicies.transactionRace,
      retryOn: isConflict,
      giveUp: (cause, attempts) =>
        new ContentionError(`the store write lost to concurrent transactions ${attempts} times in a row`, { cause }),
    });
  }

  #nowSeconds(): number {
    return this.#clock.now() / 1000;
  }
}

/** Marks a cancelled transaction that lost a race, for {@link DynamoDbStore}'s retry loop. */
class TransactionRaceError extends Error {
  override name = 'TransactionRaceError';
}

function isConflict(error: unknown): boolean {
  return error instanceof TransactionConflictException || error instanceof TransactionRaceError;
}

/**
 * Turns a cancelled transaction into the port's error. Its reasons line up with the writes: when
 * every reason that is not `None` is a failed condition, the transaction was refused on its merits
 * and the indexes of those writes are the answer. A conflict or throttling anywhere means the
 * conditions may not all have been judged, so the whole transaction is worth another attempt.
 * Anything else (a validation error, an item too large) is a bug to surface as it is.
 */
function cancellationError(error: TransactionCanceledException, writes: readonly PreparedWrite[]): Error {
  const reasons = (error.CancellationReasons ?? []).map((reason) => reason.Code ?? 'None');
  const failed = reasons.flatMap((code, i) => (code === 'ConditionalCheckFailed' ? [writes[i]?.index ?? i] : []));
  const others = reasons.filter((code) => code !== 'None' && code !== 'ConditionalCheckFailed');
  if (others.length === 0 && failed.length > 0) {
    return new ConditionFailedError(failed, { cause: error });
  }
  if (others.length > 0 && others.every((code) => retryableCancellations.has(code))) {
    return new TransactionRaceError(`transaction cancelled: ${reasons.join(', ')}`, { cause: error });
  }
  return error;
}

/** The condition under which a write expecting `expectVersion` may apply, judged at `now` (epoch seconds). */
function versionCondition(expectVersion: number, now: number): Condition {
  if (expectVersion === 0) {
    return {
      ConditionExpression: 'attribute_not_exists(#pk) OR #expiresAt <= :now',
      ExpressionAttributeNames: { '#pk': itemAttributes.pk, '#expiresAt': itemAttributes.expiresAt },
      ExpressionAttributeValues: { ':now': { N: String(now) } },
    };
  }
  return {
    ConditionExpression: '#version = :expected AND (attribute_not_exists(#expiresAt) OR #expiresAt > :now)',
    ExpressionAttributeNames: { '#version': itemAttributes.version, '#expiresAt': itemAttributes.expiresAt },
    ExpressionAttributeValues: { ':expected': { N: String(expectVersion) }, ':now': { N: String(now) } },
  };
}

/** A sort key range as a key condition on `#querySk`, or `empty` when no key can match. */
type SortKeyRange =
  | 'empty'
  | {
      condition?: string;
      values?: Record<string, AttributeValue>;
      /** A sort key the condition admits but the query must not return. */
      excluded?: string;
    };

function sortKeyRange(prefix: string | undefined, before: string | undefined): SortKeyRange {
  const withPrefix = prefix !== undefined && prefix !== '';
  if (before === undefined) {
    return withPrefix ? { condition: 'begins_with(#querySk, :prefix)', values: { ':prefix': { S: prefix } } } : {};
  }
  if (before === '' || (withPrefix && compareCodePoints(before, prefix) <= 0)) {
    // Every key starting with the prefix sorts at or above it, so none is below `before`.
    return 'empty';
  }
  if (!withPrefix) {
    return { condition: '#querySk < :before', values: { ':before': { S: before } } };
  }
  if (!before.startsWith(prefix)) {
    // `before` is above the prefix and differs from it within its length: above every key starting with it.
    return { condition: 'begins_with(#querySk, :prefix)', values: { ':prefix': { S: prefix } } };
  }
  // Every key in [prefix, before) starts with the prefix; BETWEEN is inclusive, so `before` itself is dropped.
  return {
    condition: '#querySk BETWEEN :prefix AND :before',
    values: { ':prefix': { S: prefix }, ':before': { S: before } },
    excluded: before,
  };
}

/** DynamoDB orders strings by their UTF-8 bytes, which is code point order, not JavaScript's UTF-16 order. */
function compareCodePoints(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a, 'utf8'), Buffer.from(b, 'utf8'));
}

function tableKey(key: ItemKey): Record<string, AttributeValue> {
  return { [itemAttributes.pk]: { S: key.pk }, [itemAttributes.sk]: { S: key.sk } };
}

/** The DynamoDB item that a put stores. */
function toDynamoItem(write: Extract<PreparedWrite, { kind: 'put' }>): Record<string, AttributeValue> {
  const item: Record<string, AttributeValue> = {
    ...tableKey(write.key),
    [itemAttributes.version]: { N: String(write.expectVersion + 1) },
    [itemAttributes.data]: { S: write.data },
  };
  if (write.expiresAt !== undefined) {
    item[itemAttributes.expiresAt] = { N: String(write.expiresAt) };
  }
  for (const [field, value] of Object.entries(write.numbers)) {
    item[`${setPrefix}${field}`] = { N: String(value) };
  }
  for (const name of indexNames) {
    const indexKey = write.indexes[name];
    if (indexKey !== undefined) {
      item[indexKeyAttributes[name].pk] = { S: indexKey.pk };
      item[indexKeyAttributes[name].sk] = { S: indexKey.sk };
    }
  }
  return item;
}

/** Reads a stored item back, refusing one this store did not write rather than guessing at it. */
function toItem<T>(raw: Record<string, AttributeValue>): StoredItem<T> {
  const pk = raw[itemAttributes.pk]?.S;
  const sk = raw[itemAttributes.sk]?.S;
  const version = Number(raw[itemAttributes.version]?.N);
  const data = dataOf(raw);
  if (pk === undefined || sk === undefined || !Number.isSafeInteger(version) || data === undefined) {
    throw new Error(`item ${JSON.stringify([pk, sk])} lacks the attributes this store writes`);
  }
  const indexes: StoredItem['indexes'] = {};
  for (const name of indexNames) {
    const indexPk = raw[indexKeyAttributes[name].pk]?.S;
    const indexSk = raw[indexKeyAttributes[name].sk]?.S;
    if (indexPk !== undefined && indexSk !== undefined) {
      indexes[name] = { pk: indexPk, sk: indexSk };
    }
  }
  const item: StoredItem<T> = { pk, sk, version, data: data as T, indexes };
  const expiresAt = raw[itemAttributes.expiresAt]?.N;
  if (expiresAt !== undefined) {
    item.expiresAt = Number(expiresAt);
  }
  return item;
}

/**
 * An add as an UpdateItem: `ADD` on the version and on one top-level number attribute per field
 * (DynamoDB's ADD takes top-level attributes only, so counters cannot live inside `data`), each
 * named {@link counterPrefix} + the field; `SET` of one attribute per `set` field, named
 * {@link setPrefix} + the field. ADD treats an absent attribute, or item, as 0.
 */
function addUpdate(write: Extract<PreparedWrite, { kind: 'add' }>) {
  const names: Record<string, string> = { '#version': itemAttributes.version };
  const values: Record<string, AttributeValue> = { ':one': { N: '1' } };
  const adds = ['#version :one'];
  Object.entries(write.fields).forEach(([field, value], i) => {
    names[`#c${i}`] = `${counterPrefix}${field}`;
    values[`:c${i}`] = { N: String(value) };
    adds.push(`#c${i} :c${i}`);
  });
  const sets = Object.entries(write.set ?? {}).map(([field, value], i) => {
    names[`#s${i}`] = `${setPrefix}${field}`;
    values[`:s${i}`] = { N: String(value) };
    return `#s${i} = :s${i}`;
  });
  if (write.expiresAt !== undefined) {
    names['#expiresAt'] = itemAttributes.expiresAt;
    values[':expiresAt'] = { N: String(write.expiresAt) };
    sets.push('#expiresAt = :expiresAt');
  }
  return {
    Key: tableKey(write.key),
    UpdateExpression: `ADD ${adds.join(', ')}${sets.length === 0 ? '' : ` SET ${sets.join(', ')}`}`,
    ExpressionAttributeNames: names,
    ExpressionAttributeValues: values,
  };
}

/**
 * An update as an UpdateItem: `SET` of each number field ({@link setPrefix} + the field), `ADD` on
 * the version, under a condition that the item exists, has not expired at `now` (epoch seconds)
 * and that each compared number field holds its bounds.
 */
function conditionalUpdate(write: Extract<PreparedWrite, { kind: 'update' }>, now: number) {
  const names: Record<string, string> = {
    '#pk': itemAttributes.pk,
    '#version': itemAttributes.version,
    '#expiresAt': itemAttributes.expiresAt,
  };
  const values: Record<string, AttributeValue> = { ':one': { N: '1' }, ':now': { N: String(now) } };
  const sets = Object.entries(write.set).map(([field, value], i) => {
    names[`#s${i}`] = `${setPrefix}${field}`;
    values[`:s${i}`] = { N: String(value) };
    return `#s${i} = :s${i}`;
  });
  const conditions = ['attribute_exists(#pk)', '(attribute_not_exists(#expiresAt) OR #expiresAt > :now)'];
  const operators = { below: '<', atLeast: '>=', equals: '=' } as const;
  Object.entries(write.when).forEach(([field, condition], i) => {
    names[`#w${i}`] = `${setPrefix}${field}`;
    for (const bound of ['below', 'atLeast', 'equals'] as const) {
      const value = condition[bound];
      if (value === undefined) continue;
      values[`:w${i}${bound}`] = { N: String(value) };
      conditions.push(`#w${i} ${operators[bound]} :w${i}${bound}`);
    }
  });
  return {
    Key: tableKey(write.key),
    UpdateExpression: `SET ${sets.join(', ')} ADD #version :one`,
    ConditionExpression: conditions.join(' AND '),
    ExpressionAttributeNames: names,
    ExpressionAttributeValues: values,
  };
}

/**
 * An item's data: its JSON text, with its counters (attributes named {@link counterPrefix} +
 * field) summed into the numbers of the same name and its set fields ({@link setPrefix}) over
 * them, as the embedded store applies adds to the data itself. A counters-only item's data is just
 * its counters. Undefined when the item has neither data nor counters.
 */
function dataOf(raw: Record<string, AttributeValue>): unknown {
  const text = raw[itemAttributes.data]?.S;
  const fields: Record<string, number> = {};
  const set: Record<string, number> = {};
  for (const [name, value] of Object.entries(raw)) {
    if (value.N === undefined) continue;
    if (name.startsWith(counterPrefix)) fields[name.slice(counterPrefix.length)] = Number(value.N);
    else if (name.startsWith(setPrefix)) set[name.slice(setPrefix.length)] = Number(value.N);
  }
  if (Object.keys(fields).length + Object.keys(set).length === 0) {
    return text === undefined ? undefined : JSON.parse(text);
  }
  const [pk = '', sk = ''] = [raw[itemAttributes.pk]?.S, raw[itemAttributes.sk]?.S];
  return applyAdd(text === undefined ? {} : JSON.parse(text), { key: { pk, sk }, fields, set });
}

/** A cursor holds a DynamoDB start key: the values of its attributes, which are all strings here. */
function cursorAt(key: Record<string, AttributeValue>, names: readonly string[]): string {
  const position = names.map((name) => {
    const value = key[name]?.S;
    if (value === undefined) {
      throw new Error(`query position lacks the key attribute ${name}`);
    }
    return value;
  });
  return encodeCursor(position);
}

/** The start key in a cursor, checked against the query it is passed to: the same key attributes and the same partition. */
function startKeyOf(
  cursor: string,
  names: readonly string[],
  partitionName: string,
  partition: string,
): Record<string, AttributeValue> {
  const position = decodeCursor(cursor, names.length);
  const key = Object.fromEntries(names.map((name, i): [string, AttributeValue] => [name, { S: String(position[i]) }]));
  if (key[partitionName]?.S !== partition) {
    throw invalidCursor(cursor, 'belongs to another partition');
  }
  return key;
}
