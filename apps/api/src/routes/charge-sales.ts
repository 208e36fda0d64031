import { sellers } from '@cs/db';
import { refuse } from '@cs/ledger';
import { createRoute, type OpenAPIHono, z } from '@hono/zod-openapi';
import { eq } from 'drizzle-orm';
import type { AppEnv } from '../context.ts';
import { notFound, refused } from '../errors.ts';
import { requireSellerAction } from '../middleware/auth.ts';
import {
  amountSchema,
  bearer,
  errorResponses,
  errorSchema,
  idempotencyKeyHeader,
  idempotencyKeyOf,
  isUuid,
  jobAcceptedSchema,
  jobSchema,
  json,
  jsonBody,
  phoneSchema,
  preferHeader,
  tooManyRequests,
  withBody,
} from '../schemas.ts';
import { respondWithJob } from '../services/job-response.ts';
import { submitJob } from '../services/submit-job.ts';

const chargeSaleBody = z
  .strictObject({ seller_id: z.string(), phone_number: phoneSchema, amount: amountSchema })
  .openapi('ChargeSale');

const createChargeSale = createRoute({
  method: 'post',
  path: '/api/charge-sales',
  operationId: 'createChargeSale',
  tags: ['Charge sales'],
  summary: 'Sell a phone charge, paid from the seller balance; the sale runs as a job',
  security: bearer,
  parameters: [idempotencyKeyHeader, preferHeader],
  request: { body: jsonBody(chargeSaleBody) },
  responses: {
    202: json(jobAcceptedSchema, 'Queued: poll status_url'),
    200: json(jobSchema, 'Finished within the time asked for with Prefer: wait'),
    ...errorResponses(...withBody, 403, 404, 422),
    403: json(errorSchema, "Another seller's, or the seller is inactive (forbidden, seller_inactive)"),
    429: tooManyRequests(
      "Past the seller's sales a second (SELLER_RATE_LIMIT), or too many failed authentications from this address (rate_limited); nothing was done",
    ),
  },
});

export function registerChargeSaleRoutes(app: OpenAPIHono<AppEnv>) {
  app.openapi(createChargeSale, async (c) => {
    const body = c.req.valid('json');
    const idempotencyKey = idempotencyKeyOf(c.req.header('idempotency-key'));
    if (!isUuid(body.seller_id)) throw notFound('Seller');
    const caller = c.var.caller;
    const sellerId = body.seller_id.toLowerCase();
    // A seller selling for itself was just read by authentication: no second lookup.
    const [seller] =
      caller.role === 'seller' && caller.sellerId === sellerId
        ? [{ id: caller.sellerId, isActive: caller.isActive }]
        : await c.var.deps.db
            .select({ id: sellers.id, isActive: sellers.isActive })
            .from(sellers)
            .where(eq(sellers.id, sellerId))
            .limit(1);
    if (!seller) throw notFound('Seller');
    requireSellerAction(c.var.caller, seller.id);
    if (!seller.isActive) throw refused(refuse.sellerInactive());
    // Counted before anything is recorded: a sale past the limit leaves no trace.
    if (caller.role === 'seller') {
      await c.var.deps.saleRate.take(seller.id, c.var.deps.queues.partitionOf(seller.id), c.var.logger);
    }

    const request = { seller_id: seller.id, phone_number: body.phone_number, amount: body.amount.toString() };
    const { job } = await submitJob(c.var.deps, {
      payload: {
        type: 'charge_sale',
        sellerId: seller.id,
        phoneNumber: body.phone_number,
        amount: body.amount.toString(),
        requestId: c.var.requestId,
      },
      idempotencyKey,
      request,
    });
    return respondWithJob(c, job);
  });
}
