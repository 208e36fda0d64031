import { isFinalJobStatus, jobs } from '@cs/db';
import { createRoute, type OpenAPIHono, z } from '@hono/zod-openapi';
import { eq } from 'drizzle-orm';
import { streamSSE } from 'hono/streaming';
import type { AppEnv } from '../context.ts';
import { callerKey } from '../middleware/auth.ts';
import { bearer, errorResponses, pathId, tooManyRequests } from '../schemas.ts';
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
  description:
    'A caller holds a limited number of streams open at once (`EVENT_STREAMS_PER_CALLER` per API process, 20 by default), ' +
    'and the server closes a stream after `EVENT_STREAM_MAX_SECONDS` (5 minutes by default): reconnect to get the ' +
    "job's current state.",
  security: bearer,
  request: { params: pathId },
  responses: {
    200: {
      description: 'event: job, data: the job resource (JSON), one per status change',
      content: { 'text/event-stream': { schema: z.string() } },
    },
    ...errorResponses(403, 404),
    429: tooManyRequests(
      'The caller already holds the most open streams (EVENT_STREAMS_PER_CALLER), or too many failed authentications from this address (rate_limited)',
    ),
  },
});

export function registerJobStreamRoutes(app: OpenAPIHono<AppEnv>) {
  app.openapi(streamJob, async (c) => {
    const deps = c.var.deps;
    const job = await findAccessibleJob(deps, c.var.caller, c.req.valid('param').id);
    const release = deps.eventStreams.take(callerKey(c.var.caller));
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
      // A stream lives so long at most, then ends like one whose client left: the client
      // reconnects (EventSource does so by itself) and is sent the current state.
      let expired = false;
      const lifetime = setTimeout(() => {
        expired = true;
        onEvent();
      }, deps.eventStreams.limits.lifetimeMs);
      try {
        let row = job;
        while (!stream.aborted && !expired) {
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
        clearTimeout(lifetime);
        unsubscribe();
        release();
      }
    });
  });
}
