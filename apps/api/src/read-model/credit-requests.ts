import { type CreditRequestStatus, creditRequests, type Database, openCreditRequestStatuses } from '@cs/db';
import { and, count, desc, eq, inArray, lt, sum } from 'drizzle-orm';
import { isUuid } from '../schemas.ts';
import { type Page, type PageQuery, type PageRequest, pageOf, pageRequest } from './page.ts';

export type CreditRequestRow = typeof creditRequests.$inferSelect;

export const parseCreditRequestPage = (query: PageQuery) => pageRequest(query, isUuid);

/** Credit requests, newest first, of one seller or of all, in one status or in any. */
export async function readCreditRequests(
  db: Database,
  filter: {
    sellerId?: string | undefined;
    /** Any of these; undefined: every status. */
    statuses?: readonly CreditRequestStatus[] | undefined;
  },
  { limit, after }: PageRequest,
): Promise<Page<CreditRequestRow>> {
  const rows = await db
    .select()
    .from(creditRequests)
    .where(
      and(
        filter.sellerId ? eq(creditRequests.sellerId, filter.sellerId) : undefined,
        filter.statuses ? inArray(creditRequests.status, [...filter.statuses]) : undefined,
        after ? lt(creditRequests.id, after) : undefined,
      ),
    )
    .orderBy(desc(creditRequests.id))
    .limit(limit + 1);
  return pageOf(rows, limit, (row) => row.id);
}

/** How many requests wait for a decision, and for how many rials: of one seller, or of all. */
export async function pendingTotals(db: Database, sellerId?: string): Promise<{ count: number; amount: bigint }> {
  const [totals] = await db
    .select({ count: count(), amount: sum(creditRequests.amount) })
    .from(creditRequests)
    .where(
      and(
        inArray(creditRequests.status, [...openCreditRequestStatuses]),
        sellerId ? eq(creditRequests.sellerId, sellerId) : undefined,
      ),
    );
  return { count: totals?.count ?? 0, amount: BigInt(totals?.amount ?? 0) };
}
