import {
  approvalActions,
  creditRequestStatuses,
  creditRequests,
  type Database,
  isOpenCreditRequest,
  openCreditRequestStatuses,
  sellers,
} from '@cs/db';
import { refuse } from '@cs/ledger';
import { createRoute, type OpenAPIHono, z } from '@hono/zod-openapi';
import { and, count, eq, inArray, sql } from 'drizzle-orm';
import { uuidv7 } from 'uuidv7';
import type { AppEnv } from '../context.ts';
import { ApiError, notFound, refused } from '../errors.ts';
import { approvalBy, requireApprover, requireSellerAccess, requireSellerAction } from '../middleware/auth.ts';
import { parseCreditRequestPage, readCreditRequests } from '../read-model/credit-requests.ts';
import {
  amountSchema,
  bearer,
  creditRequestSchema,
  errorResponses,
  errorSchema,
  idSchema,
  isUuid,
  jobAcceptedSchema,
  jobSchema,
  json,
  jsonBody,
  listOf,
  paginationQuery,
  pathId,
  preferHeader,
  withBody,
} from '../schemas.ts';
import { clientAddress } from '../services/client-address.ts';
import { respondWithJob } from '../services/job-response.ts';
import { submitJob } from '../services/submit-job.ts';
import { creditRequestView, listView } from '../services/views.ts';

/** Requests of one seller that may wait for an operator at once, so a key cannot flood the queue of approvals. */
const MAX_OPEN_CREDIT_REQUESTS = 10;

/**
 * Records a pending request, unless the seller already has the most open ones. The count and the
 * insert run under a transaction-scoped advisory lock on the seller, so concurrent requests (of
 * any API process) are counted one after another. It is a lock of its own, not the seller's row:
 * the worker's batch transaction holds that row `FOR NO KEY UPDATE`, and requests must neither
 * wait for batches nor hold them up.
 */
async function recordCreditRequest(db: Database, sellerId: string, amount: bigint) {
  return db.transaction(async (tx) => {
    await tx.execute(sql`select pg_advisory_xact_lock(hashtextextended(${`credit_requests:${sellerId}`}, 0))`);
    const [open] = await tx
      .select({ n: count() })
      .from(creditRequests)
      .where(
        and(eq(creditRequests.sellerId, sellerId), inArray(creditRequests.status, [...openCreditRequestStatuses])),
      );
    if ((open?.n ?? 0) >= MAX_OPEN_CREDIT_REQUESTS) {
      throw new ApiError(
        'too_many_pending',
        `This seller already has ${MAX_OPEN_CREDIT_REQUESTS} credit requests waiting for an operator`,
        { limit: MAX_OPEN_CREDIT_REQUESTS },
      );
    }
    const [request] = await tx.insert(creditRequests).values({ id: uuidv7(), sellerId, amount }).returning();
    if (!request) throw new Error('insert returned nothing');
    return request;
  });
}

const createCreditRequest = createRoute({
  method: 'post',
  path: '/api/credit-requests',
  operationId: 'createCreditRequest',
  tags: ['Credit requests'],
  summary: 'Ask for a credit increase; an operator approves or rejects it',
  security: bearer,
  request: {
    body: jsonBody(z.strictObject({ seller: z.string(), amount: amountSchema }).openapi('CreateCreditRequest')),
  },
  responses: {
    201: json(creditRequestSchema, 'The pending request'),
    ...errorResponses(...withBody, 403, 404, 409),
    409: json(
      errorSchema,
      `The seller already has ${MAX_OPEN_CREDIT_REQUESTS} requests waiting for an operator (too_many_pending); nothing was recorded`,
    ),
  },
});

const listCreditRequests = createRoute({
  method: 'get',
  path: '/api/credit-requests',
  operationId: 'listCreditRequests',
  tags: ['Credit requests'],
  summary: 'List credit requests (admin: all; seller: own)',
  security: bearer,
  request: {
    query: z.object({
      status: z.enum(creditRequestStatuses).optional(),
      seller: idSchema.optional(),
      ...paginationQuery,
    }),
  },
  responses: {
    200: json(listOf(creditRequestSchema).openapi('CreditRequestList'), 'Credit requests, newest first'),
    ...errorResponses(400, 403),
  },
});

const processCreditRequest = createRoute({
  method: 'post',
  path: '/api/credit-requests/{id}/process',
  operationId: 'processCreditRequest',
  tags: ['Credit requests'],
  summary: 'Approve or reject an open request (approver, admin); runs as a job on the seller partition',
  security: bearer,
  parameters: [preferHeader],
  request: {
    params: pathId,
    body: jsonBody(z.strictObject({ action: z.enum(approvalActions) }).openapi('ProcessCreditRequest')),
  },
  responses: {
    202: json(jobAcceptedSchema, 'Queued: poll status_url'),
    200: json(jobSchema, 'Finished within the time asked for with Prefer: wait'),
    ...errorResponses(...withBody, 403, 404, 409),
    409: json(errorSchema, 'No longer pending (already_processed)'),
  },
});

export function registerCreditRequestRoutes(app: OpenAPIHono<AppEnv>) {
  app.openapi(createCreditRequest, async (c) => {
    const body = c.req.valid('json');
    if (!isUuid(body.seller)) throw notFound('Seller');
    const [seller] = await c.var.deps.db.select({ id: sellers.id }).from(sellers).where(eq(sellers.id, body.seller));
    if (!seller) throw notFound('Seller');
    requireSellerAction(c.var.caller, seller.id);
    const request = await recordCreditRequest(c.var.deps.db, seller.id, body.amount);
    return c.json(creditRequestView(request), 201);
  });

  app.openapi(listCreditRequests, async (c) => {
    const { status, seller, ...query } = c.req.valid('query');
    const page = parseCreditRequestPage(query);
    const caller = c.var.caller;
    if (seller) requireSellerAccess(caller, seller);
    // A seller reads its own requests only, whether it names itself or not.
    const sellerId = caller.role === 'seller' ? caller.sellerId : seller;
    const requests = await readCreditRequests(
      c.var.deps.db,
      { sellerId, statuses: status ? [status] : undefined },
      page,
    );
    return c.json(listView(requests, creditRequestView), 200);
  });

  app.openapi(processCreditRequest, async (c) => {
    const { action } = c.req.valid('json');
    const id = c.req.valid('param').id;
    const caller = c.var.caller;
    requireApprover(caller);
    if (!isUuid(id)) throw notFound('Credit request');
    const [request] = await c.var.deps.db.select().from(creditRequests).where(eq(creditRequests.id, id));
    if (!request) throw notFound('Credit request');
    // A fast answer for the common case; the worker checks again under lock, and only there
    // is it decided which of several concurrent processings takes effect.
    if (!isOpenCreditRequest(request.status)) throw refused(refuse.alreadyProcessed(request.status));
    const { job } = await submitJob(c.var.deps, {
      payload: {
        type: 'credit_approval',
        sellerId: request.sellerId,
        creditRequestId: request.id,
        action,
        ...approvalBy(caller, clientAddress(c)),
        requestId: c.var.requestId,
      },
    });
    return respondWithJob(c, job);
  });
}
