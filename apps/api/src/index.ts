import { createLogger, loadConfig, requireServices } from '@cs/config';
import { createDb, requireLeastPrivilege } from '@cs/db';
import { createRedis, redisTargetOf, requireSamePartitionCount } from '@cs/queue';
import { WebhookSecrets } from '@cs/webhooks';
import { serve } from '@hono/node-server';
import { createApp } from './app.ts';
import { ApiError } from './errors.ts';
import { AuthFailures } from './services/auth-failures.ts';
import { EventStreamSlots } from './services/event-stream-slots.ts';
import { JobEvents } from './services/job-events.ts';
import { JobQueues } from './services/job-queues.ts';
import { Metrics } from './services/metrics.ts';
import { SaleRate } from './services/sale-rate.ts';
import { SellerKeys } from './services/seller-keys.ts';
import { JobSubmitter } from './services/submit-job.ts';

const config = loadConfig({ needsSessionSecret: true });
const logger = createLogger('api', config.LOG_LEVEL);
await requireServices(config, 'api');

const { db, close: closeDb } = createDb(config.DATABASE_URL, {
  max: config.DB_POOL_SIZE,
  prepare: config.DATABASE_PREPARE,
});
await requireLeastPrivilege(db.$client, {
  production: config.NODE_ENV === 'production',
  who: 'api',
  url: config.DATABASE_URL,
});
await requireSamePartitionCount(db, config.PARTITIONS, 'api');
const redis = createRedis(redisTargetOf(config), { failFast: true, autoPipeline: true });
const subscriber = createRedis(redisTargetOf(config));
for (const connection of [redis, subscriber]) {
  connection.on('error', (err) => logger.warn({ err: err.message }, 'redis connection error'));
}
const queues = new JobQueues(redis, config.REDIS_PREFIX, config.PARTITIONS, logger);
const jobEvents = new JobEvents(subscriber, config.REDIS_PREFIX, logger);
await jobEvents.start();
const sellerKeys = new SellerKeys(db, redis, `${config.REDIS_PREFIX}:seller-changed`, logger);
await sellerKeys.listen(subscriber);

const eventStreams = new EventStreamSlots({
  perCaller: config.EVENT_STREAMS_PER_CALLER,
  lifetimeMs: config.EVENT_STREAM_MAX_SECONDS * 1000,
});
const metrics = new Metrics({ db, queues, logger, ledgerKey: config.LEDGER_HMAC_KEY }, jobEvents, eventStreams);
const app = createApp({
  config,
  db,
  queues,
  submitter: new JobSubmitter(db, queues, logger, config.MAX_PENDING_SUBMISSIONS),
  sellerKeys,
  jobEvents,
  authFailures: new AuthFailures(redis, config.REDIS_PREFIX, {
    limit: config.AUTH_FAILURE_LIMIT,
    windowSeconds: config.AUTH_FAILURE_WINDOW_SECONDS,
  }),
  saleRate: new SaleRate(redis, config.REDIS_PREFIX, config.SELLER_RATE_LIMIT),
  eventStreams,
  logger,
  metrics,
  webhookSecrets: new WebhookSecrets(config.LEDGER_HMAC_KEY),
  pingRedis: async () => {
    await redis.ping();
  },
});
const server = serve({ fetch: app.fetch, port: config.PORT, hostname: '0.0.0.0' }, (info) => {
  logger.info({ port: info.port }, 'api listening');
});
// Requests Node refuses before they reach the app (headers over 16 KiB, malformed HTTP) still
// get the contract's JSON error instead of an empty body.
server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
  if (!socket.writable) return socket.destroy();
  const error =
    err.code === 'HPE_HEADER_OVERFLOW'
      ? new ApiError('headers_too_large', 'The request headers are larger than 16 KiB')
      : new ApiError('malformed_request', 'The request is not valid HTTP');
  const body = JSON.stringify({ error: error.message, code: error.code });
  socket.end(
    `HTTP/1.1 ${error.status} ${error.code}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
  );
});

let stopping = false;
async function stop(signal: string) {
  if (stopping) return;
  stopping = true;
  logger.info({ signal }, 'shutting down: no new requests, finishing those in hand');
  const force = setTimeout(() => process.exit(1), config.SHUTDOWN_TIMEOUT_MS);
  metrics.stop();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  await jobEvents.close();
  await queues.close();
  await redis.quit().catch(() => {});
  await closeDb();
  clearTimeout(force);
  process.exit(0);
}
process.on('SIGTERM', () => void stop('SIGTERM'));
process.on('SIGINT', () => void stop('SIGINT'));
