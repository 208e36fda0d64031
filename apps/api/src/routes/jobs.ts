import { jobs } from '@cs/db';
import { createRoute, type OpenAPIHono } from '@hono/zod-openapi';
import { eq } from 'drizzle-orm';
import type { AppDeps, AppEnv, Caller } from '../context.ts';
import { notFound } from '../errors.ts';
import { requireSellerAccess } from '../middleware/auth.ts';
import { bearer, errorResponses, isUuid, jobSchema, json, pathId } from '../schemas.ts';
import { currentJobView } from '../services/job-response.ts';
import type { JobRow } from '../services/submit-job.ts';

const getJob = createRoute({
  method: 'get',
  path: '/api/jobs/{id}',
  operationId: 'getJob',
  tags: ['Jobs'],
  summary: 'The status and result of a job',
  security: bearer,
  request: { params: pathId },
  responses: { 200: json(jobSchema, 'The job'), ...errorResponses(403, 404) },
});

/** Loads a job the caller may see: 404 if there is none, 403 if it is another seller's. */
export async function findAccessibleJob(deps: AppDeps, caller: Caller, id: string): Promise<JobRow> {
  if (!isUuid(id)) throw notFound('Job');
  const [job] = await deps.db.select().from(jobs).where(eq(jobs.id, id));
  if (!job) throw notFound('Job');
  requireSellerAccess(caller, job.sellerId);
  return job;
}

export function registerJobRoutes(app: OpenAPIHono<AppEnv>) {
  app.openapi(getJob, async (c) => {
    const job = await findAccessibleJob(c.var.deps, c.var.caller, c.req.valid('param').id);
    return c.json(await currentJobView(c.var.deps, job), 200);
  });
}
