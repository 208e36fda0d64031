import { deliveryResolutions, deliveryStatuses } from '@cs/db';
import { markRefundDue, settleDelivered } from '@cs/ledger';
import { refundMessageId } from '@cs/queue';
import { createRoute, type OpenAPIHono, z } from '@hono/zod-openapi';
import type { AppEnv } from '../context.ts';
import { ApiError, notFound } from '../errors.ts';
import { actorOf, requireApprover, requireOperator } from '../middleware/auth.ts';
import { parseDeliveryPage, readDeliveries, readDelivery } from '../read-model/deliveries.ts';
import {
  bearer,
  deliverySchema,
  errorResponses,
  errorSchema,
  idSchema,
  json,
  jsonBody,
  listOf,
  paginationQuery,
  pathId,
  withBody,
} from '../schemas.ts';
import { clientAddress } from '../services/client-address.ts';
import { deliveryView, listView } from '../services/views.ts';

const listDeliveries = createRoute({
  method: 'get',
  path: '/api/deliveries',
  operationId: 'listDeliveries',
  tags: ['Deliveries'],
  summary:
    'Top-up deliveries (operators): ?status=unresolved for those waiting for a decision, conflict for contradictions',
  security: bearer,
  request: {
    query: z.object({
      status: z.enum(deliveryStatuses).optional(),
      seller_id: idSchema.optional(),
      ...paginationQuery,
    }),
  },
  responses: {
    200: json(listOf(deliverySchema).openapi('DeliveryList'), 'Deliveries, newest first'),
    ...errorResponses(400, 403),
  },
});

const getDelivery = createRoute({
  method: 'get',
  path: '/api/deliveries/{id}',
  operationId: 'getDelivery',
  tags: ['Deliveries'],
  summary: "A sale's top-up delivery (its id is the sale's job id)",
  security: bearer,
  request: { params: pathId },
  responses: { 200: json(deliverySchema, 'The delivery'), ...errorResponses(403, 404) },
});

const resolveDelivery = createRoute({
  method: 'post',
  path: '/api/deliveries/{id}/resolve',
  operationId: 'resolveDelivery',
  tags: ['Deliveries'],
  summary: 'Decide an unresolved delivery (approver, admin): delivered, or refund through the seller partition',
  security: bearer,
  request: {
    params: pathId,
    body: jsonBody(z.strictObject({ outcome: z.enum(deliveryResolutions) }).openapi('ResolveDelivery')),
  },
  responses: {
    200: json(deliverySchema, 'Resolved: delivered at once; a refund is due and written by the partition'),
    ...errorResponses(...withBody, 403, 404, 409),
    409: json(
      errorSchema,
      'Not unresolved: already resolved or ended (already_resolved), or still asked (delivery_pending)',
    ),
  },
});

export function registerDeliveryRoutes(app: OpenAPIHono<AppEnv>) {
  app.openapi(listDeliveries, async (c) => {
    const { status, seller_id, ...query } = c.req.valid('query');
    const page = parseDeliveryPage(query);
    requireOperator(c.var.caller);
    const list = await readDeliveries(c.var.deps.db, { status, sellerId: seller_id }, page);
    return c.json(listView(list, deliveryView), 200);
  });

  app.openapi(getDelivery, async (c) => {
    const id = c.req.valid('param').id;
    requireOperator(c.var.caller);
    const delivery = await readDelivery(c.var.deps.db, id);
    if (!delivery) throw notFound('Delivery');
    return c.json(deliveryView(delivery), 200);
  });

  app.openapi(resolveDelivery, async (c) => {
    const { outcome } = c.req.valid('json');
    const id = c.req.valid('param').id;
    const caller = c.var.caller;
    requireApprover(caller);
    const { db, queues } = c.var.deps;
    const delivery = await readDelivery(db, id);
    if (!delivery) throw notFound('Delivery');
    const by = { name: caller.operator.name, actor: actorOf(caller), ip: clientAddress(c) };
    // Each move is guarded by the status it leaves, in the same statement: an operator and the
    // provider's answer (or two operators) racing each other leave exactly one decision.
    const moved =
      outcome === 'delivered'
        ? (await settleDelivered(db, [{ jobId: delivery.jobId, providerReference: null, attempts: 0, resolvedBy: by }]))
            .length > 0
        : await markRefundDue(db, delivery.jobId, {
            reason: 'resolved_by_operator',
            attempts: delivery.attempts,
            resolvedBy: by,
          }).then(async (marked) => {
            // A lost message is put back by the partition's requeue: the refund is due in PostgreSQL.
            if (marked) {
              await queues
                .deliver(marked.partition, refundMessageId(delivery.jobId), [delivery.jobId])
                .catch((err: Error) => c.var.logger.warn({ err: err.message }, 'could not queue the refund'));
            }
            return marked !== null;
          });
    if (!moved) {
      const now = (await readDelivery(db, id)) ?? delivery;
      throw now.status === 'pending'
        ? new ApiError(
            'delivery_pending',
            'The provider is still being asked; a delivery can be resolved once it is unresolved',
            {
              status: now.status,
            },
          )
        : new ApiError('already_resolved', `The delivery is already ${now.status}`, { status: now.status });
    }
    return c.json(deliveryView((await readDelivery(db, id)) ?? delivery), 200);
  });
}
