import { isFinalJobStatus, jobs } from '@cs/db';
import { createRoute, type OpenAPIHono, z } from '@hono/zod-openapi';
import { eq } from 'drizzle-orm';
import { streamSSE } from 'hono/streaming';
import type { AppEnv } from '../context.ts';
import { bearer, errorResponses, pathId } from '../schemas.ts';
import { currentJobView } from '../services/job-response.ts';
import { findAccessibleJob } from './jobs.ts';

const HEARTBEAT_MS = 15_000;

const streamJob = createRoute({
  method: 'get',
  path: '/api/jobs/{id}/events',
  operationId: 'streamJobEvents',
  tags: ['Jobs'],
  summary:
    "A job's status changes as Server-Sent Events: its state at once, one event per change, closed after the final one",
  security: bearer,
  request: { params: pathId },
  responses: {
    200: {
      description: 'event: job, data: the job resource (JSON), one per status change',
      content: { 'text/event-stream': { schema: z.string() } },
    },
    ...errorResponses(403, 404),
  },
});

export function registerJobStreamRoutes(app: OpenAPIHono<AppEnv>) {
  app.openapi(streamJob, async (c) => {
    const deps = c.var.deps;
    const job = await findAccessibleJob(deps, c.var.caller, c.req.valid('param').id);
    return streamSSE(c, async (stream) => {
      let sequence = 0;
      let lastStatus: string | undefined;
      // Set by every event; cleared before each read, so a change during a read is never missed.
      let changed = false;
      let wake = () => {};
      const onEvent = () => {
        changed = true;
        wake();
      };
      // Subscribe before the first read, so a change between the read and the subscription counts.
      const unsubscribe = deps.jobEvents.subscribe(job.id, onEvent);
      stream.onAbort(onEvent);
      try {
        let row = job;
        while (!stream.aborted) {
          changed = false;
          const [fresh] = await deps.db.select().from(jobs).where(eq(jobs.id, job.id));
          if (fresh) row = fresh;
          const view = await currentJobView(deps, row);
          if (view.status !== lastStatus) {
            lastStatus = view.status;
            await stream.writeSSE({ event: 'job', id: String(++sequence), data: JSON.stringify(view) });
          }
          if (isFinalJobStatus(view.status)) break;
          if (changed) continue;
          await new Promise<void>((resolve) => {
            const heartbeat = setTimeout(() => {
              void stream.write(': keep-alive\n\n');
              resolve();
            }, HEARTBEAT_MS);
            wake = () => {
              clearTimeout(heartbeat);
              resolve();
            };
          });
        }
      } finally {
        unsubscribe();
      }
    });
  });
}
