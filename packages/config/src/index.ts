import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { isPlaceholderSecret } from './placeholders.ts';
import { parseClusterNodes } from './redis-cluster.ts';

/** A span of time: milliseconds, or a number with `ms`, `s`, `m`, `h` or `d` (`24h`). */
function duration(name: string) {
  const units: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3600_000, d: 86_400_000 };
  return z.string().transform((value, ctx) => {
    const match = /^(\d{1,12})(ms|s|m|h|d)?$/.exec(value.trim());
    if (!match) {
      ctx.addIssue({ code: 'custom', message: `${name} must be milliseconds, or a number with ms, s, m, h or d` });
      return z.NEVER;
    }
    return Number(match[1]) * (units[match[2] ?? 'ms'] as number);
  });
}

/**
 * The whole configuration of every process, read from the environment once and validated here.
 * No other code of the API or the workers reads `process.env` (the scripts, the bench and the
 * tests only set it for the processes they start).
 */
const schema = z.object({
  NODE_ENV: z.enum(['development', 'test', 'production']).default('development'),
  PORT: z.coerce.number().int().min(0).max(65535).default(3000),
  /** The role the API and workers connect as: an application role with only the privileges they need. */
  DATABASE_URL: z.string().url().default('postgres://postgres@127.0.0.1:5432/charge_sales'),
  /** The owner of the tables, for `npm run db:migrate` only; DATABASE_URL when unset. */
  MIGRATION_DATABASE_URL: z.string().url().optional(),
  REDIS_URL: z.string().url().default('redis://127.0.0.1:6379'),
  /**
   * `host:port,...` of a Redis Cluster's nodes (any of them): when set, every use of Redis goes to
   * the cluster, and REDIS_URL gives only the credentials.
   */
  REDIS_CLUSTER_NODES: z
    .string()
    .transform((value, ctx) => {
      try {
        return parseClusterNodes(value);
      } catch (err) {
        // The line already names the variable (`config: REDIS_CLUSTER_NODES: ...`).
        ctx.addIssue({ code: 'custom', message: (err as Error).message });
        return z.NEVER;
      }
    })
    .optional(),
  /** Every Redis key of this deployment starts with it; test runs use their own. */
  REDIS_PREFIX: z
    .string()
    .regex(/^[A-Za-z0-9_-]{1,40}$/)
    .default('cs'),
  ADMIN_TOKEN: z.string().min(16, 'ADMIN_TOKEN must be at least 16 characters').optional(),
  /** Key of the ledger's hash chain; held by the processes, never by the database. */
  LEDGER_HMAC_KEY: z.string().min(32, 'LEDGER_HMAC_KEY must be at least 32 characters').optional(),
  /** Signs the operator pages' cookies (the sessions themselves live in PostgreSQL); required in production. */
  SESSION_SECRET: z.string().min(32, 'SESSION_SECRET must be at least 32 characters').optional(),
  /** An operator session ends after this long without a request, and after SESSION_MAX_MS in all. */
  SESSION_IDLE_MS: z.coerce
    .number()
    .int()
    .min(1000)
    .max(24 * 3600_000)
    .default(30 * 60_000),
  SESSION_MAX_MS: z.coerce
    .number()
    .int()
    .min(1000)
    .max(7 * 24 * 3600_000)
    .default(8 * 3600_000),
  /** A credit request above this many rials needs the approvals of two different operators; unset: one is enough. */
  CREDIT_SECOND_APPROVAL_ABOVE: z
    .string()
    .regex(/^\d{1,13}$/, 'CREDIT_SECOND_APPROVAL_ABOVE must be a whole number of rials')
    .transform((value) => BigInt(value))
    .optional(),
  /** When set, GET /metrics needs it as a bearer token. */
  METRICS_TOKEN: z.string().min(16, 'METRICS_TOKEN must be at least 16 characters').optional(),
  /** Submissions one API process holds in memory at most; past it, 503 `overloaded`. */
  MAX_PENDING_SUBMISSIONS: z.coerce.number().int().min(1000).max(1_000_000).default(2000),
  /**
   * Sales a second one seller may submit with its own key, counted across every API process (in
   * Redis); past it, 429. 0 turns the limit off.
   */
  SELLER_RATE_LIMIT: z.coerce.number().int().min(0).max(1_000_000).default(100),
  /** Failed authentications one address may make within AUTH_FAILURE_WINDOW_SECONDS; past it, 429. */
  AUTH_FAILURE_LIMIT: z.coerce.number().int().min(1).max(1_000_000).default(20),
  /** The window failed authentications are counted in, and how long an address past the limit is refused. */
  AUTH_FAILURE_WINDOW_SECONDS: z.coerce.number().int().min(1).max(86_400).default(60),
  /** Event streams one caller may hold open on one API process; past it, 429. */
  EVENT_STREAMS_PER_CALLER: z.coerce.number().int().min(1).max(10_000).default(20),
  /** The longest an event stream stays open: then the server closes it, and the client reconnects. */
  EVENT_STREAM_MAX_SECONDS: z.coerce.number().int().min(1).max(86_400).default(300),
  PARTITIONS: z.coerce.number().int().min(1).max(1024).default(16),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  DB_POOL_SIZE: z.coerce.number().int().min(1).max(100).default(10),
  /**
   * Named prepared statements (parsed once per connection). `false` behind a pooler that cannot
   * carry them from one transaction to the next: PgBouncer's transaction pooling before 1.21.
   */
  DATABASE_PREPARE: z
    .enum(['true', 'false'], { error: 'DATABASE_PREPARE must be true or false' })
    .default('true')
    .transform((value) => value === 'true'),
  /** Jobs one partition applies in one database transaction at most. */
  BATCH_SIZE: z.coerce.number().int().min(1).max(1000).default(100),
  /** How long a worker's claim on a partition lives without renewal; a dead worker's partitions move after this. */
  PARTITION_LEASE_MS: z.coerce.number().int().min(500).max(60000).default(3000),
  /** BullMQ job lock; a job held by a dead worker is redelivered after at most lock + stall interval. */
  JOB_LOCK_MS: z.coerce.number().int().min(1000).max(300000).default(4000),
  STALLED_INTERVAL_MS: z.coerce.number().int().min(500).max(300000).default(2000),
  /** Who delivers top-ups: the in-process simulator (API.md's table), or a JSON provider over HTTP. */
  PROVIDER: z.enum(['simulator', 'http']).default('simulator'),
  PROVIDER_URL: z.string().url().optional(),
  PROVIDER_API_KEY: z.string().min(1).optional(),
  /** How long one call to the provider may take; past it the answer is unclear, never a failure. */
  PROVIDER_TIMEOUT_MS: z.coerce.number().int().min(50).max(120_000).default(5000),
  /** Provider calls in flight at once in one worker process. */
  DELIVERY_CONCURRENCY: z.coerce.number().int().min(1).max(5000).default(256),
  /** The first wait before asking the provider again about an unclear top-up; it doubles each time. */
  DELIVERY_RETRY_FIRST_MS: z.coerce.number().int().min(10).max(600_000).default(1000),
  /** The longest wait between two questions to the provider. */
  DELIVERY_RETRY_MAX_MS: z.coerce.number().int().min(10).max(3_600_000).default(60_000),
  /** After this long without a definite answer, a sale waits for an operator (it is still asked). */
  DELIVERY_GIVE_UP_AFTER: duration('DELIVERY_GIVE_UP_AFTER').default(24 * 3600_000),
  /** How long after an operator's resolution the provider is still asked, to confirm or contradict it. */
  DELIVERY_WATCH_AFTER_RESOLUTION: duration('DELIVERY_WATCH_AFTER_RESOLUTION').default(7 * 24 * 3600_000),
  /**
   * How long a worker holds a delivery it is asking the provider about; past it, another worker
   * takes it over (a dead worker's deliveries move on after this).
   */
  DELIVERY_LEASE_MS: z.coerce.number().int().min(200).max(3_600_000).default(30_000),
  /** How often each worker looks for deliveries due (its own are handed over at once). */
  DELIVERY_POLL_MS: z.coerce.number().int().min(10).max(60_000).default(500),
  /** Unclear answers in a row (timeouts, refused connections, 5xx) after which a worker pauses its calls to the provider. */
  DELIVERY_BREAKER_FAILURES: z.coerce.number().int().min(1).max(100_000).default(20),
  /** While paused, one call probes the provider this often; its first clear answer resumes the calls. */
  DELIVERY_BREAKER_COOLDOWN_MS: z.coerce.number().int().min(10).max(600_000).default(2000),
  /** Allows webhook URLs on loopback and private addresses, and plain http (tests, closed networks). */
  WEBHOOK_ALLOW_PRIVATE: z
    .enum(['0', '1', 'true', 'false'])
    .default('0')
    .transform((value) => value === '1' || value === 'true'),
  /** A receiver that has not answered within this is retried. */
  WEBHOOK_TIMEOUT_MS: z.coerce.number().int().min(50).max(60_000).default(10_000),
  /** Waits between attempts, in milliseconds, the last one repeated: the first within 5 s, the second within 30 s. */
  WEBHOOK_RETRY_DELAYS_MS: z
    .string()
    .regex(/^\d+(,\d+)*$/, 'WEBHOOK_RETRY_DELAYS_MS must be a comma-separated list of milliseconds')
    .default('2000,25000,120000,600000,1800000,3600000,7200000,14400000')
    .transform((value) => value.split(',').map(Number)),
  /** How long a delivery is retried before it is `failed` (an admin may send it again). */
  WEBHOOK_RETRY_FOR: duration('WEBHOOK_RETRY_FOR').default(24 * 3600_000),
  /** Webhook posts in flight at once in one worker process; one receiver holds at most WEBHOOK_PER_RECEIVER of them. */
  WEBHOOK_CONCURRENCY: z.coerce.number().int().min(1).max(1000).default(32),
  WEBHOOK_PER_RECEIVER: z.coerce.number().int().min(1).max(100).default(2),
  /** How often each worker looks for webhook deliveries due. */
  WEBHOOK_POLL_MS: z.coerce.number().int().min(10).max(60_000).default(500),
  WORKER_HEALTH_PORT: z.coerce.number().int().min(0).max(65535).optional(),
  SHUTDOWN_TIMEOUT_MS: z.coerce.number().int().min(100).max(600000).default(10000),
});

export type Config = z.infer<typeof schema> & { ADMIN_TOKEN: string; LEDGER_HMAC_KEY: string; SESSION_SECRET: string };

/** Shortest admin token a production deployment accepts. */
export const PRODUCTION_ADMIN_TOKEN_MIN = 32;

/**
 * The ledger key of a development or test process started without one. Chains written with it
 * prove nothing, which is why production refuses to start without a key of its own.
 */
const DEVELOPMENT_LEDGER_KEY = 'development-ledger-key-not-a-secret-0000';
/** Likewise for the pages' cookies: shared by every development process, so any of them reads the others'. */
const DEVELOPMENT_SESSION_SECRET = 'development-session-secret-not-a-secret-00';

/**
 * Parses the environment; on a bad value prints one line and exits, so a misconfigured process
 * never half-starts. `fail` is for tests, which check the line instead of exiting.
 */
export function loadConfig({
  needsAdminToken = true,
  needsLedgerKey = true,
  needsSessionSecret = false,
  env = process.env,
  fail = (line: string): never => {
    console.error(line);
    process.exit(1);
  },
}: {
  needsAdminToken?: boolean;
  needsLedgerKey?: boolean;
  needsSessionSecret?: boolean;
  env?: NodeJS.ProcessEnv;
  fail?: (line: string) => never;
} = {}): Config {
  // An empty variable counts as unset, as `FOO=` in an env file or `${FOO:-}` in Compose means.
  const parsed = schema.safeParse(Object.fromEntries(Object.entries(env).filter(([, value]) => value !== '')));
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    return fail(`config: ${issue?.path.join('.')}: ${issue?.message}`);
  }
  const config = parsed.data;
  const production = config.NODE_ENV === 'production';
  if (config.PROVIDER === 'http' && !config.PROVIDER_URL)
    return fail('config: PROVIDER_URL is required when PROVIDER=http');

  let adminToken = config.ADMIN_TOKEN ?? '';
  if (needsAdminToken) {
    if (production && !adminToken) return fail('config: ADMIN_TOKEN is required in production');
    if (production && adminToken.length < PRODUCTION_ADMIN_TOKEN_MIN)
      return fail(`config: ADMIN_TOKEN must be at least ${PRODUCTION_ADMIN_TOKEN_MIN} characters in production`);
    if (production && isPlaceholderSecret(adminToken))
      return fail('config: ADMIN_TOKEN is a placeholder from the documentation; generate one (openssl rand -hex 32)');
    if (!adminToken) {
      adminToken = `dev-${randomBytes(18).toString('base64url')}`;
      console.error(`config: ADMIN_TOKEN not set; using a generated development token: ${adminToken}`);
    }
  }

  let ledgerKey = config.LEDGER_HMAC_KEY ?? '';
  if (!ledgerKey) {
    if (production && needsLedgerKey)
      return fail('config: LEDGER_HMAC_KEY is required in production (32 characters or more)');
    ledgerKey = DEVELOPMENT_LEDGER_KEY;
  } else if (production && isPlaceholderSecret(ledgerKey)) {
    // Not refused (a key of 32 characters or more is all production requires), but a chain sealed
    // with a documented key proves nothing: anyone can recompute it.
    console.error('config: warning: LEDGER_HMAC_KEY is a placeholder from the documentation; generate one');
  }

  let sessionSecret = config.SESSION_SECRET ?? '';
  if (!sessionSecret) {
    if (production && needsSessionSecret)
      return fail('config: SESSION_SECRET is required in production (32 characters or more)');
    sessionSecret = DEVELOPMENT_SESSION_SECRET;
  } else if (production && isPlaceholderSecret(sessionSecret)) {
    return fail('config: SESSION_SECRET is a placeholder from the documentation; generate one (openssl rand -hex 32)');
  }
  if (sessionSecret === adminToken) return fail('config: SESSION_SECRET must not be the ADMIN_TOKEN');
  return { ...config, ADMIN_TOKEN: adminToken, LEDGER_HMAC_KEY: ledgerKey, SESSION_SECRET: sessionSecret };
}

export { createLogger } from './logger.ts';
export { isPlaceholderSecret } from './placeholders.ts';
export { isReachable, requireServices } from './reachability.ts';
export { type ClusterNode, parseClusterNodes } from './redis-cluster.ts';
