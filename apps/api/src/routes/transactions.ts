import { transactions } from '@cs/db';
import { createRoute, type OpenAPIHono, z } from '@hono/zod-openapi';
import { and, desc, eq, lt } from 'drizzle-orm';
import type { AppEnv } from '../context.ts';
import { requireSellerAccess } from '../middleware/auth.ts';
import { bearer, errorResponses, idSchema, json, listOf, paginationQuery, transactionSchema } from '../schemas.ts';
import { DEFAULT_LIMIT, decodeCursor, page } from '../services/pagination.ts';
import { transactionView } from '../services/views.ts';
import { isBigintId } from './sellers.ts';

const listTransactions = createRoute({
  method: 'get',
  path: '/api/transactions',
  tags: ['Ledger'],
  summary: 'The ledger, newest first (admin: all; seller: own)',
  security: bearer,
  request: {
    query: z.object({
      seller_id: idSchema.optional(),
      type: z.enum(['charge_sale', 'credit_increase']).optional(),
      ...paginationQuery,
    }),
  },
  responses: { 200: json(listOf(transactionSchema), 'Ledger rows'), ...errorResponses },
});

export function registerTransactionRoutes(app: OpenAPIHono<AppEnv>) {
  app.openapi(listTransactions, async (c) => {
    const { seller_id, type, limit = DEFAULT_LIMIT, cursor } = c.req.valid('query');
    const after = decodeCursor(cursor, isBigintId);
    const caller = c.var.caller;
    if (seller_id) requireSellerAccess(caller, seller_id);
    const rows = await c.var.deps.db
      .select()
      .from(transactions)
      .where(
        and(
          caller.role === 'seller' ? eq(transactions.sellerId, caller.sellerId) : undefined,
          seller_id ? eq(transactions.sellerId, seller_id) : undefined,
          type ? eq(transactions.type, type) : undefined,
          after ? lt(transactions.id, BigInt(after)) : undefined,
        ),
      )
      .orderBy(desc(transactions.id))
      .limit(limit + 1);
    return c.json(
      page(rows, limit, (r) => r.id.toString(), transactionView),
      200,
    );
  });
}
