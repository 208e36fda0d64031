import { sql } from 'drizzle-orm';
import { bigint, boolean, check, index, integer, pgTable, smallint, text, timestamp, uuid } from 'drizzle-orm/pg-core';
import { transactions } from './transactions.ts';
import { deliveryResolutions, deliveryStatuses, sqlList } from './vocabulary.ts';

/**
 * A debited sale's top-up that needed more than the first answer, from then to its end: written by
 * the delivery stage when an answer is not "delivered", when it pauses or stops, or when it sweeps
 * a hold that ran out (`deliveryHolds`), then moved on by the stage (the provider's answers), by an
 * operator (an unresolved one) and by the partition (the refund). A sale delivered at the first
 * answer has none: its job's result records the delivery. Its id is the sale's job id, which
 * is also the reference the provider is sent on every attempt: one top-up per sale, whoever asks.
 *
 * Its sale, job and seller are checked at insert by the trigger `deliveries_name_their_sale`
 * (migration 0009), not by foreign keys: a delivery must name its own job's `charge_sale` row,
 * with the same seller, phone and amount.
 */
export const deliveries = pgTable(
  'deliveries',
  {
    jobId: uuid('job_id').primaryKey(),
    sellerId: uuid('seller_id').notNull(),
    partition: smallint('partition').notNull(),
    /** The debit this top-up was paid with. */
    saleTransactionId: bigint('sale_transaction_id', { mode: 'bigint' }).notNull(),
    phoneNumber: text('phone_number').notNull(),
    amount: bigint('amount', { mode: 'bigint' }).notNull(),
    /** The provider that was asked (PROVIDER), as it was when the sale was debited. */
    provider: text('provider').notNull(),
    status: text('status', { enum: deliveryStatuses }).notNull().default('pending'),
    /** True while the provider is still asked about the reference (a definite answer ends it). */
    watching: boolean('watching').notNull().default(true),
    /** Calls made to the provider, sends and status queries together. */
    attempts: integer('attempts').notNull().default(0),
    /** When the provider is next asked. */
    nextAttemptAt: timestamp('next_attempt_at', { withTimezone: true }).notNull().defaultNow(),
    /** A stage is asking the provider until then; past it, any stage may take the delivery over. */
    claimedUntil: timestamp('claimed_until', { withTimezone: true }),
    providerReference: text('provider_reference'),
    providerReason: text('provider_reason'),
    lastError: text('last_error'),
    debitedAt: timestamp('debited_at', { withTimezone: true }).notNull().defaultNow(),
    deliveredAt: timestamp('delivered_at', { withTimezone: true }),
    gaveUpAt: timestamp('gave_up_at', { withTimezone: true }),
    /** An operator's decision on an unresolved delivery, who made it and when. */
    resolution: text('resolution', { enum: deliveryResolutions }),
    resolvedBy: text('resolved_by'),
    resolvedAt: timestamp('resolved_at', { withTimezone: true }),
    refundTransactionId: bigint('refund_transaction_id', { mode: 'bigint' }).references(() => transactions.id),
    /** When the provider's answer contradicted the operator's resolution. */
    conflictAt: timestamp('conflict_at', { withTimezone: true }),
    updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [
    check('deliveries_status_valid', sql`${t.status} in (${sqlList(deliveryStatuses)})`),
    check(
      'deliveries_resolution_valid',
      sql`${t.resolution} is null or ${t.resolution} in (${sqlList(deliveryResolutions)})`,
    ),
    check('deliveries_amount_positive', sql`${t.amount} > 0`),
    check('deliveries_refunded_has_refund', sql`${t.status} <> 'refunded' or ${t.refundTransactionId} is not null`),
    check(
      'deliveries_resolved_recorded',
      sql`(${t.resolution} is null) = (${t.resolvedBy} is null and ${t.resolvedAt} is null)`,
    ),
    // Each status carries what it says happened: a row never claims an end without its facts.
    check('deliveries_delivered_recorded', sql`${t.status} <> 'delivered' or ${t.deliveredAt} is not null`),
    check('deliveries_unresolved_recorded', sql`${t.status} <> 'unresolved' or ${t.gaveUpAt} is not null`),
    check(
      'deliveries_refund_has_reason',
      sql`${t.status} not in ('refund_due', 'refunded') or ${t.providerReason} is not null`,
    ),
    check(
      'deliveries_conflict_recorded',
      sql`${t.status} <> 'conflict' or (${t.resolution} is not null and ${t.conflictAt} is not null)`,
    ),
    // What the stage looks for: deliveries still asked about, by when they are due.
    index('deliveries_due_idx').on(t.nextAttemptAt).where(sql`${t.watching}`),
    // The lists operators watch. Partial: a delivery enters it only when it needs someone, so the
    // sale path (pending → delivered) writes no entry of it.
    index('deliveries_attention_idx')
      .on(t.status, t.jobId.desc())
      .where(sql`${t.status} in ('unresolved', 'conflict', 'refund_due')`),
  ],
);

/**
 * The sales a batch debited whose deliveries the debiting process holds in memory, one row per
 * batch: it sends them at once, and most are delivered at the first answer and settled without a
 * `deliveries` row ever being written (the job's result records the delivery). A sale gets its
 * `deliveries` row only when it needs one: an answer other than "delivered", a pause, a shutdown.
 *
 * This row is what survives the process. Past `held_until` (DELIVERY_LEASE_MS after the debit)
 * any worker may sweep it: each of its sales still `delivering` without a `deliveries` row (its
 * holder died, or took that long) gets one, due at once, and the row is deleted. A to-do list,
 * not a record: the only table the application role may delete from.
 */
export const deliveryHolds = pgTable(
  'delivery_holds',
  {
    id: bigint('id', { mode: 'bigint' }).primaryKey().generatedAlwaysAsIdentity(),
    jobIds: uuid('job_ids').array().notNull(),
    /** The provider the sales were sent to (PROVIDER), as their `deliveries` rows will say. */
    provider: text('provider').notNull(),
    heldUntil: timestamp('held_until', { withTimezone: true }).notNull(),
  },
  (t) => [index('delivery_holds_held_until_idx').on(t.heldUntil)],
);
