import { sql } from 'drizzle-orm';
import { bigint, boolean, check, index, integer, jsonb, pgTable, text, timestamp, uuid } from 'drizzle-orm/pg-core';
import { sellers } from './sellers.ts';
import { sqlList, webhookDeliveryStatuses, webhookEventTypes } from './vocabulary.ts';

/** A seller's webhook: where its events are posted, and the secret they are signed with. */
export const webhookEndpoints = pgTable('webhook_endpoints', {
  sellerId: uuid('seller_id')
    .primaryKey()
    .references(() => sellers.id),
  url: text('url').notNull(),
  /**
   * The signing secret (`whsec_…`), sealed for this seller under a key the processes hold
   * (`WebhookSecrets`, `sealed.v1.…`): the processes must read it to sign, the database never can.
   */
  secret: text('secret').notNull(),
  /** False once the seller stops deliveries (DELETE); setting a URL again turns it back on. */
  isActive: boolean('is_active').notNull().default(true),
  createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
  updatedAt: timestamp('updated_at', { withTimezone: true }).notNull().defaultNow(),
});

/**
 * One event for one seller's webhook: written in the transaction of the effect it tells of (an
 * outbox), then posted until the receiver answers 2xx or the retry window ends. Its id is the
 * `webhook-id` header, the same on every attempt.
 */
export const webhookDeliveries = pgTable(
  'webhook_deliveries',
  {
    id: text('id').primaryKey(),
    sellerId: uuid('seller_id')
      .notNull()
      .references(() => sellers.id),
    eventType: text('event_type', { enum: webhookEventTypes }).notNull(),
    /** The whole body: `{id, type, created_at, data}`. */
    payload: jsonb('payload').notNull(),
    status: text('status', { enum: webhookDeliveryStatuses }).notNull().default('pending'),
    attempts: integer('attempts').notNull().default(0),
    lastStatusCode: integer('last_status_code'),
    lastError: text('last_error'),
    nextAttemptAt: timestamp('next_attempt_at', { withTimezone: true }).notNull().defaultNow(),
    claimedUntil: timestamp('claimed_until', { withTimezone: true }),
    createdAt: timestamp('created_at', { withTimezone: true }).notNull().defaultNow(),
    deliveredAt: timestamp('delivered_at', { withTimezone: true }),
  },
  (t) => [
    check('webhook_deliveries_status_valid', sql`${t.status} in (${sqlList(webhookDeliveryStatuses)})`),
    check('webhook_deliveries_event_type_valid', sql`${t.eventType} in (${sqlList(webhookEventTypes)})`),
    index('webhook_deliveries_seller_idx').on(t.sellerId, t.id.desc()),
    index('webhook_deliveries_due_idx').on(t.nextAttemptAt).where(sql`${t.status} = 'pending'`),
  ],
);

/** Every attempt to post a webhook delivery, answered or not. */
export const webhookAttempts = pgTable(
  'webhook_attempts',
  {
    id: bigint('id', { mode: 'bigint' }).primaryKey().generatedAlwaysAsIdentity(),
    deliveryId: text('delivery_id')
      .notNull()
      .references(() => webhookDeliveries.id),
    attemptedAt: timestamp('attempted_at', { withTimezone: true }).notNull().defaultNow(),
    /** The receiver's HTTP status; null when it did not answer (timeout, refused, address not allowed). */
    statusCode: integer('status_code'),
    error: text('error'),
    durationMs: integer('duration_ms').notNull(),
  },
  (t) => [index('webhook_attempts_delivery_idx').on(t.deliveryId, t.id)],
);
