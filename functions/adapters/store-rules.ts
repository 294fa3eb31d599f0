/**
 * DynamoDB's rules for the `Store` port's arguments, and the cursor format of both adapters. Both store
 * adapters check them before touching storage: the DynamoDB one so that a bad transaction fails
 * before any call, the embedded one so that code written against it also runs on DynamoDB.
 * Checking in one place keeps the two refusing the same mistakes with the same messages.
 *
 * A mistake caught here is a bug in the caller, so it is a plain Error, never a
 * `ConditionFailedError`.
 *
 * @module
 */
import { InvalidRequestError } from '../domain/errors.js';
import {
  type FieldCondition,
  type IndexKey,
  type IndexName,
  type ItemKey,
  maxTransactionWrites,
  type Write,
} from '../ports/store.js';

/** Page size when a query names none. */
const defaultQueryLimit = 100;
/** Larger requested pages are cut to this size. */
const maxQueryLimit = 1000;

/** A record, so that the compiler insists on every index the port names. */
const indexes: Readonly<Record<IndexName, true>> = { byPool: true, byDue: true, byOwner: true };

/** Every index of the port, in the order a write's index keys are checked. */
export const indexNames = Object.keys(indexes) as readonly IndexName[];

/**
 * A checked write. A put carries its data as JSON text, so that storing it cannot fail on the data
 * midway through a transaction.
 */
export type PreparedWrite = (
  | {
      kind: 'put';
      key: ItemKey;
      expectVersion: number;
      data: string;
      expiresAt: number | undefined;
      indexes: Partial<Record<IndexName, IndexKey>>;
      numbers: Record<string, number>;
    }
  | { kind: 'delete' | 'check'; key: ItemKey; expectVersion: number }
  | { kind: 'add'; key: ItemKey; fields: Record<string, number>; set?: Record<string, number>; expiresAt?: number }
  | { kind: 'update'; key: ItemKey; set: Record<string, number>; when: Record<string, FieldCondition> }
) & {
  /** The write's index in the caller's list (writes merged into an earlier one keep the first one's). */
  index: number;
};

/**
 * Checks a transaction the way DynamoDB does before looking at any item: a bounded, non-empty
 * list of writes to distinct items, with keys DynamoDB accepts, versions that can hold, data that
 * is JSON and expiry times that are numbers. Adds to one item are merged into the first of them,
 * and adds to an item the transaction puts are folded into the put's data (so the bound counts
 * items, as DynamoDB does); each prepared write keeps its caller's index.
 * @throws Error naming the first write at fault and what is wrong with it.
 */
export function prepareWrites(writes: readonly Write[]): PreparedWrite[] {
  if (writes.length === 0) {
    throw new Error('a transaction needs at least one write');
  }
  const seen = new Map<string, PreparedWrite>();
  const prepared: PreparedWrite[] = [];
  /** Adds to an item that the transaction also puts, folded in once every write is seen. */
  const folded = new Map<string, Extract<PreparedWrite, { kind: 'add' }>>();
  writes.forEach((write, index) => {
    const where = `write ${index} (${write.kind} ${describeKey(write.key)})`;
    requireKey(write.key, where);
    const id = JSON.stringify([write.key.pk, write.key.sk]);
    const earlier = seen.get(id);
    if (write.kind === 'add') {
      const add: Extract<PreparedWrite, { kind: 'add' }> = {
        kind: 'add',
        key: write.key,
        fields: checkFields(write.fields, where),
        ...(write.set === undefined ? {} : { set: checkSet(write.set, where) }),
        ...(write.expiresAt === undefined ? {} : { expiresAt: checkAddExpiry(write.expiresAt, where) }),
        index,
      };
      // Adds to one item are summed, so callers need not merge counters that happen to share a shard.
      if (earlier?.kind === 'add') {
        mergeAdd(earlier, add);
        return;
      }
      if (earlier?.kind === 'put') {
        mergeAdd(foldedInto(folded, id, earlier), add);
        return;
      }
      if (earlier !== undefined) {
        throw new Error(`${where} targets the same item as write ${earlier.index}, which is a ${earlier.kind}`);
      }
      seen.set(id, add);
      prepared.push(add);
      return;
    }
    if (write.kind === 'update') {
      if (earlier !== undefined) {
        throw new Error(`${where} targets the same item as write ${earlier.index}`);
      }
      if (Object.keys(write.set ?? {}).length === 0) {
        throw new Error(`${where} sets no fields`);
      }
      const update: PreparedWrite = {
        kind: 'update',
        key: write.key,
        set: checkSet(write.set, where),
        when: checkWhen(write.when, where),
        index,
      };
      seen.set(id, update);
      prepared.push(update);
      return;
    }
    if (!Number.isSafeInteger(write.expectVersion) || write.expectVersion < 0) {
      throw new Error(`${where} expects version ${write.expectVersion}, which is not a non-negative integer`);
    }
    const checked = prepareVersioned(write, where, index);
    if (earlier?.kind === 'add' && checked.kind === 'put') {
      // The put takes the add's place, and the add folds into it.
      prepared[prepared.indexOf(earlier)] = checked;
      seen.set(id, checked);
      mergeAdd(foldedInto(folded, id, checked), earlier);
      return;
    }
    if (earlier !== undefined) {
      throw new Error(`${where} targets the same item as write ${earlier.index}`);
    }
    seen.set(id, checked);
    prepared.push(checked);
  });
  for (const [id, add] of folded) {
    const put = seen.get(id);
    if (put?.kind === 'put') put.data = JSON.stringify(applyAdd(JSON.parse(put.data), add));
  }
  if (prepared.length > maxTransactionWrites) {
    throw new Error(`a transaction takes at most ${maxTransactionWrites} writes, got ${prepared.length}`);
  }
  return prepared;
}

/** The add that collects what folds into a put of the same item. */
function foldedInto(
  folded: Map<string, Extract<PreparedWrite, { kind: 'add' }>>,
  id: string,
  put: Extract<PreparedWrite, { kind: 'put' }>,
): Extract<PreparedWrite, { kind: 'add' }> {
  let add = folded.get(id);
  if (add === undefined) {
    add = { kind: 'add', key: put.key, fields: {}, index: put.index };
    folded.set(id, add);
  }
  return add;
}

/** Sums `later`'s fields into `into`'s; its `set` values win over earlier ones. */
function mergeAdd(into: Extract<PreparedWrite, { kind: 'add' }>, later: Extract<PreparedWrite, { kind: 'add' }>): void {
  for (const [name, value] of Object.entries(later.fields)) into.fields[name] = (into.fields[name] ?? 0) + value;
  if (later.set !== undefined) into.set = { ...into.set, ...later.set };
  if (later.expiresAt !== undefined) into.expiresAt = later.expiresAt;
}

/** An update's condition: per named field, finite bounds, at least one (a copy). */
function checkWhen(when: Readonly<Record<string, FieldCondition>>, where: string): Record<string, FieldCondition> {
  const checked: Record<string, FieldCondition> = {};
  for (const [name, condition] of Object.entries(when ?? {})) {
    const bounds = Object.entries(condition ?? {}).filter(([, value]) => value !== undefined);
    const known = bounds.every(([bound]) => bound === 'below' || bound === 'atLeast' || bound === 'equals');
    if (name === '' || bounds.length === 0 || !known || !bounds.every(([, value]) => Number.isFinite(value))) {
      throw new Error(
        `${where} compares field ${JSON.stringify(name)} with ${JSON.stringify(condition)}: needs a name and finite below, atLeast or equals`,
      );
    }
    checked[name] = Object.fromEntries(bounds) as FieldCondition;
  }
  return checked;
}

/**
 * Whether a number field (undefined when absent) meets a condition: the reading both adapters
 * follow (DynamoDB's comparisons are false on an absent attribute).
 */
export function meetsCondition(value: number | undefined, condition: FieldCondition): boolean {
  if (value === undefined) return false;
  return (
    (condition.below === undefined || value < condition.below) &&
    (condition.atLeast === undefined || value >= condition.atLeast) &&
    (condition.equals === undefined || value === condition.equals)
  );
}

/** An add's expiry: a finite number of epoch seconds, as a put's. */
function checkAddExpiry(expiresAt: number, where: string): number {
  if (typeof expiresAt !== 'number' || !Number.isFinite(expiresAt)) {
    throw new Error(`${where} has expiresAt ${String(expiresAt)}, which is not a number of epoch seconds`);
  }
  return expiresAt;
}

/**
 * `data` after an add: each field summed into the number of that name (absent: 0), each `set`
 * field replaced. The same for both adapters' reads of an item, whatever wrote it.
 * @throws Error when the data is not an object or a summed field holds something else than a number.
 */
export function applyAdd(data: unknown, add: Pick<Extract<PreparedWrite, { kind: 'add' }>, 'fields' | 'set' | 'key'>) {
  if (typeof data !== 'object' || data === null || Array.isArray(data)) {
    throw new Error(`an add to ${describeKey(add.key)} meets data that is not an object`);
  }
  const sums = { ...(data as Record<string, unknown>) };
  for (const [name, value] of Object.entries(add.fields)) {
    const before = sums[name] ?? 0;
    if (typeof before !== 'number') {
      throw new Error(
        `an add to field ${JSON.stringify(name)} of ${describeKey(add.key)} meets something else than a number`,
      );
    }
    sums[name] = before + value;
  }
  return { ...sums, ...add.set };
}

function prepareVersioned(
  write: Exclude<Write, { kind: 'add' | 'update' }>,
  where: string,
  index: number,
): PreparedWrite {
  if (write.kind !== 'put') {
    return { kind: write.kind, key: write.key, expectVersion: write.expectVersion, index };
  }
  const data = JSON.stringify(write.data);
  if (data === undefined) {
    throw new Error(`${where} has data that is not JSON-serialisable`);
  }
  if (write.expiresAt !== undefined && !Number.isFinite(write.expiresAt)) {
    throw new Error(`${where} expires at ${write.expiresAt}, which is not a finite number of seconds`);
  }
  const indexKeys: Partial<Record<IndexName, IndexKey>> = {};
  for (const name of indexNames) {
    const indexKey = write.indexes?.[name];
    if (indexKey !== undefined) {
      requireKey(indexKey, `${where} index ${name}`);
      indexKeys[name] = { pk: indexKey.pk, sk: indexKey.sk };
    }
  }
  return {
    kind: 'put',
    key: write.key,
    expectVersion: write.expectVersion,
    data,
    expiresAt: write.expiresAt,
    indexes: indexKeys,
    numbers: write.numbers === undefined ? {} : checkSet(write.numbers, where),
    index,
  };
}

/** An add's `set` fields: each named and a finite number (a copy). */
function checkSet(set: Readonly<Record<string, number>>, where: string): Record<string, number> {
  const entries = Object.entries(set);
  for (const [name, value] of entries) {
    if (name === '' || typeof value !== 'number' || !Number.isFinite(value)) {
      throw new Error(
        `${where} sets field ${JSON.stringify(name)} to ${JSON.stringify(value)}: needs a name and a finite number`,
      );
    }
  }
  return Object.fromEntries(entries);
}

/** An add's fields: at least one, each named and a finite number (a copy, so merging cannot touch the caller's). */
function checkFields(fields: Readonly<Record<string, number>>, where: string): Record<string, number> {
  const entries = Object.entries(fields ?? {});
  if (entries.length === 0) {
    throw new Error(`${where} adds no fields`);
  }
  for (const [name, value] of entries) {
    if (name === '' || typeof value !== 'number' || !Number.isFinite(value)) {
      throw new Error(
        `${where} adds ${JSON.stringify(value)} to field ${JSON.stringify(name)}: needs a name and a finite number`,
      );
    }
  }
  return Object.fromEntries(entries);
}

/**
 * The page size of a query: `limit`, cut to the largest page a store returns, or the default
 * page size when absent.
 * @throws Error when `limit` is not a positive integer.
 */
export function pageSize(limit: number | undefined): number {
  if (limit === undefined) {
    return defaultQueryLimit;
  }
  if (!Number.isSafeInteger(limit) || limit < 1) {
    throw new Error(`query limit must be a positive integer, got ${limit}`);
  }
  return Math.min(limit, maxQueryLimit);
}

/** An item's key as messages show it: both parts quoted, so an empty or odd key stays visible. */
export function describeKey(key: ItemKey): string {
  return `${JSON.stringify(key.pk)}/${JSON.stringify(key.sk)}`;
}

/**
 * A cursor is the sort position of a page's last item, a list of key values, as base64url JSON:
 * opaque to callers, checked on the way back by {@link decodeCursor}.
 */
export function encodeCursor(position: readonly string[]): string {
  return Buffer.from(JSON.stringify(position)).toString('base64url');
}

/**
 * The position in a cursor made by {@link encodeCursor}. A cursor comes back from the client, so a
 * bad one is the client's mistake, not a bug in the caller: unlike the other rules here, it is an
 * {@link InvalidRequestError} (`invalid_cursor`, 400), never a 500.
 * @param length how many key values a cursor of this query holds.
 * @throws InvalidRequestError when the cursor is malformed or holds another number of key values.
 */
export function decodeCursor(cursor: string, length: number): string[] {
  let position: unknown;
  try {
    position = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    throw invalidCursor(cursor, 'is malformed');
  }
  if (!Array.isArray(position) || position.length !== length || !position.every((v) => typeof v === 'string')) {
    throw invalidCursor(cursor, 'does not belong to a query of this shape');
  }
  return position;
}

/** The error for a cursor this query cannot resume from; the cursor is shown cut short, never echoed whole. */
export function invalidCursor(cursor: string, why: string): InvalidRequestError {
  const shown = cursor.length > 40 ? `${cursor.slice(0, 40)}...` : cursor;
  return new InvalidRequestError('invalid_cursor', `query cursor ${JSON.stringify(shown)} ${why}`);
}

/** DynamoDB rejects empty strings as key attributes, of the table and of its indexes. */
function requireKey(key: ItemKey | IndexKey, where: string): void {
  if (typeof key.pk !== 'string' || typeof key.sk !== 'string' || key.pk === '' || key.sk === '') {
    throw new Error(`${where}: pk and sk must be non-empty strings`);
  }
}
