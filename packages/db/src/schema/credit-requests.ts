import { sql } from 'drizzle-orm';
import { bigint, check, index, pgTable, text, timestamp, uuid } from 'drizzle-orm/pg-core';
import { sellers } from './sellers.ts';
import { creditRequestStatuses, sqlList } from './vocabulary.ts';

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
  },
  (t) => [
    check('credit_requests_amount_positive', sql`${t.amount} > 0`),
    check('credit_requests_status_valid', sql`${t.status} in (${sqlList(creditRequestStatuses)})`),
    // A processed request says when and by whom; a pending one says neither.
    check(
      'credit_requests_processed_iff_final',
      sql`(${t.status} = 'pending') = (${t.processedAt} is null and ${t.processedBy} is null)`,
    ),
    index('credit_requests_seller_idx').on(t.sellerId, t.id.desc()),
    index('credit_requests_status_idx').on(t.status, t.id.desc()),
  ],
);
