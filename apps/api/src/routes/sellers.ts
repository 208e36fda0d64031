import { randomBytes } from 'node:crypto';
import type { Tx } from '@cs/db';
import { auditEvents, auditRow, sellers } from '@cs/db';
import { reconcile } from '@cs/ledger';
import { createRoute, type OpenAPIHono, z } from '@hono/zod-openapi';
import { eq } from 'drizzle-orm';
import { uuidv7 } from 'uuidv7';
import type { AppEnv } from '../context.ts';
import { ApiError, notFound } from '../errors.ts';
import { actorOf, hashApiKey, requireAdmin, requireSellerAccess, requireSellerAction } from '../middleware/auth.ts';
import { parseLedgerPage, readLedger } from '../read-model/ledger.ts';
import { parseSellerPage, readSellers } from '../read-model/sellers.ts';
import {
  bearer,
  errorResponses,
  errorSchema,
  isUuid,
  json,
  jsonBody,
  listOf,
  moneySchema,
  paginationQuery,
  pathId,
  phoneSchema,
  sellerSchema,
  signedMoneySchema,
  transactionListSchema,
  withBody,
} from '../schemas.ts';
import { clientAddress } from '../services/client-address.ts';
import { listView, sellerView, transactionView } from '../services/views.ts';

/**
 * PostgreSQL text cannot hold U+0000 (the insert fails), and an unpaired surrogate reaches it as
 * U+FFFD: a name is refused rather than stored other than it was sent. Other control characters
 * have no place in a name shown on pages and in logs.
 */
// biome-ignore lint/suspicious/noControlCharactersInRegex: control characters are what it finds
const unprintable = /[\u0000-\u001f\u007f]|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;
const isPrintableText = (value: string) => !unprintable.test(value);

const createSellerBody = z
  .strictObject({
    name: z
      .string()
      .trim()
      .min(1)
      .max(200)
      .refine(isPrintableText, 'must be printable text, without control characters or unpaired surrogates'),
    email: z.email().max(320),
    phone: phoneSchema,
  })
  .openapi('CreateSeller');

const createSeller = createRoute({
  method: 'post',
  path: '/api/sellers',
  operationId: 'createSeller',
  tags: ['Sellers'],
  summary: 'Create a seller (admin); its api_key is shown only in this answer',
  security: bearer,
  request: { body: jsonBody(createSellerBody) },
  responses: {
    201: json(
      sellerSchema
        .extend({ api_key: z.string().openapi({ description: "The seller's bearer token; shown only here" }) })
        .openapi('CreatedSeller'),
      'The seller, with its api key',
    ),
    ...errorResponses(...withBody, 403, 409),
    409: json(errorSchema, 'Email already used (duplicate_email)'),
  },
});

const listSellers = createRoute({
  method: 'get',
  path: '/api/sellers',
  operationId: 'listSellers',
  tags: ['Sellers'],
  summary: 'List sellers (admin: all; seller: itself)',
  security: bearer,
  request: { query: z.object(paginationQuery) },
  responses: {
    200: json(listOf(sellerSchema).openapi('SellerList'), 'Sellers, newest first'),
    ...errorResponses(400),
  },
});

const getSeller = createRoute({
  method: 'get',
  path: '/api/sellers/{id}',
  operationId: 'getSeller',
  tags: ['Sellers'],
  summary: 'One seller (admin, or the seller itself)',
  security: bearer,
  request: { params: pathId },
  responses: { 200: json(sellerSchema, 'The seller'), ...errorResponses(403, 404) },
});

const patchSeller = createRoute({
  method: 'patch',
  path: '/api/sellers/{id}',
  operationId: 'updateSeller',
  tags: ['Sellers'],
  summary: 'Activate or deactivate a seller (admin); an inactive seller cannot sell',
  security: bearer,
  request: { params: pathId, body: jsonBody(z.strictObject({ is_active: z.boolean() }).openapi('PatchSeller')) },
  responses: { 200: json(sellerSchema, 'The seller'), ...errorResponses(...withBody, 403, 404) },
});

const rotateSellerKey = createRoute({
  method: 'post',
  path: '/api/sellers/{id}/api-key',
  operationId: 'rotateSellerApiKey',
  tags: ['Sellers'],
  summary: 'A new api key for the seller (admin, or the seller itself); the old key is refused from then on',
  security: bearer,
  request: { params: pathId },
  responses: {
    201: json(z.object({ api_key: z.string() }).openapi('NewApiKey'), 'The new key, shown only in this answer'),
    ...errorResponses(...withBody, 403, 404),
  },
});

const getBalance = createRoute({
  method: 'get',
  path: '/api/sellers/{id}/balance',
  operationId: 'getSellerBalance',
  tags: ['Sellers'],
  summary: "A seller's credit balance",
  security: bearer,
  request: { params: pathId },
  responses: {
    200: json(
      z.object({ seller_id: z.string().openapi({ format: 'uuid' }), credit_balance: moneySchema }).openapi('Balance'),
      'The balance',
    ),
    ...errorResponses(403, 404),
  },
});

const getSellerTransactions = createRoute({
  method: 'get',
  path: '/api/sellers/{id}/transactions',
  operationId: 'listSellerTransactions',
  tags: ['Sellers'],
  summary: "A seller's ledger, newest first",
  security: bearer,
  request: { params: pathId, query: z.object(paginationQuery) },
  responses: {
    200: json(transactionListSchema, 'Ledger rows'),
    ...errorResponses(400, 403, 404),
  },
});

const reconcileSeller = createRoute({
  method: 'get',
  path: '/api/sellers/{id}/reconcile',
  operationId: 'reconcileSeller',
  tags: ['Sellers'],
  summary: 'Check that the balance equals the sum of the ledger and that the ledger hash chain verifies',
  security: bearer,
  request: { params: pathId },
  responses: {
    200: json(
      z
        .object({
          seller_id: z.string().openapi({ format: 'uuid' }),
          current_balance: moneySchema,
          calculated_from_transactions: signedMoneySchema,
          is_reconciled: z.boolean(),
          difference: signedMoneySchema,
          total_transactions: z.number().openapi({ type: 'integer' }),
          chain_head: z.string().nullable().openapi({ description: "The hmac of the seller's last ledger row" }),
          chain_broken_at: z
            .string()
            .nullable()
            .openapi({ description: 'The id of the first ledger row whose hmac does not verify, else null' }),
        })
        .openapi('Reconciliation'),
      'The reconciliation',
    ),
    ...errorResponses(403, 404),
  },
});

/** A seller's api key: shown once, stored as its SHA-256. */
const newApiKey = () => `cs_${randomBytes(32).toString('base64url')}`;

/** Loads a seller the caller may see: 404 if there is none, 403 if it is not theirs. */
export async function findAccessibleSeller(db: Tx, caller: AppEnv['Variables']['caller'], id: string) {
  if (!isUuid(id)) throw notFound('Seller');
  const [seller] = await db.select().from(sellers).where(eq(sellers.id, id)).limit(1);
  if (!seller) throw notFound('Seller');
  requireSellerAccess(caller, seller.id);
  return seller;
}

export function registerSellerRoutes(app: OpenAPIHono<AppEnv>) {
  app.openapi(createSeller, async (c) => {
    const caller = c.var.caller;
    requireAdmin(caller);
    const body = c.req.valid('json');
    const apiKey = newApiKey();
    const seller = await c.var.deps.db.transaction(async (tx) => {
      const [row] = await tx
        .insert(sellers)
        .values({ id: uuidv7(), name: body.name, email: body.email, phone: body.phone, apiKeyHash: hashApiKey(apiKey) })
        .onConflictDoNothing()
        .returning();
      if (!row) return undefined;
      await tx.insert(auditEvents).values(
        auditRow({
          actor: actorOf(caller),
          action: 'seller.created',
          targetType: 'seller',
          targetId: row.id,
          ip: clientAddress(c),
          details: { email: row.email },
        }),
      );
      return row;
    });
    if (!seller) throw new ApiError('duplicate_email', 'A seller with this email already exists');
    return c.json({ ...sellerView(seller), api_key: apiKey }, 201);
  });

  app.openapi(listSellers, async (c) => {
    const page = parseSellerPage(c.req.valid('query'));
    const caller = c.var.caller;
    // A seller sees itself only.
    const sellerId = caller.role === 'seller' ? caller.sellerId : undefined;
    return c.json(listView(await readSellers(c.var.deps.db, { sellerId }, page), sellerView), 200);
  });

  app.openapi(getSeller, async (c) => {
    const seller = await findAccessibleSeller(c.var.deps.db, c.var.caller, c.req.valid('param').id);
    return c.json(sellerView(seller), 200);
  });

  app.openapi(patchSeller, async (c) => {
    const { is_active } = c.req.valid('json');
    const caller = c.var.caller;
    requireAdmin(caller);
    const seller = await findAccessibleSeller(c.var.deps.db, caller, c.req.valid('param').id);
    const updated = await c.var.deps.sellerKeys.setActive(seller.id, is_active, {
      actor: actorOf(caller),
      action: 'seller.updated',
      targetType: 'seller',
      targetId: seller.id,
      ip: clientAddress(c),
      details: { is_active },
    });
    return c.json(sellerView(updated ?? seller), 200);
  });

  app.openapi(rotateSellerKey, async (c) => {
    const caller = c.var.caller;
    const seller = await findAccessibleSeller(c.var.deps.db, caller, c.req.valid('param').id);
    requireSellerAction(caller, seller.id);
    const apiKey = newApiKey();
    await c.var.deps.sellerKeys.rotateKey(seller.id, hashApiKey(apiKey), {
      actor: actorOf(caller),
      action: 'seller.key_rotated',
      targetType: 'seller',
      targetId: seller.id,
      ip: clientAddress(c),
    });
    return c.json({ api_key: apiKey }, 201);
  });

  app.openapi(getBalance, async (c) => {
    const seller = await findAccessibleSeller(c.var.deps.db, c.var.caller, c.req.valid('param').id);
    return c.json({ seller_id: seller.id, credit_balance: seller.creditBalance.toString() }, 200);
  });

  app.openapi(getSellerTransactions, async (c) => {
    const page = parseLedgerPage(c.req.valid('query'));
    const seller = await findAccessibleSeller(c.var.deps.db, c.var.caller, c.req.valid('param').id);
    const ledger = await readLedger(c.var.deps.db, { sellerId: seller.id }, page);
    return c.json(listView(ledger, transactionView), 200);
  });

  app.openapi(reconcileSeller, async (c) => {
    const seller = await findAccessibleSeller(c.var.deps.db, c.var.caller, c.req.valid('param').id);
    const [check] = await reconcile(c.var.deps.db, {
      ledgerKey: c.var.deps.config.LEDGER_HMAC_KEY,
      sellerId: seller.id,
    });
    if (!check) throw notFound('Seller');
    return c.json(
      {
        seller_id: check.sellerId,
        current_balance: check.currentBalance.toString(),
        calculated_from_transactions: check.calculatedFromTransactions.toString(),
        is_reconciled: check.isReconciled,
        difference: (check.currentBalance - check.calculatedFromTransactions).toString(),
        total_transactions: check.totalTransactions,
        chain_head: check.chainHead,
        chain_broken_at: check.chainBrokenAt,
      },
      200,
    );
  });
}
