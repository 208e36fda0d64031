import { type Database, type DeliveryStatus, deliveries } from '@cs/db';
import { and, desc, eq, lt } from 'drizzle-orm';
import { isUuid } from '../schemas.ts';
import { type Page, type PageQuery, type PageRequest, pageOf, pageRequest } from './page.ts';

export type DeliveryRecord = typeof deliveries.$inferSelect;

export const parseDeliveryPage = (query: PageQuery) => pageRequest(query, isUuid);

/**
 * Deliveries with a row of their own, newest first (ids are the sales' UUIDv7 job ids), in one
 * status or any, of one seller or all: those that needed more than the first answer (asked again,
 * refunded, resolved by an operator), or outlived their hold. A top-up delivered at the first
 * answer is on its sale's job (`result.delivery`), and `readDelivery` reads it from there.
 */
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

/**
 * One sale's delivery. A sale delivered at the first answer, or still held by the process that
 * debited it, has no `deliveries` row: its delivery is read from its job (`result.delivery`) and
 * from the hold (`delivery_holds`), in the same shape.
 */
export async function readDelivery(db: Database, id: string): Promise<DeliveryRecord | undefined> {
  if (!isUuid(id)) return undefined;
  const jobId = id.toLowerCase();
  const [row] = await db.select().from(deliveries).where(eq(deliveries.jobId, jobId));
  return row ?? (await deliveryOfJob(db, jobId));
}

interface DeliveryOnJob {
  delivery?: { provider?: string; provider_reference?: string | null; delivered_at?: string; attempts?: number };
  transaction_id?: string;
}

async function deliveryOfJob(db: Database, jobId: string): Promise<DeliveryRecord | undefined> {
  const [job] = await db.$client<
    Array<{
      seller_id: string;
      partition: number;
      phone_number: string;
      amount: bigint;
      status: 'delivering' | 'succeeded';
      result: DeliveryOnJob;
      applied_at: string;
      finished_at: string | null;
      held_provider: string | null;
      held_until: string | null;
    }>
  >`
    select j.seller_id, j.partition, j.phone_number, j.amount, j.status, j.result, j.applied_at, j.finished_at,
           h.provider as held_provider, h.held_until
    from jobs j
    -- The holds have no index by job (they live DELIVERY_LEASE_MS): read only for a sale still on its way.
    left join lateral (
      select provider, held_until from delivery_holds where j.status = 'delivering' and j.id = any(job_ids) limit 1
    ) h on true
    where j.id = ${jobId} and j.type = 'charge_sale'
      and (j.status = 'delivering' or (j.status = 'succeeded' and j.result ? 'delivery'))`;
  if (!job) return undefined;
  const delivered = job.status === 'succeeded' ? job.result.delivery : undefined;
  const debitedAt = new Date(job.applied_at);
  return {
    jobId,
    sellerId: job.seller_id,
    partition: job.partition,
    saleTransactionId: BigInt(job.result.transaction_id ?? 0),
    phoneNumber: job.phone_number,
    amount: job.amount,
    provider: delivered?.provider ?? job.held_provider ?? 'unknown',
    status: delivered ? 'delivered' : 'pending',
    watching: !delivered,
    attempts: delivered?.attempts ?? 0,
    nextAttemptAt: debitedAt,
    claimedUntil: job.held_until === null ? null : new Date(job.held_until),
    providerReference: delivered?.provider_reference ?? null,
    providerReason: null,
    lastError: null,
    debitedAt,
    deliveredAt: delivered?.delivered_at ? new Date(delivered.delivered_at) : null,
    gaveUpAt: null,
    resolution: null,
    resolvedBy: null,
    resolvedAt: null,
    refundTransactionId: null,
    conflictAt: null,
    updatedAt: new Date(job.finished_at ?? job.applied_at),
  };
}
