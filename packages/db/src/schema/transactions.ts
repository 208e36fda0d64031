import { sql } from 'drizzle-orm';
import {
  type AnyPgColumn,
  bigint,
  check,
  index,
  pgTable,
  text,
  timestamp,
  uniqueIndex,
  uuid,
} from 'drizzle-orm/pg-core';
import { sqlList, transactionTypes } from './vocabulary.ts';

/**
 * The ledger. Append-only (a trigger refuses UPDATE, DELETE and TRUNCATE); a seller's balance is
 * always the sum of its rows, and each row carries the balance it left behind.
 *
 * Each row's job, seller and credit request are checked at insert by the trigger
 * `transactions_match_their_jobs` (migration 0009), not by foreign keys: the row must match the
 * job that wrote it (its seller; a sale's or refund's amount and phone; a credit increase's
 * request, of the same seller and amount).
 */
export const transactions = pgTable(
  'transactions',
  {
    id: bigint('id', { mode: 'bigint' }).primaryKey().generatedAlwaysAsIdentity(),
    sellerId: uuid('seller_id').notNull(),
    type: text('type', { enum: transactionTypes }).notNull(),
    /** Signed: a sale is negative, a credit increase and a refund positive. */
    amount: bigint('amount', { mode: 'bigint' }).notNull(),
    balanceAfter: bigint('balance_after', { mode: 'bigint' }).notNull(),
    /**
     * The job that wrote the row. A job writes one row (unique, below), so a redelivered job
     * cannot write twice; a refund is written by the sale's own job, once (`refundOf`).
     */
    jobId: uuid('job_id').notNull(),
    /** A refund: the `charge_sale` row it gives back. Unique, so no sale is ever refunded twice. */
    refundOf: bigint('refund_of', { mode: 'bigint' }).references((): AnyPgColumn => transactions.id),
    /** Unique where set (see below), so one credit request can never be credited twice. */
    creditRequestId: uuid('credit_request_id'),
    phoneNumber: text('phone_number'),
    description: text('description'),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
    /**
     * HMAC-SHA256 (hex) over every other column of the row and the previous row of the same
     * seller, keyed with LEDGER_HMAC_KEY, which the processes hold and the database does not:
     * see `@cs/ledger`'s chain.
     */
    hmac: text('hmac'),
  },
  (t) => [
    check('transactions_type_valid', sql`${t.type} in (${sqlList(transactionTypes)})`),
    check(
      'transactions_amount_sign',
      sql`(${t.type} = 'charge_sale' and ${t.amount} < 0 and ${t.phoneNumber} is not null and ${t.creditRequestId} is null and ${t.refundOf} is null)
       or (${t.type} = 'credit_increase' and ${t.amount} > 0 and ${t.creditRequestId} is not null and ${t.phoneNumber} is null and ${t.refundOf} is null)
       or (${t.type} = 'charge_refund' and ${t.amount} > 0 and ${t.phoneNumber} is not null and ${t.creditRequestId} is null and ${t.refundOf} is not null)`,
    ),
    check('transactions_balance_after_non_negative', sql`${t.balanceAfter} >= 0`),
    // NOT VALID in the migration: rows written before the chain existed carry none.
    check('transactions_hmac_present', sql`${t.hmac} is not null and ${t.hmac} ~ '^[0-9a-f]{64}$'`),
    // One row per job, its refund aside (which `refund_of` keeps to one per sale).
    uniqueIndex('transactions_job_unique').on(t.jobId).where(sql`${t.type} <> 'charge_refund'`),
    uniqueIndex('transactions_refund_of_unique').on(t.refundOf).where(sql`${t.refundOf} is not null`),
    // Partial: a sale has no credit request, and an index entry per sale would only cost writes.
    uniqueIndex('transactions_credit_request_unique')
      .on(t.creditRequestId)
      .where(sql`${t.creditRequestId} is not null`),
    index('transactions_seller_idx').on(t.sellerId, t.id.desc()),
    index('transactions_seller_type_idx').on(t.sellerId, t.type, t.id.desc()),
    index('transactions_type_idx').on(t.type, t.id.desc()),
  ],
);
