import { sql } from 'drizzle-orm';
import { bigint, check, index, pgTable, text, timestamp, uuid } from 'drizzle-orm/pg-core';
import { sellers } from './sellers.ts';
import { creditRequestStatuses, openCreditRequestStatuses, sqlList } from './vocabulary.ts';

export const creditRequests = pgTable(
  'credit_requests',
  {
    id: uuid('id').primaryKey(),
    sellerId: uuid('seller_id')
      .notNull()
      .references(() => sellers.id),
    amount: bigint('amount', { mode: 'bigint' }).notNull(),
    status: text('status', { enum: creditRequestStatuses }).notNull().default('pending'),
    requestedAt: timestamp('requested_at', { withTimezone: true }).notNull().defaultNow(),
    processedAt: timestamp('processed_at', { withTimezone: true }),
    processedBy: text('processed_by'),
    /** Above CREDIT_SECOND_APPROVAL_ABOVE: who gave the first of the two approvals, and when. */
    firstApprovedBy: text('first_approved_by'),
    firstApprovedAt: timestamp('first_approved_at', { withTimezone: true }),
  },
  (t) => [
    check('credit_requests_amount_positive', sql`${t.amount} > 0`),
    check('credit_requests_status_valid', sql`${t.status} in (${sqlList(creditRequestStatuses)})`),
    // A processed request says when and by whom; an open one says neither.
    check(
      'credit_requests_processed_iff_final',
      sql`(${t.status} in (${sqlList(openCreditRequestStatuses)})) = (${t.processedAt} is null and ${t.processedBy} is null)`,
    ),
    // A request awaiting its second approval names its first approver.
    check(
      'credit_requests_first_approval_recorded',
      sql`${t.status} <> 'awaiting_second_approval' or (${t.firstApprovedBy} is not null and ${t.firstApprovedAt} is not null)`,
    ),
    index('credit_requests_seller_idx').on(t.sellerId, t.id.desc()),
    index('credit_requests_status_idx').on(t.status, t.id.desc()),
  ],
);
