import { randomBytes } from 'node:crypto';
import { z } from 'zod';

/**
 * The whole configuration of every process, read from the environment once and validated here.
 * Nothing else in the code base reads `process.env`.
 */
const schema = z.object({
  NODE_ENV: z.enum(['development', 'test', 'production']).default('development'),
  PORT: z.coerce.number().int().min(0).max(65535).default(3000),
  DATABASE_URL: z.string().url().default('postgres://postgres@127.0.0.1:5432/charge_sales'),
  REDIS_URL: z.string().url().default('redis://127.0.0.1:6379'),
  /** Every Redis key of this deployment starts with it; test runs use their own. */
  REDIS_PREFIX: z
    .string()
    .regex(/^[A-Za-z0-9_-]{1,40}$/)
    .default('cs'),
  ADMIN_TOKEN: z.string().min(16, 'ADMIN_TOKEN must be at least 16 characters').optional(),
  PARTITIONS: z.coerce.number().int().min(1).max(1024).default(16),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  DB_POOL_SIZE: z.coerce.number().int().min(1).max(100).default(10),
  /** Jobs one partition applies in one database transaction at most. */
  BATCH_SIZE: z.coerce.number().int().min(1).max(1000).default(100),
  /** How long a worker's claim on a partition lives without renewal; a dead worker's partitions move after this. */
  PARTITION_LEASE_MS: z.coerce.number().int().min(500).max(60000).default(3000),
  /** BullMQ job lock; a job held by a dead worker is redelivered after at most lock + stall interval. */
  JOB_LOCK_MS: z.coerce.number().int().min(1000).max(300000).default(4000),
  STALLED_INTERVAL_MS: z.coerce.number().int().min(500).max(300000).default(2000),
  WORKER_HEALTH_PORT: z.coerce.number().int().min(0).max(65535).optional(),
  SHUTDOWN_TIMEOUT_MS: z.coerce.number().int().min(100).max(600000).default(10000),
});

export type Config = z.infer<typeof schema> & { ADMIN_TOKEN: string };

/** Parses the environment; on a bad value prints one line and exits, so a misconfigured process never half-starts. */
export function loadConfig({ needsAdminToken = true, env = process.env } = {}): Config {
  const parsed = schema.safeParse(env);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    console.error(`config: ${issue?.path.join('.')}: ${issue?.message}`);
    process.exit(1);
  }
  const config = parsed.data;
  let adminToken = config.ADMIN_TOKEN ?? '';
  if (!adminToken && needsAdminToken) {
    if (config.NODE_ENV === 'production') {
      console.error('config: ADMIN_TOKEN is required in production');
      process.exit(1);
    }
    adminToken = `dev-${randomBytes(18).toString('base64url')}`;
    console.error(`config: ADMIN_TOKEN not set; using a generated development token: ${adminToken}`);
  }
  return { ...config, ADMIN_TOKEN: adminToken };
}
export { createLogger } from './logger.ts';
export { isReachable, requireServices } from './reachability.ts';
