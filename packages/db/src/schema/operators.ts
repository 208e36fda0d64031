import { sql } from 'drizzle-orm';
import { boolean, check, index, pgTable, text, timestamp, uniqueIndex, uuid } from 'drizzle-orm/pg-core';
import { operatorRoles, sqlList } from './vocabulary.ts';

/** Named operators: each with a role, a bearer token of its own and, optionally, a password. */
export const operators = pgTable(
  'operators',
  {
    id: uuid('id').primaryKey(),
    email: text('email').notNull(),
    name: text('name').notNull(),
    role: text('role', { enum: operatorRoles }).notNull(),
    /** SHA-256 of the bearer token: the token is shown once and never stored. */
    tokenHash: text('token_hash').notNull().unique(),
    /** argon2id (PHC string), for signing in to the pages; null: the operator signs in with its token. */
    passwordHash: text('password_hash'),
    isActive: boolean('is_active').notNull().default(true),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  },
  (t) => [
    check('operators_role_valid', sql`${t.role} in (${sqlList(operatorRoles)})`),
    uniqueIndex('operators_email_lower_unique').on(sql`lower(${t.email})`),
  ],
);

/**
 * Sessions of the operator pages, kept on the server so that signing out, an idle half hour, eight
 * hours in all or "sign out everywhere" end them for good: the cookie only names a row here (by the
 * SHA-256 of its random id), and a replayed cookie of an ended session lets no one in.
 */
export const operatorSessions = pgTable(
  'operator_sessions',
  {
    idHash: text('id_hash').primaryKey(),
    /** Null: the bootstrap admin (ADMIN_TOKEN). */
    operatorId: uuid('operator_id').references(() => operators.id),
    csrfToken: text('csrf_token').notNull(),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
    lastSeenAt: timestamp('last_seen_at', { withTimezone: true }).notNull().defaultNow(),
    expiresAt: timestamp('expires_at', { withTimezone: true }).notNull(),
    endedAt: timestamp('ended_at', { withTimezone: true }),
  },
  (t) => [index('operator_sessions_operator_idx').on(t.operatorId).where(sql`${t.endedAt} is null`)],
);
