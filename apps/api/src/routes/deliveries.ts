import { deliveryResolutions, deliveryStatuses } from '@cs/db';
import { createRoute, type OpenAPIHono, z } from '@hono/zod-openapi';
import type { AppEnv } from '../context.ts';
import { notFound } from '../errors.ts';
import { requireApprover, requireOperator } from '../middleware/auth.ts';
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
import { decideDelivery } from '../services/resolve-delivery.ts';
import { deliveryView, listView } from '../services/views.ts';

const listDeliveries = createRoute({
  method: 'get',
  path: '/api/deliveries',
  operationId: 'listDeliveries',
  tags: ['Deliveries'],
  summary:
    'Top-up deliveries that needed more than the first answer (operators): ?status=unresolved for those waiting for a decision, conflict for contradictions',
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
    const delivery = await decideDelivery(c.var.deps, c.var.logger, id, outcome, { caller, ip: clientAddress(c) });
    return c.json(deliveryView(delivery), 200);
  });
}
