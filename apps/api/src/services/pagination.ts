import { ApiError } from '../errors.ts';

/** Cursors are opaque to clients: the last item's sort key, base64url-encoded. */
export function decodeCursor(cursor: string | undefined, isValid: (key: string) => boolean): string | undefined {
  if (cursor === undefined) return undefined;
  const key = Buffer.from(cursor, 'base64url').toString('utf8');
  if (!isValid(key)) {
    throw new ApiError('validation_error', 'Invalid request', { fields: { cursor: 'is not a cursor of this list' } });
  }
  return key;
}

/** Given up to limit + 1 rows, newest first: the page and the cursor of the next one. */
export function page<Row, Item>(
  rows: Row[],
  limit: number,
  keyOf: (row: Row) => string,
  view: (row: Row) => Item,
): { items: Item[]; next_cursor: string | null } {
  const hasMore = rows.length > limit;
  const shown = hasMore ? rows.slice(0, limit) : rows;
  const last = shown.at(-1);
  return {
    items: shown.map(view),
    next_cursor: hasMore && last !== undefined ? Buffer.from(keyOf(last)).toString('base64url') : null,
  };
}

export const DEFAULT_LIMIT = 50;
