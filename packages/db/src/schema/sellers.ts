import { sql } from 'drizzle-orm';
import { bigint, boolean, check, pgTable, text, timestamp, uniqueIndex, uuid } from 'drizzle-orm/pg-core';

export const sellers = pgTable(
  'sellers',
  {
    id: uuid('id').primaryKey(),
    name: text('name').notNull(),
    email: text('email').notNull(),
    phone: text('phone').notNull(),
    /** SHA-256 of the api key: the key itself is shown once and never stored. */
    apiKeyHash: text('api_key_hash').notNull().unique(),
    creditBalance: bigint('credit_balance', { mode: 'bigint' }).notNull().default(sql`0`),
    isActive: boolean('is_active').notNull().default(true),
    /** The hmac of the seller's last ledger row: where its next row's chain link starts. */
    ledgerHead: text('ledger_head'),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [
    // The last line of defence against overspending, whatever the code above does.
    check('sellers_credit_balance_non_negative', sql`${t.creditBalance} >= 0`),
    uniqueIndex('sellers_email_lower_unique').on(sql`lower(${t.email})`),
  ],
);
