import { type Database, type TransactionType, transactions } from '@cs/db';
import { and, desc, eq, lt } from 'drizzle-orm';
import { isBigintId, type Page, type PageQuery, type PageRequest, pageOf, pageRequest } from './page.ts';

export type LedgerRow = typeof transactions.$inferSelect;

export const parseLedgerPage = (query: PageQuery) => pageRequest(query, isBigintId);

/** Ledger rows, newest first (by id, the order they were applied), of one seller or of all. */
export async function readLedger(
  db: Database,
  filter: { sellerId?: string | undefined; type?: TransactionType | undefined },
  { limit, after }: PageRequest,
): Promise<Page<LedgerRow>> {
  const rows = await db
    .select()
    .from(transactions)
    .where(
      and(
        filter.sellerId ? eq(transactions.sellerId, filter.sellerId) : undefined,
        filter.type ? eq(transactions.type, filter.type) : undefined,
        after ? lt(transactions.id, BigInt(after)) : undefined,
      ),
    )
    .orderBy(desc(transactions.id))
    .limit(limit + 1);
  return pageOf(rows, limit, (row) => row.id.toString());
}
