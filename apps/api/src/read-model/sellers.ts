import { type Database, sellers } from '@cs/db';
import { and, desc, eq, ilike, inArray, lt, or } from 'drizzle-orm';
import { isUuid } from '../schemas.ts';
import { type Page, type PageQuery, type PageRequest, pageOf, pageRequest } from './page.ts';

export type SellerRow = typeof sellers.$inferSelect;

export const parseSellerPage = (query: PageQuery) => pageRequest(query, isUuid);

/** `%` and `_` typed by the operator are searched for, not wildcards. */
const likePattern = (text: string) => `%${text.replace(/[\\%_]/g, (ch) => `\\${ch}`)}%`;

/** Sellers, newest first: all, only one (a seller sees itself), or those whose name or email contains `search`. */
export async function readSellers(
  db: Database,
  filter: { sellerId?: string | undefined; search?: string | undefined },
  { limit, after }: PageRequest,
): Promise<Page<SellerRow>> {
  const { sellerId, search } = filter;
  const rows = await db
    .select()
    .from(sellers)
    .where(
      and(
        sellerId ? eq(sellers.id, sellerId) : undefined,
        search ? or(ilike(sellers.name, likePattern(search)), ilike(sellers.email, likePattern(search))) : undefined,
        after ? lt(sellers.id, after) : undefined,
      ),
    )
    .orderBy(desc(sellers.id))
    .limit(limit + 1);
  return pageOf(rows, limit, (row) => row.id);
}

/** The sellers with these ids, by id: what a list of their requests shows about them. */
export async function sellersById(db: Database, ids: readonly string[]): Promise<Map<string, SellerRow>> {
  const unique = [...new Set(ids)];
  const rows = unique.length ? await db.select().from(sellers).where(inArray(sellers.id, unique)) : [];
  return new Map(rows.map((row) => [row.id, row]));
}
