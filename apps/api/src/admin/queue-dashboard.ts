import { createBullBoard } from '@bull-board/api';
import { BullMQAdapter } from '@bull-board/api/bullMQAdapter';
import { HonoAdapter } from '@bull-board/hono';
import { serveStatic } from '@hono/node-server/serve-static';
import { createMiddleware } from 'hono/factory';
import type { AppDeps } from '../context.ts';
import { forbidden } from '../errors.ts';

export const QUEUES_PATH = '/admin/queues';

/**
 * The bull-board dashboard over every partition queue, read-only. The worker applies what a
 * queued job carries, so editing, adding, retrying or removing jobs from here could move money
 * outside the API's checks, or apply a job PostgreSQL already considers final.
 */
export function queueDashboard(deps: AppDeps) {
  const serverAdapter = new HonoAdapter(serveStatic).setBasePath(QUEUES_PATH);
  // Padded, because the dashboard sorts queues by name: 2 then 10, not 10 then 2.
  const width = String(deps.queues.partitions - 1).length;
  createBullBoard({
    queues: Array.from(
      { length: deps.queues.partitions },
      (_, partition) =>
        new BullMQAdapter(deps.queues.queue(partition), {
          readOnlyMode: true,
          allowRetries: false,
          displayName: `Partition ${String(partition).padStart(width, '0')}`,
          description: 'Charge sales and credit approvals of the sellers hashed to this partition',
        }),
    ),
    serverAdapter,
    options: { uiConfig: { boardTitle: 'Charge Sales queues' } },
  });
  return serverAdapter.registerPlugin();
}

/** Read-only for certain: bull-board's own read-only mode, and no method but GET reaches it at all. */
export const readOnlyDashboard = createMiddleware(async (c, next) => {
  if (c.req.method !== 'GET' && c.req.method !== 'HEAD') {
    throw forbidden('The queue dashboard is read-only; jobs change only through the API');
  }
  await next();
});
