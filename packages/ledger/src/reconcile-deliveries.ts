import type { Database } from '@cs/db';
import { saleDeliveryStatusSql } from './delivery-records.ts';

/**
 * Where every debited sale stands against its top-up. Each `charge_sale` row is delivered,
 * refunded, or still on its way (pending, unresolved, refund due), as its delivery row says, or
 * its job where it has none (delivered at the first answer, or just debited); a refund gives back its own
 * sale, once; a delivered top-up is never refunded unless listed as a conflict. The database
 * refuses the worst of these already (a unique refund per sale, a trigger that holds a refund to
 * its sale); this reads what is there, so a change made past those guards still shows.
 */
export interface DeliveryReconciliation {
  sales: number;
  delivered: number;
  refunded: number;
  /** Still on their way: asked (pending), waiting for an operator (unresolved), refund due. */
  inProgress: number;
  unresolved: number;
  conflicts: number;
  /** On their way for longer than the give-up point: an operator should look. */
  pendingTooLong: number;
  oldestPendingAt: Date | null;
  /** Sales written before deliveries existed: debited and final, with no delivery on row or job. */
  withoutDelivery: number;
  /** Faults: a sale refunded more than once, a refund without its sale, a refunded delivery without its refund row, a delivered (not conflicting) top-up with a refund. */
  refundedTwice: number;
  refundsWithoutSale: number;
  refundedWithoutRefundRow: number;
  deliveredAndRefunded: number;
  ok: boolean;
}

export async function reconcileDeliveries(
  db: Database,
  { pendingTooLongMs, sellerId }: { pendingTooLongMs: number; sellerId?: string },
): Promise<DeliveryReconciliation> {
  return db.$client.begin('isolation level repeatable read read only', async (sql) => {
    const seller = sellerId === undefined ? sql`` : sql`and t.seller_id = ${sellerId}`;
    const [row] = await sql<
      Array<{
        sales: string;
        delivered: string;
        refunded: string;
        in_progress: string;
        unresolved: string;
        conflicts: string;
        pending_too_long: string;
        oldest_pending_at: string | null;
        without_delivery: string;
        refunded_twice: string;
        refunds_without_sale: string;
        refunded_without_refund_row: string;
        delivered_and_refunded: string;
      }>
    >`
      with sales as (
        -- A sale delivered at the first answer, or still held by its process, has no delivery
        -- row: its job tells (succeeded with result.delivery, or still delivering).
        select t.id,
               ${sql.unsafe(saleDeliveryStatusSql)} as status,
               coalesce(d.debited_at, j.applied_at) as debited_at,
               (select count(*) from transactions r where r.refund_of = t.id and r.type = 'charge_refund') as refunds
        from transactions t left join deliveries d on d.sale_transaction_id = t.id
        left join jobs j on j.id = t.job_id
        where t.type = 'charge_sale' ${seller}
      )
      select count(*)::text as sales,
             count(*) filter (where status = 'delivered')::text as delivered,
             count(*) filter (where status = 'refunded')::text as refunded,
             count(*) filter (where status in ('pending', 'unresolved', 'refund_due'))::text as in_progress,
             count(*) filter (where status = 'unresolved')::text as unresolved,
             count(*) filter (where status = 'conflict')::text as conflicts,
             count(*) filter (where status in ('pending', 'unresolved', 'refund_due')
               and debited_at < now() - make_interval(secs => ${pendingTooLongMs / 1000}))::text as pending_too_long,
             min(debited_at) filter (where status in ('pending', 'unresolved', 'refund_due'))::text as oldest_pending_at,
             count(*) filter (where status is null)::text as without_delivery,
             count(*) filter (where refunds > 1)::text as refunded_twice,
             (select count(*) from transactions r left join transactions s on s.id = r.refund_of
               where r.type = 'charge_refund' and (s.id is null or s.type <> 'charge_sale' or s.seller_id <> r.seller_id
                 or s.amount <> -r.amount) ${sellerId === undefined ? sql`` : sql`and r.seller_id = ${sellerId}`})::text
               as refunds_without_sale,
             count(*) filter (where status = 'refunded' and refunds = 0)::text as refunded_without_refund_row,
             count(*) filter (where status = 'delivered' and refunds > 0)::text as delivered_and_refunded
      from sales`;
    const n = (v: string | undefined) => Number(v ?? 0);
    const result = {
      sales: n(row?.sales),
      delivered: n(row?.delivered),
      refunded: n(row?.refunded),
      inProgress: n(row?.in_progress),
      unresolved: n(row?.unresolved),
      conflicts: n(row?.conflicts),
      pendingTooLong: n(row?.pending_too_long),
      oldestPendingAt: row?.oldest_pending_at ? new Date(row.oldest_pending_at) : null,
      withoutDelivery: n(row?.without_delivery),
      refundedTwice: n(row?.refunded_twice),
      refundsWithoutSale: n(row?.refunds_without_sale),
      refundedWithoutRefundRow: n(row?.refunded_without_refund_row),
      deliveredAndRefunded: n(row?.delivered_and_refunded),
    };
    const ok =
      result.refundedTwice === 0 &&
      result.refundsWithoutSale === 0 &&
      result.refundedWithoutRefundRow === 0 &&
      result.deliveredAndRefunded === 0;
    return { ...result, ok };
  });
}
