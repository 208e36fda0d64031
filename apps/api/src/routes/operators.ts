import { randomBytes } from 'node:crypto';
import { auditEvents, auditRow, type Database, operatorRoles, operatorSessions, operators } from '@cs/db';
import { createRoute, type OpenAPIHono, z } from '@hono/zod-openapi';
import { and, desc, eq, isNull, lt, sql } from 'drizzle-orm';
import type { Context } from 'hono';
import { uuidv7 } from 'uuidv7';
import type { AppEnv, Caller, OperatorCaller } from '../context.ts';
import { ApiError, forbidden, notFound } from '../errors.ts';
import { actorOf, hashApiKey, OPERATOR_TOKEN_PREFIX, requireAdmin } from '../middleware/auth.ts';
import { pageOf, pageRequest } from '../read-model/page.ts';
import {
  bearer,
  errorResponses,
  isUuid,
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
import { hashPassword, MIN_PASSWORD_LENGTH } from '../services/passwords.ts';
import { listView } from '../services/views.ts';

type OperatorRow = typeof operators.$inferSelect;

const operatorSchema = z
  .object({
    id: uuid(),
    email: z.string().openapi({ format: 'email' }),
    name: z.string(),
    role: z.enum(operatorRoles),
    is_active: z.boolean(),
    created_at: timestamp,
  })
  .openapi('Operator');

const operatorView = (row: OperatorRow) => ({
  id: row.id,
  email: row.email,
  name: row.name,
  role: row.role,
  is_active: row.isActive,
  created_at: row.createdAt.toISOString(),
});

/** An operator's bearer token: shown once, stored as its SHA-256. */
const newOperatorToken = () => `${OPERATOR_TOKEN_PREFIX}${randomBytes(32).toString('base64url')}`;

const createOperator = createRoute({
  method: 'post',
  path: '/api/operators',
  operationId: 'createOperator',
  tags: ['Operators'],
  summary: 'Create an operator (admin); its token is shown only in this answer',
  security: bearer,
  request: {
    body: jsonBody(
      z
        .strictObject({
          email: z.email().max(320),
          name: z.string().trim().min(1).max(200),
          role: z.enum(operatorRoles),
          password: z.string().min(MIN_PASSWORD_LENGTH).max(1024).optional(),
        })
        .openapi('CreateOperator'),
    ),
  },
  responses: {
    201: json(operatorSchema.extend({ token: z.string() }).openapi('NewOperator'), 'The operator, with its token'),
    ...errorResponses(...withBody, 403, 409),
  },
});

const listOperators = createRoute({
  method: 'get',
  path: '/api/operators',
  operationId: 'listOperators',
  tags: ['Operators'],
  summary: 'Operators, newest first (admin)',
  security: bearer,
  request: { query: z.object(paginationQuery) },
  responses: {
    200: json(listOf(operatorSchema).openapi('OperatorList'), 'Operators'),
    ...errorResponses(400, 403),
  },
});

const updateOperator = createRoute({
  method: 'patch',
  path: '/api/operators/{id}',
  operationId: 'updateOperator',
  tags: ['Operators'],
  summary: "Change an operator's role or deactivate it (admin); a deactivated operator's sessions end",
  security: bearer,
  request: {
    params: pathId,
    body: jsonBody(
      z
        .strictObject({ role: z.enum(operatorRoles).optional(), is_active: z.boolean().optional() })
        .openapi('UpdateOperator'),
    ),
  },
  responses: { 200: json(operatorSchema, 'The operator'), ...errorResponses(...withBody, 403, 404) },
});

const rotateOperatorToken = createRoute({
  method: 'post',
  path: '/api/operators/{id}/token',
  operationId: 'rotateOperatorToken',
  tags: ['Operators'],
  summary: 'A new token for the operator (admin, or the operator itself); the old one stops working at once',
  security: bearer,
  request: { params: pathId },
  responses: {
    201: json(z.object({ token: z.string() }).openapi('NewOperatorToken'), 'The new token, shown only here'),
    ...errorResponses(...withBody, 403, 404),
  },
});

const revokeSessions = createRoute({
  method: 'post',
  path: '/api/operators/{id}/sessions/revoke',
  operationId: 'revokeOperatorSessions',
  tags: ['Operators'],
  summary: "End every session of the operator's on the pages (admin, or the operator itself)",
  security: bearer,
  request: { params: pathId },
  responses: {
    204: { description: 'Every session of the operator has ended' },
    ...errorResponses(...withBody, 403, 404),
  },
});

/** The operator named in the path, for an admin or for the operator itself: 404, then 403. */
async function findOperator(db: Database, caller: Caller, id: string, selfAllowed: boolean): Promise<OperatorRow> {
  if (!isUuid(id)) throw notFound('Operator');
  const [row] = await db.select().from(operators).where(eq(operators.id, id)).limit(1);
  if (!row) throw notFound('Operator');
  const isSelf = caller.role !== 'seller' && caller.operator.id === row.id;
  if (caller.role !== 'admin' && !(selfAllowed && isSelf)) throw forbidden('Only an admin may do this');
  return row;
}

const audit = (
  c: Context<AppEnv>,
  caller: OperatorCaller | Caller,
  entry: Omit<Parameters<typeof auditRow>[0], 'actor' | 'ip'>,
) => auditRow({ ...entry, actor: actorOf(caller), ip: clientAddress(c) });

/** Ends every open session of an operator, in the caller's transaction; how many it ended. */
export async function endSessionsOf(tx: Pick<Database, 'update'>, operatorId: string): Promise<number> {
  const ended = await tx
    .update(operatorSessions)
    .set({ endedAt: sql`now()` })
    .where(and(eq(operatorSessions.operatorId, operatorId), isNull(operatorSessions.endedAt)))
    .returning({ idHash: operatorSessions.idHash });
  return ended.length;
}

export function registerOperatorRoutes(app: OpenAPIHono<AppEnv>) {
  app.openapi(createOperator, async (c) => {
    const caller = c.var.caller;
    requireAdmin(caller);
    const body = c.req.valid('json');
    const token = newOperatorToken();
    const passwordHash = body.password ? await hashPassword(body.password) : null;
    const row = await c.var.deps.db.transaction(async (tx) => {
      const [inserted] = await tx
        .insert(operators)
        .values({
          id: uuidv7(),
          email: body.email,
          name: body.name,
          role: body.role,
          tokenHash: hashApiKey(token),
          passwordHash,
        })
        .onConflictDoNothing()
        .returning();
      if (!inserted) return undefined;
      await tx.insert(auditEvents).values(
        audit(c, caller, {
          action: 'operator.created',
          targetType: 'operator',
          targetId: inserted.id,
          details: { email: inserted.email, role: inserted.role, password: passwordHash !== null },
        }),
      );
      return inserted;
    });
    if (!row) throw new ApiError('duplicate_email', 'An operator with this email already exists');
    return c.json({ ...operatorView(row), token }, 201);
  });

  app.openapi(listOperators, async (c) => {
    requireAdmin(c.var.caller);
    const { limit, after } = pageRequest(c.req.valid('query'), isUuid);
    const rows = await c.var.deps.db
      .select()
      .from(operators)
      .where(after ? lt(operators.id, after) : undefined)
      .orderBy(desc(operators.id))
      .limit(limit + 1);
    return c.json(
      listView(
        pageOf(rows, limit, (row) => row.id),
        operatorView,
      ),
      200,
    );
  });

  app.openapi(updateOperator, async (c) => {
    const caller = c.var.caller;
    const body = c.req.valid('json');
    const row = await findOperator(c.var.deps.db, caller, c.req.valid('param').id, false);
    const updated = await c.var.deps.db.transaction(async (tx) => {
      const [after] = await tx
        .update(operators)
        .set({ role: body.role ?? row.role, isActive: body.is_active ?? row.isActive })
        .where(eq(operators.id, row.id))
        .returning();
      const sessionsEnded = body.is_active === false ? await endSessionsOf(tx, row.id) : 0;
      await tx.insert(auditEvents).values(
        audit(c, caller, {
          action: 'operator.updated',
          targetType: 'operator',
          targetId: row.id,
          details: { ...body, sessions_ended: sessionsEnded },
        }),
      );
      return after;
    });
    return c.json(operatorView(updated ?? row), 200);
  });

  app.openapi(rotateOperatorToken, async (c) => {
    const caller = c.var.caller;
    const row = await findOperator(c.var.deps.db, caller, c.req.valid('param').id, true);
    const token = newOperatorToken();
    await c.var.deps.db.transaction(async (tx) => {
      await tx
        .update(operators)
        .set({ tokenHash: hashApiKey(token) })
        .where(eq(operators.id, row.id));
      await tx
        .insert(auditEvents)
        .values(audit(c, caller, { action: 'operator.token_rotated', targetType: 'operator', targetId: row.id }));
    });
    return c.json({ token }, 201);
  });

  app.openapi(revokeSessions, async (c) => {
    const caller = c.var.caller;
    const row = await findOperator(c.var.deps.db, caller, c.req.valid('param').id, true);
    await c.var.deps.db.transaction(async (tx) => {
      const ended = await endSessionsOf(tx, row.id);
      await tx.insert(auditEvents).values(
        audit(c, caller, {
          action: 'session.signed_out',
          targetType: 'operator',
          targetId: row.id,
          details: { everywhere: true, sessions_ended: ended },
        }),
      );
    });
    return c.body(null, 204);
  });
}
