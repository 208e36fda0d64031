import { actorTypes, auditActions, auditEvents, type Database } from '@cs/db';
import { createRoute, type OpenAPIHono, z } from '@hono/zod-openapi';
import { and, desc, eq, isNull, lt } from 'drizzle-orm';
import type { AppEnv } from '../context.ts';
import { requireAdmin } from '../middleware/auth.ts';
import { isBigintId, type Page, type PageRequest, pageOf, pageRequest } from '../read-model/page.ts';
import { bearer, errorResponses, isUuid, json, listOf, paginationQuery, timestamp } from '../schemas.ts';
import { listView } from '../services/views.ts';

type AuditRow = typeof auditEvents.$inferSelect;

const auditEventSchema = z
  .object({
    id: z.string().openapi({ description: 'Grows in the order the rows were written' }),
    at: timestamp,
    actor: z.object({
      type: z.enum(actorTypes),
      id: z.string().nullable(),
      email: z.string().nullable(),
    }),
    action: z.enum(auditActions),
    target_type: z.string(),
    target_id: z.string(),
    ip: z.string().nullable(),
    details: z.record(z.string(), z.unknown()),
  })
  .openapi('AuditEvent');

const auditView = (row: AuditRow) => ({
  id: row.id.toString(),
  at: row.at.toISOString(),
  actor: { type: row.actorType, id: row.actorId, email: row.actorEmail },
  action: row.action,
  target_type: row.targetType,
  target_id: row.targetId,
  ip: row.ip,
  details: row.details as Record<string, unknown>,
});

export const auditQuery = z.object({
  actor: z
    .string()
    .refine((v) => v === 'bootstrap' || isUuid(v), 'must be an operator or seller id, or bootstrap')
    .optional()
    .openapi({ description: 'An operator or seller id, or `bootstrap`' }),
  action: z.enum(auditActions).optional(),
  target_id: z.string().min(1).max(200).optional(),
  ...paginationQuery,
});
export type AuditFilter = Pick<z.infer<typeof auditQuery>, 'actor' | 'action' | 'target_id'>;

const listAudit = createRoute({
  method: 'get',
  path: '/api/audit',
  operationId: 'listAuditEvents',
  tags: ['Operators'],
  summary: 'The audit trail, newest first (admin): who did what to what, from where',
  security: bearer,
  request: { query: auditQuery },
  responses: {
    200: json(listOf(auditEventSchema).openapi('AuditEventList'), 'Audit rows'),
    ...errorResponses(400, 403),
  },
});

export const parseAuditPage = (query: z.infer<typeof auditQuery>) => pageRequest(query, isBigintId);

/** Audit rows, newest first, by actor, action and target. */
export async function readAudit(
  db: Database,
  filter: AuditFilter,
  { limit, after }: PageRequest,
): Promise<Page<AuditRow>> {
  const rows = await db
    .select()
    .from(auditEvents)
    .where(
      and(
        filter.actor === 'bootstrap'
          ? and(eq(auditEvents.actorType, 'bootstrap'), isNull(auditEvents.actorId))
          : filter.actor
            ? eq(auditEvents.actorId, filter.actor)
            : undefined,
        filter.action ? eq(auditEvents.action, filter.action) : undefined,
        filter.target_id ? eq(auditEvents.targetId, filter.target_id) : undefined,
        after ? lt(auditEvents.id, BigInt(after)) : undefined,
      ),
    )
    .orderBy(desc(auditEvents.id))
    .limit(limit + 1);
  return pageOf(rows, limit, (row) => row.id.toString());
}

export function registerAuditRoutes(app: OpenAPIHono<AppEnv>) {
  app.openapi(listAudit, async (c) => {
    requireAdmin(c.var.caller);
    const query = c.req.valid('query');
    const rows = await readAudit(c.var.deps.db, query, parseAuditPage(query));
    return c.json(listView(rows, auditView), 200);
  });
}

export { auditView };
