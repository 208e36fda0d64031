import { DEFAULT_LIMIT, decodeCursor, page } from '../services/pagination.ts';

/**
 * Every list, for the API and for the operator pages alike, pages one way: newest first,
 * `?limit=` (1–500, default 50) and `?cursor=`, the opaque `next_cursor` of the page before.
 */
export type Page<Row> = { items: Row[]; next_cursor: string | null };

/** `?limit=` and `?cursor=` as a request gave them, the limit already checked to be 1–500. */
export interface PageQuery {
  limit?: number | undefined;
  cursor?: string | undefined;
}

/** Which page to read: how many rows, and the sort key the cursor stands for. */
export interface PageRequest {
  limit: number;
  after: string | undefined;
}

/**
 * Reads the cursor back into the list's sort key: 400 for one this list never gave out. Routes
 * call it before looking up what the list belongs to, so a bad request is a 400 before any 404.
 */
export function pageRequest(query: PageQuery, isKey: (key: string) => boolean): PageRequest {
  return { limit: query.limit ?? DEFAULT_LIMIT, after: decodeCursor(query.cursor, isKey) };
}

/** Given up to limit + 1 rows, newest first: the page, and the cursor of the next one. */
export const pageOf = <Row>(rows: Row[], limit: number, keyOf: (row: Row) => string): Page<Row> =>
  page(rows, limit, keyOf, (row) => row);

const MAX_BIGINT_ID = 2n ** 63n - 1n;
/** A key of a list ordered by a PostgreSQL bigint: beyond its range the query itself would fail. */
export const isBigintId = (key: string) => /^[1-9][0-9]{0,18}$/.test(key) && BigInt(key) <= MAX_BIGINT_ID;
