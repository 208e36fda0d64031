import { transactionTypes } from '@cs/db';
import { createRoute, type OpenAPIHono, z } from '@hono/zod-openapi';
import type { AppEnv } from '../context.ts';
import { requireSellerAccess } from '../middleware/auth.ts';
import { parseLedgerPage, readLedger } from '../read-model/ledger.ts';
import { bearer, errorResponses, idSchema, json, paginationQuery, transactionListSchema } from '../schemas.ts';
import { listView, transactionView } from '../services/views.ts';

const listTransactions = createRoute({
  method: 'get',
  path: '/api/transactions',
  operationId: 'listTransactions',
  tags: ['Ledger'],
  summary: 'The ledger, newest first (admin: all; seller: own)',
  security: bearer,
  request: {
    query: z.object({
      seller_id: idSchema.optional(),
      type: z.enum(transactionTypes).optional(),
      ...paginationQuery,
    }),
  },
  responses: {
    200: json(transactionListSchema, 'Ledger rows'),
    ...errorResponses(400, 403),
  },
});

export function registerTransactionRoutes(app: OpenAPIHono<AppEnv>) {
  app.openapi(listTransactions, async (c) => {
    const { seller_id, type, ...query } = c.req.valid('query');
    const page = parseLedgerPage(query);
    const caller = c.var.caller;
    if (seller_id) requireSellerAccess(caller, seller_id);
    // A seller reads its own ledger only, whether it names itself or not.
    const sellerId = caller.role === 'seller' ? caller.sellerId : seller_id;
    const ledger = await readLedger(c.var.deps.db, { sellerId, type }, page);
    return c.json(listView(ledger, transactionView), 200);
  });
}
