import { createRoute, type OpenAPIHono, z } from '@hono/zod-openapi';
import type { AppEnv } from '../context.ts';
import { requireOperator } from '../middleware/auth.ts';
import { type LastHour, MINUTES, readLastHour, SUBMITTED_LOOKBACK_MINUTES } from '../read-model/last-hour.ts';
import { bearer, errorResponses, json } from '../schemas.ts';

const timestamp = z.string().openapi({ format: 'date-time' });
const count = z.number().int().min(0);
const milliseconds = z.number().min(0).nullable();

export const overviewSchema = z
  .object({
    window: z
      .object({
        from: timestamp.openapi({ description: 'The start of the oldest minute counted' }),
        to: timestamp.openapi({ description: "PostgreSQL's clock when the numbers were read" }),
        submitted_since: timestamp.openapi({
          description: `Jobs submitted before this (${SUBMITTED_LOOKBACK_MINUTES} minutes before \`from\`) are not counted`,
        }),
      })
      .openapi({ description: `The current minute and the ${MINUTES - 1} before it` }),
    sales_per_minute: z.array(z.object({ minute: timestamp, count })).openapi({
      description: `Sales committed (charge_sale jobs succeeded) by minute of finishing, oldest first, ${MINUTES} minutes`,
    }),
    refusals_by_code: z
      .array(z.object({ code: z.string().openapi({ example: 'insufficient_balance' }), count }))
      .openapi({ description: 'Jobs of either type rejected in the window, by error code, most first' }),
    open_jobs_by_partition: z
      .array(
        z.object({
          partition: count,
          open: count.openapi({ description: 'Jobs queued or processing in PostgreSQL, the record' }),
          queue_messages: count.nullable().openapi({
            description:
              "Waiting, active and delayed messages of the partition's Redis queue (a message carries the jobs " +
              'accepted together); null when Redis did not answer',
          }),
        }),
      )
      .openapi({ description: 'Every partition, now' }),
    submit_to_commit_p99_ms: milliseconds.openapi({
      description: '99th percentile of finished_at − submitted_at of the jobs finished in the window; null if none',
    }),
    submit_to_commit_p99_ms_per_minute: z
      .array(z.object({ minute: timestamp, p99_ms: milliseconds }))
      .openapi({ description: `The same per minute of finishing, oldest first, ${MINUTES} minutes` }),
  })
  .openapi('Overview');

const getOverview = createRoute({
  method: 'get',
  path: '/api/overview',
  operationId: 'getOverview',
  tags: ['Operations'],
  summary: 'The last hour at a glance (admin): sales, refusals, queue depth, latency',
  description:
    'The numbers the operator overview page (`/admin`) draws, from the jobs table, with the queues’ own message ' +
    'counts beside the open jobs.',
  security: bearer,
  responses: { 200: json(overviewSchema, 'The last hour'), ...errorResponses(403) },
});

/** The answer's shape: snake_case, timestamps as ISO strings. */
export function overviewView(hour: LastHour): z.infer<typeof overviewSchema> {
  return {
    window: {
      from: hour.from.toISOString(),
      to: hour.to.toISOString(),
      submitted_since: hour.submittedSince.toISOString(),
    },
    sales_per_minute: hour.salesPerMinute.map((m) => ({ minute: m.minute.toISOString(), count: m.count })),
    refusals_by_code: hour.refusalsByCode.map((r) => ({ code: r.code, count: r.count })),
    open_jobs_by_partition: hour.partitions.map((p) => ({
      partition: p.partition,
      open: p.open,
      queue_messages: p.queueMessages,
    })),
    submit_to_commit_p99_ms: hour.p99Ms,
    submit_to_commit_p99_ms_per_minute: hour.p99PerMinute.map((m) => ({
      minute: m.minute.toISOString(),
      p99_ms: m.p99Ms,
    })),
  };
}

export function registerOverviewRoutes(app: OpenAPIHono<AppEnv>) {
  app.openapi(getOverview, async (c) => {
    requireOperator(c.var.caller);
    const { db, queues } = c.var.deps;
    return c.json(overviewView(await readLastHour(db, queues)), 200);
  });
}
