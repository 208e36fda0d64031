import { type Database, phoneNumbers } from '@cs/db';
import { count, desc, eq, lt, sum } from 'drizzle-orm';
import { isBigintId, type Page, type PageQuery, type PageRequest, pageOf, pageRequest } from './page.ts';

export type PhoneNumberRow = typeof phoneNumbers.$inferSelect;

export const parsePhoneNumberPage = (query: PageQuery) => pageRequest(query, isBigintId);

/** Charged numbers, newest first (by `seq`, the order they were first charged). */
export async function readPhoneNumbers(db: Database, { limit, after }: PageRequest): Promise<Page<PhoneNumberRow>> {
  const rows = await db
    .select()
    .from(phoneNumbers)
    .where(after ? lt(phoneNumbers.seq, BigInt(after)) : undefined)
    .orderBy(desc(phoneNumbers.seq))
    .limit(limit + 1);
  return pageOf(rows, limit, (row) => row.seq.toString());
}

/** One number, already normalised to `09…`. */
export async function findPhoneNumber(db: Database, number: string): Promise<PhoneNumberRow | undefined> {
  const [row] = await db.select().from(phoneNumbers).where(eq(phoneNumbers.number, number));
  return row;
}

/** How many numbers were charged, and how many rials in all. */
export async function phoneNumberTotals(db: Database): Promise<{ numbers: number; charged: bigint }> {
  const [totals] = await db.select({ numbers: count(), charged: sum(phoneNumbers.totalCharged) }).from(phoneNumbers);
  return { numbers: totals?.numbers ?? 0, charged: BigInt(totals?.charged ?? 0) };
}
