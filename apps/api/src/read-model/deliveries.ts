import { type Database, type DeliveryStatus, deliveries } from '@cs/db';
import { and, desc, eq, lt } from 'drizzle-orm';
import { isUuid } from '../schemas.ts';
import { type Page, type PageQuery, type PageRequest, pageOf, pageRequest } from './page.ts';

export type DeliveryRecord = typeof deliveries.$inferSelect;

export const parseDeliveryPage = (query: PageQuery) => pageRequest(query, isUuid);

/** Deliveries newest first (ids are the sales' UUIDv7 job ids), in one status or any, of one seller or all. */
export async function readDeliveries(
  db: Database,
  filter: { status?: DeliveryStatus | undefined; sellerId?: string | undefined },
  { limit, after }: PageRequest,
): Promise<Page<DeliveryRecord>> {
  const rows = await db
    .select()
    .from(deliveries)
    .where(
      and(
        filter.status ? eq(deliveries.status, filter.status) : undefined,
        filter.sellerId ? eq(deliveries.sellerId, filter.sellerId) : undefined,
        after ? lt(deliveries.jobId, after) : undefined,
      ),
    )
    .orderBy(desc(deliveries.jobId))
    .limit(limit + 1);
  return pageOf(rows, limit, (row) => row.jobId);
}

export async function readDelivery(db: Database, id: string): Promise<DeliveryRecord | undefined> {
  if (!isUuid(id)) return undefined;
  const [row] = await db.select().from(deliveries).where(eq(deliveries.jobId, id.toLowerCase()));
  return row;
}
