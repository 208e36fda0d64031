import type { TransactionSql } from 'postgres';
import { uuidv7 } from 'uuidv7';
import type { WebhookEventType } from './schema/vocabulary.ts';

/** An event a seller's webhook is told of: written with the effect it tells of. */
export interface WebhookEvent {
  sellerId: string;
  type: WebhookEventType;
  /** The job resource, or the credit request, as the HTTP contract shows it. */
  data: Record<string, unknown>;
}

/** The connection of the effect's transaction: the news never commits without the effect. */
type Connection = TransactionSql<{ bigint: bigint }>;

/** A webhook delivery's id, its `webhook-id`: `msg_` and a UUIDv7, so ids sort by when they were drawn. */
export const newWebhookId = () => `msg_${uuidv7().replaceAll('-', '')}`;

/**
 * Writes the events as webhook deliveries, in the caller's transaction (an outbox: an effect and
 * the news of it commit together, or neither does). One statement whatever the number of events;
 * an event of a seller without an active webhook writes nothing. The id (`msg_` and a UUIDv7) is
 * the `webhook-id` of every attempt, and sorts newest last.
 */
export async function insertWebhookEvents(conn: Connection, events: readonly WebhookEvent[]): Promise<void> {
  if (events.length === 0) return;
  const at = new Date().toISOString();
  const rows = events.map((e) => {
    const id = newWebhookId();
    return { id, seller_id: e.sellerId, type: e.type, payload: { id, type: e.type, created_at: at, data: e.data } };
  });
  await conn`
    insert into webhook_deliveries (id, seller_id, event_type, payload)
    select v.id, v.seller_id, v.type, v.payload
    from jsonb_to_recordset(${JSON.stringify(rows)}::jsonb) as v(id text, seller_id uuid, type text, payload jsonb)
    join webhook_endpoints e on e.seller_id = v.seller_id and e.is_active`;
}
