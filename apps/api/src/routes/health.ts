import { sql } from 'drizzle-orm';
import type { Hono } from 'hono';
import type { AppEnv } from '../context.ts';

/** Open probes: /healthz says the process runs; /readyz that PostgreSQL and Redis answer. */
export function registerHealthRoutes(app: Hono<AppEnv>) {
  app.get('/healthz', (c) => c.json({ status: 'ok' }));
  app.get('/readyz', async (c) => {
    const timeout = <T>(p: Promise<T>) =>
      Promise.race([p, new Promise<never>((_, reject) => setTimeout(() => reject(new Error('timeout')), 2000))]);
    const [postgres, redis] = await Promise.allSettled([
      timeout(c.var.deps.db.execute(sql`select 1`)),
      timeout(c.var.deps.pingRedis()),
    ]);
    const checks = {
      postgres: postgres.status === 'fulfilled' ? 'ok' : 'unavailable',
      redis: redis.status === 'fulfilled' ? 'ok' : 'unavailable',
    };
    const ready = checks.postgres === 'ok' && checks.redis === 'ok';
    return ready
      ? c.json({ status: 'ready', checks }, 200)
      : c.json({ error: 'Not ready', code: 'service_unavailable', checks }, 503);
  });
}
