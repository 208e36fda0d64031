import { sql } from 'drizzle-orm';
import { bigint, check, pgTable, text, timestamp } from 'drizzle-orm/pg-core';
import { normalisedPhonePattern } from './vocabulary.ts';

export const phoneNumbers = pgTable(
  'phone_numbers',
  {
    number: text('number').primaryKey(),
    totalCharged: bigint('total_charged', { mode: 'bigint' }).notNull().default(sql`0`),
    chargeCount: bigint('charge_count', { mode: 'bigint' }).notNull().default(sql`0`),
    /** Orders the list newest first with a stable cursor. */
    seq: bigint('seq', { mode: 'bigint' }).notNull().generatedAlwaysAsIdentity().unique(),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [
    check('phone_numbers_normalised', sql`${t.number} ~ '${sql.raw(normalisedPhonePattern)}'`),
    check('phone_numbers_totals_non_negative', sql`${t.totalCharged} >= 0 and ${t.chargeCount} >= 0`),
  ],
);
