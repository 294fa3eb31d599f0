import { InvalidRequestError } from './errors.js';

/**
 * The cursors of the lists the domain pages itself rather than through one store query (the node
 * list across its shards, the job list with its counter items): base64url JSON of the list's name,
 * the scope it pages (an owner's partition, or '' for the fleet), the status filter it was made
 * under ('' for none) and the position to resume at. Opaque to clients, like the store's own; one
 * made by another list, another scope or under another filter is refused, because a filtered page
 * is the unfiltered page less what did not match and would mean another list when resumed.
 */
export function encodeListCursor(
  list: string,
  scope: string,
  filter: string | undefined,
  position: readonly (string | number)[],
): string {
  return Buffer.from(JSON.stringify([list, scope, filter ?? '', ...position])).toString('base64url');
}

/**
 * The position a cursor resumes at, for the caller to check further.
 * @throws InvalidRequestError `invalid_cursor` when it is malformed or another list, scope or filter made it.
 */
export function decodeListCursor(cursor: string, list: string, scope: string, filter: string | undefined): unknown[] {
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    parsed = undefined;
  }
  if (!Array.isArray(parsed) || parsed[0] !== list || typeof parsed[1] !== 'string' || typeof parsed[2] !== 'string') {
    throw malformedCursor(cursor);
  }
  const [, madeScope, madeFilter, ...position] = parsed as [string, string, string, ...unknown[]];
  if (madeScope !== scope) throw refusedCursor(cursor, 'belongs to another owner');
  if (madeFilter !== (filter ?? '')) {
    const made = madeFilter === '' ? 'without a status filter' : `of status ${madeFilter}`;
    throw refusedCursor(cursor, `was made by the list ${made}: pass the same status as the request that returned it`);
  }
  return position;
}

export const malformedCursor = (cursor: string): InvalidRequestError => refusedCursor(cursor, 'is malformed');

function refusedCursor(cursor: string, why: string): InvalidRequestError {
  const shown = cursor.length > 40 ? `${cursor.slice(0, 40)}...` : cursor;
  return new InvalidRequestError('invalid_cursor', `query cursor ${JSON.stringify(shown)} ${why}`);
}
