import {
  auditEvents,
  auditRow,
  webhookDeliveries,
  webhookDeliveryStatuses,
  webhookEndpoints,
  webhookEventTypes,
} from '@cs/db';
import {
  type AddressRules,
  checkWebhookUrl,
  checkWebhookUrlShape,
  MAX_WEBHOOK_URL_LENGTH,
  newWebhookSecret,
  WebhookAddressError,
} from '@cs/webhooks';
import { createRoute, type OpenAPIHono, z } from '@hono/zod-openapi';
import { and, desc, eq, lt, sql } from 'drizzle-orm';
import type { Context } from 'hono';
import type { AppEnv } from '../context.ts';
import { ApiError, notFound } from '../errors.ts';
import { actorOf, requireAdmin, requireSellerAction } from '../middleware/auth.ts';
import { pageOf, pageRequest } from '../read-model/page.ts';
import {
  bearer,
  errorResponses,
  errorSchema,
  json,
  jsonBody,
  listOf,
  paginationQuery,
  pathId,
  timestamp,
  uuid,
  withBody,
} from '../schemas.ts';
import { clientAddress } from '../services/client-address.ts';
import { listView } from '../services/views.ts';
import { findAccessibleSeller } from './sellers.ts';

type EndpointRow = typeof webhookEndpoints.$inferSelect;
type DeliveryRow = typeof webhookDeliveries.$inferSelect;

const webhookSchema = z
  .object({
    seller_id: uuid(),
    url: z.string().openapi({ format: 'uri', example: 'https://shop.example/hooks/charge-sales' }),
    created_at: timestamp,
    updated_at: timestamp,
  })
  .openapi('Webhook');

const webhookWithSecretSchema = webhookSchema
  .extend({
    secret: z.string().openapi({
      example: 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw',
      description: 'The signing secret (Standard Webhooks), shown only in this answer',
    }),
  })
  .openapi('WebhookWithSecret');

const nullableTimestamp = z.string().nullable().openapi({ format: 'date-time' });

const deliverySchema = z
  .object({
    id: z.string().openapi({ example: 'msg_0190f5a27c3e7b1a9d2e5f4a3b2c1d0e', description: 'The webhook-id header' }),
    seller_id: uuid(),
    event_type: z.enum(webhookEventTypes),
    status: z.enum(webhookDeliveryStatuses),
    attempts: z.number().openapi({ type: 'integer' }),
    last_status_code: z
      .number()
      .nullable()
      .openapi({ type: 'integer', description: "The receiver's last HTTP status" }),
    last_error: z
      .string()
      .nullable()
      .openapi({ description: 'Why the last attempt failed (a timeout, a refused connection, an HTTP status)' }),
    next_attempt_at: nullableTimestamp.openapi({ description: 'When it is tried next; null unless pending' }),
    created_at: timestamp,
    delivered_at: nullableTimestamp,
  })
  .openapi('WebhookDelivery');

const webhookView = (row: EndpointRow) => ({
  seller_id: row.sellerId,
  url: row.url,
  created_at: row.createdAt.toISOString(),
  updated_at: row.updatedAt.toISOString(),
});

const deliveryView = (row: DeliveryRow) => ({
  id: row.id,
  seller_id: row.sellerId,
  event_type: row.eventType,
  status: row.status,
  attempts: row.attempts,
  last_status_code: row.lastStatusCode,
  last_error: row.lastError,
  next_attempt_at: row.status === 'pending' ? row.nextAttemptAt.toISOString() : null,
  created_at: row.createdAt.toISOString(),
  delivered_at: row.deliveredAt?.toISOString() ?? null,
});

const badUrl = json(
  errorSchema,
  'Invalid request, or a URL that may not be used (invalid_webhook_url): not http(s), https required, ' +
    'credentials in it, too long, unresolvable, or a loopback or private address',
);

const setWebhook = createRoute({
  method: 'put',
  path: '/api/sellers/{id}/webhook',
  operationId: 'setWebhook',
  tags: ['Webhooks'],
  summary: "Set the seller's webhook URL (the seller itself, admin); answers with the signing secret",
  security: bearer,
  request: {
    params: pathId,
    body: jsonBody(
      z
        .strictObject({
          url: z.string().openapi({ format: 'uri', maxLength: MAX_WEBHOOK_URL_LENGTH }),
        })
        .openapi('SetWebhook'),
    ),
  },
  responses: {
    200: json(
      webhookWithSecretSchema,
      'The webhook, with its secret: a new one when the webhook is first set (or set again after removal), ' +
        'else the one it has',
    ),
    ...errorResponses(...withBody, 403, 404),
    400: badUrl,
  },
});

const getWebhook = createRoute({
  method: 'get',
  path: '/api/sellers/{id}/webhook',
  operationId: 'getWebhook',
  tags: ['Webhooks'],
  summary: "The seller's webhook (the seller itself, operators); the secret is never shown again",
  security: bearer,
  request: { params: pathId },
  responses: {
    200: json(webhookSchema, 'The webhook'),
    ...errorResponses(403, 404),
    404: json(errorSchema, 'No such seller (not_found), or no webhook set (webhook_not_found)'),
  },
});

const deleteWebhook = createRoute({
  method: 'delete',
  path: '/api/sellers/{id}/webhook',
  operationId: 'deleteWebhook',
  tags: ['Webhooks'],
  summary: 'Stop deliveries to the seller (the seller itself, admin); pending ones end failed',
  security: bearer,
  request: { params: pathId },
  responses: {
    204: { description: 'The seller has no webhook (any more)' },
    ...errorResponses(403, 404),
  },
});

const rotateWebhookSecret = createRoute({
  method: 'post',
  path: '/api/sellers/{id}/webhook/secret',
  operationId: 'rotateWebhookSecret',
  tags: ['Webhooks'],
  summary: 'A new signing secret (the seller itself, admin); every attempt from now on is signed with it',
  security: bearer,
  request: { params: pathId },
  responses: {
    200: json(webhookWithSecretSchema, 'The webhook, with its new secret, shown only in this answer'),
    ...errorResponses(...withBody, 403, 404),
    404: json(errorSchema, 'No such seller (not_found), or no webhook set (webhook_not_found)'),
  },
});

const listWebhookDeliveries = createRoute({
  method: 'get',
  path: '/api/sellers/{id}/webhook/deliveries',
  operationId: 'listWebhookDeliveries',
  tags: ['Webhooks'],
  summary: "The seller's webhook deliveries, newest first (the seller itself, operators)",
  security: bearer,
  request: {
    params: pathId,
    query: z.object({ status: z.enum(webhookDeliveryStatuses).optional(), ...paginationQuery }),
  },
  responses: {
    200: json(listOf(deliverySchema).openapi('WebhookDeliveryList'), 'Deliveries, newest first'),
    ...errorResponses(400, 403, 404),
  },
});

const retryWebhookDelivery = createRoute({
  method: 'post',
  path: '/api/webhook-deliveries/{id}/retry',
  operationId: 'retryWebhookDelivery',
  tags: ['Webhooks'],
  summary: 'Send a failed delivery again (admin): it is pending, due now, with the same webhook-id',
  security: bearer,
  request: {
    params: z.object({
      id: z.string().openapi({ param: { name: 'id', in: 'path' }, example: 'msg_0190f5a27c3e7b1a9d2e5f4a3b2c1d0e' }),
    }),
  },
  responses: {
    202: json(deliverySchema, 'Pending again; the worker posts it within a poll'),
    ...errorResponses(...withBody, 403, 404, 409),
    404: json(errorSchema, 'No such delivery (not_found), or its seller has no webhook any more (webhook_not_found)'),
    409: json(errorSchema, 'The delivery is not failed (not_failed): it is pending or delivered'),
  },
});

/** `msg_` and a UUIDv7 without dashes, as the outbox writes them. */
const isDeliveryId = (value: string) => /^msg_[0-9a-f]{32}$/.test(value);

function addressRules(c: Context<AppEnv>): AddressRules {
  const config = c.var.deps.config;
  return { allowPrivate: config.WEBHOOK_ALLOW_PRIVATE, production: config.NODE_ENV === 'production' };
}

/** A URL refused by the address rules: 400, saying why, and naming the field. */
function refusedUrl(err: unknown): never {
  if (err instanceof WebhookAddressError) {
    throw new ApiError('invalid_webhook_url', `The webhook URL may not be used: ${err.message}`, {
      reason: err.problem,
      fields: { url: err.message },
    });
  }
  throw err;
}

const noWebhook = () => new ApiError('webhook_not_found', 'This seller has no webhook');

async function activeEndpoint(c: Context<AppEnv>, sellerId: string): Promise<EndpointRow | undefined> {
  const [row] = await c.var.deps.db
    .select()
    .from(webhookEndpoints)
    .where(and(eq(webhookEndpoints.sellerId, sellerId), eq(webhookEndpoints.isActive, true)))
    .limit(1);
  return row;
}

const audit = (c: Context<AppEnv>, sellerId: string, details: { url: string; change: string }) =>
  auditRow({
    actor: actorOf(c.var.caller),
    action: 'webhook.updated',
    targetType: 'webhook',
    targetId: sellerId,
    ip: clientAddress(c),
    details,
  });

export function registerWebhookRoutes(app: OpenAPIHono<AppEnv>) {
  app.openapi(setWebhook, async (c) => {
    const rules = addressRules(c);
    const { url: text } = c.req.valid('json');
    // What the text alone shows is a malformed request: 400 before the seller is looked up.
    try {
      checkWebhookUrlShape(text, rules);
    } catch (err) {
      refusedUrl(err);
    }
    const seller = await findAccessibleSeller(c.var.deps.db, c.var.caller, c.req.valid('param').id);
    requireSellerAction(c.var.caller, seller.id);
    const url = await checkWebhookUrl(text, rules).catch(refusedUrl);
    const { webhookSecrets } = c.var.deps;
    const { row, secret } = await c.var.deps.db.transaction(async (tx) => {
      // A webhook set again keeps its secret, so that a receiver moved to a new URL still
      // verifies; one set for the first time, or after it was removed, gets a new one.
      const [upserted] = await tx
        .insert(webhookEndpoints)
        .values({ sellerId: seller.id, url: url.href, secret: webhookSecrets.seal(newWebhookSecret(), seller.id) })
        .onConflictDoUpdate({
          target: webhookEndpoints.sellerId,
          set: {
            url: url.href,
            secret: sql`case when "webhook_endpoints"."is_active" then "webhook_endpoints"."secret" else excluded."secret" end`,
            isActive: true,
            updatedAt: sql`now()`,
          },
        })
        .returning();
      if (!upserted) throw new Error('upsert returned nothing');
      let endpoint = upserted;
      let kept: string;
      try {
        kept = webhookSecrets.open(endpoint.secret, seller.id);
      } catch {
        // A kept secret that no longer opens (LEDGER_HMAC_KEY changed) could sign nothing: a new one.
        kept = newWebhookSecret();
        const [renewed] = await tx
          .update(webhookEndpoints)
          .set({ secret: webhookSecrets.seal(kept, seller.id) })
          .where(eq(webhookEndpoints.sellerId, seller.id))
          .returning();
        endpoint = renewed ?? endpoint;
      }
      await tx.insert(auditEvents).values(audit(c, seller.id, { url: endpoint.url, change: 'set' }));
      return { row: endpoint, secret: kept };
    });
    return c.json({ ...webhookView(row), secret }, 200);
  });

  app.openapi(getWebhook, async (c) => {
    const seller = await findAccessibleSeller(c.var.deps.db, c.var.caller, c.req.valid('param').id);
    const row = await activeEndpoint(c, seller.id);
    if (!row) throw noWebhook();
    return c.json(webhookView(row), 200);
  });

  app.openapi(deleteWebhook, async (c) => {
    const seller = await findAccessibleSeller(c.var.deps.db, c.var.caller, c.req.valid('param').id);
    requireSellerAction(c.var.caller, seller.id);
    // Removing a webhook that is not there leaves things as asked: 204, and nothing to audit.
    await c.var.deps.db.transaction(async (tx) => {
      const [removed] = await tx
        .update(webhookEndpoints)
        .set({ isActive: false, updatedAt: sql`now()` })
        .where(and(eq(webhookEndpoints.sellerId, seller.id), eq(webhookEndpoints.isActive, true)))
        .returning();
      if (removed) await tx.insert(auditEvents).values(audit(c, seller.id, { url: removed.url, change: 'removed' }));
    });
    return c.body(null, 204);
  });

  app.openapi(rotateWebhookSecret, async (c) => {
    const seller = await findAccessibleSeller(c.var.deps.db, c.var.caller, c.req.valid('param').id);
    requireSellerAction(c.var.caller, seller.id);
    const { webhookSecrets } = c.var.deps;
    const secret = newWebhookSecret();
    const row = await c.var.deps.db.transaction(async (tx) => {
      const [rotated] = await tx
        .update(webhookEndpoints)
        .set({ secret: webhookSecrets.seal(secret, seller.id), updatedAt: sql`now()` })
        .where(and(eq(webhookEndpoints.sellerId, seller.id), eq(webhookEndpoints.isActive, true)))
        .returning();
      if (!rotated) throw noWebhook();
      await tx.insert(auditEvents).values(audit(c, seller.id, { url: rotated.url, change: 'secret_rotated' }));
      return rotated;
    });
    return c.json({ ...webhookView(row), secret }, 200);
  });

  app.openapi(listWebhookDeliveries, async (c) => {
    const { status, ...query } = c.req.valid('query');
    const { limit, after } = pageRequest(query, isDeliveryId);
    const seller = await findAccessibleSeller(c.var.deps.db, c.var.caller, c.req.valid('param').id);
    const rows = await c.var.deps.db
      .select()
      .from(webhookDeliveries)
      .where(
        and(
          eq(webhookDeliveries.sellerId, seller.id),
          status ? eq(webhookDeliveries.status, status) : undefined,
          after ? lt(webhookDeliveries.id, after) : undefined,
        ),
      )
      .orderBy(desc(webhookDeliveries.id))
      .limit(limit + 1);
    return c.json(
      listView(
        pageOf(rows, limit, (row) => row.id),
        deliveryView,
      ),
      200,
    );
  });

  app.openapi(retryWebhookDelivery, async (c) => {
    const { id } = c.req.valid('param');
    requireAdmin(c.var.caller);
    if (!isDeliveryId(id)) throw notFound('Webhook delivery');
    const [row] = await c.var.deps.db.select().from(webhookDeliveries).where(eq(webhookDeliveries.id, id)).limit(1);
    if (!row) throw notFound('Webhook delivery');
    if (row.status !== 'failed') throw new ApiError('not_failed', `The delivery is ${row.status}, not failed`);
    if (!(await activeEndpoint(c, row.sellerId))) throw noWebhook();
    const [retried] = await c.var.deps.db
      .update(webhookDeliveries)
      .set({ status: 'pending', nextAttemptAt: sql`now()`, claimedUntil: null })
      .where(and(eq(webhookDeliveries.id, id), eq(webhookDeliveries.status, 'failed')))
      .returning();
    // Another admin's retry got there first.
    if (!retried) throw new ApiError('not_failed', 'The delivery is no longer failed');
    return c.json(deliveryView(retried), 202);
  });
}
