import { createServer } from 'node:http';
import { createLogger, loadConfig, requireServices } from '@cs/config';
import { createDb, requireLeastPrivilege } from '@cs/db';
import { createProvider } from '@cs/delivery';
import type { JobOutcome, JobRef } from '@cs/ledger';
import {
  Batcher,
  createRedis,
  deliver,
  openPartitionQueue,
  publishJobEvents,
  redisTargetOf,
  refundMessageId,
  requireSamePartitionCount,
} from '@cs/queue';
import { WebhookSecrets, WebhookSender, webhookSenderSettings } from '@cs/webhooks';
import type { Queue } from 'bullmq';
import { DatabaseProbe } from './database-probe.ts';
import { DeliveryStage } from './delivery-stage.ts';
import { PartitionConsumer } from './partition-consumer.ts';
import { PartitionManager } from './partition-manager.ts';
import { processBatch } from './process-batch.ts';

const config = loadConfig({ needsAdminToken: false });
const logger = createLogger('worker', config.LOG_LEVEL);
await requireServices(config, 'worker');

// A worker process that stalls (paused, swapped out) inside a transaction keeps its jobs' and
// sellers' rows locked, and the process that takes its partitions over would wait on them for as
// long as it sleeps. PostgreSQL ends such a transaction once it has sat idle as long as a job's
// lock lasts: by then the jobs are someone else's to apply, and the stalled process, once awake,
// finds its transaction gone (a transient error: it retries and finds its jobs final). This is
// the one place that decides the timeout; createDb sets it with SET LOCAL at the start of every
// transaction of the pool (the batch transaction of applyJobs among them), so it holds behind a
// pooler in transaction mode too, and never outlives the transaction on a shared connection.
const { db, close: closeDb } = createDb(config.DATABASE_URL, {
  max: config.DB_POOL_SIZE,
  idleInTransactionTimeoutMs: config.JOB_LOCK_MS,
  prepare: config.DATABASE_PREPARE,
});
await requireLeastPrivilege(db.$client, {
  production: config.NODE_ENV === 'production',
  who: 'worker',
  url: config.DATABASE_URL,
});
await requireSamePartitionCount(db, config.PARTITIONS, 'worker');
// Not auto-pipelined: BullMQ's workers mix commands of their own with explicit pipelines, which
// leave at once and may overtake commands held for the end of the turn; with it, a seller's
// sequential sales were once applied out of order (test/concurrency/serial-per-seller.test.ts).
const redis = createRedis(redisTargetOf(config));
redis.on('error', (err) => logger.warn({ err: err.message }, 'redis connection error'));
const shutdown = new AbortController();

// The batches of all the partitions this process consumes share transactions: a partition hands
// over what it holds and waits for its outcome, and the batches that arrive while a transaction
// is in flight go together into the next one. With sales spread over many sellers, each partition
// holds only a job or two at a time; gathered, they still make one commit for many jobs. A
// partition never has two batches in flight, and sellers never span partitions, so a seller's
// jobs stay serial and in order. One transaction at a time per process: with sales spread over
// many sellers, two at once only split the batches into smaller commits, at more CPU per sale and
// a longer tail latency (BENCHMARKS.md).
const committer = new Batcher<readonly JobRef[], Map<string, JobOutcome>>(
  async (groups) => {
    const outcomes = await processBatch(
      {
        db,
        logger,
        ledgerKey: config.LEDGER_HMAC_KEY,
        rules: {
          secondApprovalAbove: config.CREDIT_SECOND_APPROVAL_ABOVE,
          provider: provider.name,
          deliveryLeaseMs: config.DELIVERY_LEASE_MS,
        },
        signal: shutdown.signal,
      },
      groups.flat(),
    );
    return groups.map(() => outcomes);
  },
  { maxBatch: config.PARTITIONS, maxInFlight: 1 },
);

// Webhooks to the sellers' servers, from the outbox the batches and the delivery stage write. A
// pool of its own: slow receivers never take the connections the batches and deliveries use.
const webhookPool = createDb(config.DATABASE_URL, {
  max: 3,
  idleInTransactionTimeoutMs: config.JOB_LOCK_MS,
  prepare: config.DATABASE_PREPARE,
});
const webhooks = new WebhookSender({
  db: webhookPool.db,
  logger,
  settings: webhookSenderSettings(config),
  secrets: new WebhookSecrets(config.LEDGER_HMAC_KEY),
});
webhooks.start();
// A commit that wrote events wakes the sender, at most every 100 ms: a look per batch would cost
// PostgreSQL a query for each of hundreds of batches a second, most of them with no webhook.
let webhookWakeDue = false;
const wakeWebhooks = () => {
  if (webhookWakeDue) return;
  webhookWakeDue = true;
  setTimeout(() => {
    webhookWakeDue = false;
    webhooks.wake();
  }, 100).unref();
};

// The top-ups of debited sales, delivered outside the partitions (see DeliveryStage).
const provider = createProvider({
  provider: config.PROVIDER,
  url: config.PROVIDER_URL,
  apiKey: config.PROVIDER_API_KEY,
  timeoutMs: config.PROVIDER_TIMEOUT_MS,
});
// A round with the provider is up to two calls (a status question, then a send). A lease shorter
// than that lets another worker take a delivery over while this one still waits on it: safe (it
// asks before it sends, and the reference is the same), but every slow answer is asked twice.
if (config.DELIVERY_LEASE_MS < 2 * config.PROVIDER_TIMEOUT_MS)
  logger.warn(
    { DELIVERY_LEASE_MS: config.DELIVERY_LEASE_MS, PROVIDER_TIMEOUT_MS: config.PROVIDER_TIMEOUT_MS },
    'DELIVERY_LEASE_MS is shorter than two provider calls: slow deliveries will be taken over while still in hand',
  );
/** The partitions' queues as the delivery stage adds refunds to them, opened once each. */
const refundQueues = new Map<number, Queue>();
const deliveries = new DeliveryStage({
  db,
  provider,
  logger,
  settings: {
    concurrency: config.DELIVERY_CONCURRENCY,
    retryFirstMs: config.DELIVERY_RETRY_FIRST_MS,
    retryMaxMs: config.DELIVERY_RETRY_MAX_MS,
    giveUpAfterMs: config.DELIVERY_GIVE_UP_AFTER,
    watchAfterResolutionMs: config.DELIVERY_WATCH_AFTER_RESOLUTION,
    leaseMs: config.DELIVERY_LEASE_MS,
    pollMs: config.DELIVERY_POLL_MS,
    breakerFailures: config.DELIVERY_BREAKER_FAILURES,
    breakerCooldownMs: config.DELIVERY_BREAKER_COOLDOWN_MS,
  },
  publish: (events) => void publishJobEvents(redis, config.REDIS_PREFIX, events, logger),
  onEvents: wakeWebhooks,
  queueRefund: async (jobId, partition) => {
    let queue = refundQueues.get(partition);
    if (!queue) {
      queue = openPartitionQueue(redis, config.REDIS_PREFIX, partition, (err) =>
        logger.warn({ err, partition }, 'queue error'),
      );
      refundQueues.set(partition, queue);
    }
    await deliver(queue, [{ id: refundMessageId(jobId), jobIds: [jobId] }]);
  },
});
deliveries.start();

// A host that reaches Redis but not PostgreSQL would otherwise keep renewing its leases and apply
// nothing for as long as the cut lasts: the manager gives its partitions up once two probes in a
// row went unanswered while PostgreSQL answers other processes (see PartitionManager).
const probe = new DatabaseProbe(config.DATABASE_URL, {
  everyMs: Math.floor(config.PARTITION_LEASE_MS / 3),
  timeoutMs: Math.floor(config.PARTITION_LEASE_MS / 3),
});
probe.start();

const manager = new PartitionManager({
  redis,
  prefix: config.REDIS_PREFIX,
  partitions: config.PARTITIONS,
  leaseMs: config.PARTITION_LEASE_MS,
  database: probe,
  logger,
  createConsumer: (partition) =>
    new PartitionConsumer({
      partition,
      db,
      prefix: config.REDIS_PREFIX,
      redis,
      logger,
      batchSize: config.BATCH_SIZE,
      lockDurationMs: config.JOB_LOCK_MS,
      stalledIntervalMs: config.STALLED_INTERVAL_MS,
      processBatch: (jobs) => committer.submit(jobs),
      onDebited: (debited) => deliveries.take(debited, provider.name),
      onCommitted: wakeWebhooks,
    }),
});
manager.start();
logger.info({ id: manager.id, partitions: config.PARTITIONS }, 'worker started');

const health =
  config.WORKER_HEALTH_PORT === undefined
    ? undefined
    : createServer((_req, res) => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(
          JSON.stringify({
            status: 'ok',
            partitions: manager.ownedPartitions,
            provider_calls: deliveries.breaker.state,
          }),
        );
      }).listen(config.WORKER_HEALTH_PORT);

let stopping = false;
async function stop(signal: string) {
  if (stopping) return;
  stopping = true;
  logger.info({ signal }, 'shutting down: finishing the batches in hand');
  const force = setTimeout(() => {
    logger.error('shutdown timed out; jobs in hand will be redelivered');
    shutdown.abort();
    process.exit(1);
  }, config.SHUTDOWN_TIMEOUT_MS);
  health?.close();
  await manager.stop();
  await deliveries.stop();
  await provider.close();
  // Posts in flight finish within the shutdown's own bound; the rest are claimed again later.
  await webhooks.stop(Math.max(1000, config.SHUTDOWN_TIMEOUT_MS - 2000));
  await webhookPool.close();
  for (const queue of refundQueues.values()) await queue.close().catch(() => {});
  await probe.stop();
  await redis.quit().catch(() => {});
  await closeDb();
  clearTimeout(force);
  logger.info('stopped');
  process.exit(0);
}
process.on('SIGTERM', () => void stop('SIGTERM'));
process.on('SIGINT', () => void stop('SIGINT'));
