/** Cursor pagination on the client side, shared by `jobs list --all` and `nodes list --all`. */
import { ApiError, UsageError } from './errors.js';
import { countFlag } from './spec-flags.js';

/** One page of a list endpoint. */
export interface Page<T> {
  items: readonly T[];
  cursor?: string | undefined;
}

/**
 * Fetches pages from `cursor` on until the server returns no cursor, and concatenates them. A
 * cursor that comes back unchanged would loop forever, so it is reported as a server bug.
 */
export async function followCursors<T>(
  cursor: string | undefined,
  fetchPage: (cursor: string | undefined) => Promise<Page<T>>,
): Promise<T[]> {
  const items: T[] = [];
  let next = cursor;
  for (;;) {
    const page = await fetchPage(next);
    items.push(...page.items);
    if (page.cursor === undefined) return items;
    if (page.cursor === next) {
      throw new ApiError(200, {
        error: { code: 'invalid_response', message: `the control plane returned the same cursor twice (${next})` },
      });
    }
    next = page.cursor;
  }
}

/** The page size bounds of `PageQuery`. */
const maxLimit = 200;

/** Parses `--limit`: a page size from 1 to 200. */
export function parseLimit(text: string): number {
  const limit = countFlag('--limit', text);
  if (limit < 1 || limit > maxLimit) throw new UsageError(`--limit must be between 1 and ${maxLimit}, got ${limit}`);
  return limit;
}
