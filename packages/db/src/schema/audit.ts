import { sql } from 'drizzle-orm';
import { bigint, check, index, jsonb, pgTable, text, timestamp, uuid } from 'drizzle-orm/pg-core';
import { actorTypes, auditActions, sqlList } from './vocabulary.ts';

/**
 * The audit trail: who did what to what, from where. Append-only like the ledger (a trigger
 * refuses UPDATE, DELETE and TRUNCATE, and the application role has no such privilege), and each
 * row is written in the transaction of the effect it records: there is no effect without its row,
 * and no row of an effect that was rolled back.
 */
export const auditEvents = pgTable(
  'audit_events',
  {
    id: bigint('id', { mode: 'bigint' }).primaryKey().generatedAlwaysAsIdentity(),
    /** The effect's transaction time. */
    at: timestamp('at', { withTimezone: true }).notNull().defaultNow(),
    actorType: text('actor_type', { enum: actorTypes }).notNull(),
    /** The operator's or seller's id; null for the bootstrap admin, or for a sign-in that named no one. */
    actorId: uuid('actor_id'),
    actorEmail: text('actor_email'),
    action: text('action', { enum: auditActions }).notNull(),
    targetType: text('target_type').notNull(),
    targetId: text('target_id').notNull(),
    /** The address the request came from; null where there was none (a worker's effect records its request's). */
    ip: text('ip'),
    details: jsonb('details').notNull().default(sql`'{}'::jsonb`),
  },
  (t) => [
    check('audit_events_actor_type_valid', sql`${t.actorType} in (${sqlList(actorTypes)})`),
    check('audit_events_action_valid', sql`${t.action} in (${sqlList(auditActions)})`),
    index('audit_events_actor_idx').on(t.actorId, t.id.desc()),
    index('audit_events_action_idx').on(t.action, t.id.desc()),
    index('audit_events_target_idx').on(t.targetId, t.id.desc()),
  ],
);
