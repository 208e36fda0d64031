import { setTimeout as sleep } from 'node:timers/promises';
import type { Database } from '@cs/db';
import type { JobOutcome, JobRef, NewDelivery } from '@cs/ledger';
import type { RedisClient } from '@cs/queue';
import { type JobEvent, jobIdsOf, openPartitionQueue, partitionQueueName, publishJobEvents } from '@cs/queue';
import { type Job, type Queue, Worker } from 'bullmq';
import type { Logger } from 'pino';
import { requeueLostJobs, requeueLostRefunds } from './requeue.ts';

/** How often the consumer looks for jobs its queue will never deliver (see requeue.ts). */
const REQUEUE_EVERY_MS = 5000;
/**
 * Messages BullMQ takes ahead for one partition. It takes them one round trip at a time and hands
 * none over before it has them all (or the queue is empty), while their locks run from the moment
 * each was taken: taking BATCH_SIZE ahead over a slow link to Redis (200 ms) outlasts JOB_LOCK_MS,
 * and the partition stands still, its messages redelivered again and again. A batch still carries
 * up to BATCH_SIZE jobs: under load a message names many.
 */
const FETCH_AHEAD = 8;
/** How long closing the BullMQ worker may take once the batch in hand is done (see `stop`). */
const CLOSE_GRACE_MS = 2000;

export interface ConsumerOptions {
  partition: number;
  db: Database;
  prefix: string;
  redis: RedisClient;
  logger: Logger;
  batchSize: number;
  lockDurationMs: number;
  stalledIntervalMs: number;
  /** Applies the named jobs; outcomes by job id. */
  processBatch: (jobs: readonly JobRef[]) => Promise<Map<string, JobOutcome>>;
  /** Receives the sales a batch debited, whose deliveries this process now holds. */
  onDebited: (deliveries: NewDelivery[]) => void;
  /** Called after each commit that decided something: it may have written webhook events. */
  onCommitted: () => void;
}

interface Held {
  message: Job;
  jobs: JobRef[];
  resolve: () => void;
  reject: (error: unknown) => void;
}

/**
 * Consumes one partition while this process holds its lease. A queue message carries jobs
 * accepted together (see `Delivery`); BullMQ hands the worker up to `batchSize` messages at once,
 * and the jobs they carry are gathered and applied in one transaction (about `batchSize` jobs at
 * most), one batch after another, so the partition stays serial while each commit carries many
 * jobs.
 */
export class PartitionConsumer {
  private readonly worker: Worker;
  private readonly queue: Queue;
  private held: Held[] = [];
  private draining = false;
  /** The drain under way, if any: it ends once every message held has had its batch. */
  private drainRun: Promise<void> = Promise.resolve();
  private stopped = false;
  private abandoning = false;
  private requeueTimer: NodeJS.Timeout | undefined;

  constructor(private readonly options: ConsumerOptions) {
    const name = partitionQueueName(options.partition);
    this.queue = openPartitionQueue(options.redis, options.prefix, options.partition, (err) =>
      options.logger.warn({ err, partition: options.partition }, 'queue error'),
    );
    this.worker = new Worker(name, (message) => this.hold(message), {
      connection: options.redis,
      prefix: options.prefix,
      autorun: false,
      concurrency: Math.min(options.batchSize, FETCH_AHEAD),
      lockDuration: options.lockDurationMs,
      stalledInterval: options.stalledIntervalMs,
      // Redelivery is safe (a job applies once whatever happens), so a job that stalls a few
      // times, say through repeated worker crashes, is retried rather than dropped.
      maxStalledCount: 10,
    });
    this.worker.on('error', (err) => options.logger.warn({ err, partition: options.partition }, 'worker error'));
  }

  /**
   * Starts consuming. Jobs a dead previous owner held are still marked active until their lock
   * expires; waiting for the stall check to hand them back first keeps them ahead of newer jobs
   * of the same sellers.
   */
  async start(): Promise<void> {
    await this.worker.startStalledCheckTimer();
    const deadline = Date.now() + this.options.lockDurationMs + 3 * this.options.stalledIntervalMs;
    while (!this.stopped && Date.now() < deadline && (await this.queue.getActiveCount()) > 0) {
      await sleep(100);
    }
    if (this.stopped) return;
    void this.worker.run().catch((err: unknown) => {
      this.options.logger.error({ err, partition: this.options.partition }, 'worker stopped');
    });
    this.requeueTimer = setInterval(() => void this.requeue(), REQUEUE_EVERY_MS);
  }

  /** Puts back jobs that PostgreSQL has open and this partition's queue will never deliver. */
  private async requeue(): Promise<void> {
    const { db, partition, logger } = this.options;
    try {
      const count = await requeueLostJobs(db, this.queue, partition);
      if (count > 0) logger.warn({ partition, count }, 'requeued jobs the queue would never deliver');
      const refunds = await requeueLostRefunds(db, this.queue, partition);
      if (refunds > 0) logger.warn({ partition, count: refunds }, 'requeued refunds the queue would never deliver');
    } catch (err) {
      logger.debug({ err, partition }, 'requeue check failed');
    }
  }

  /**
   * Stops taking jobs, finishes the batch in hand (for as long as it takes: the partition's lease is
   * kept meanwhile), closes. BullMQ's close then waits for its blocking connection to end, which it
   * may never do: after a network cut while ioredis is between two reconnection attempts
   * (taskforcesh/bullmq#4656), or on a Redis Cluster whose master failed over, with the blocking
   * command parked in an offline queue nobody flushes. That wait is bounded, or the partition would
   * stay held by a consumer that never finishes stopping, and no process would consume it. Past
   * the bound the BullMQ worker is left behind: it is closing, so it takes no more messages, and
   * whatever it still held is handed back by the stall check, as for a worker that died.
   */
  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.requeueTimer);
    // Closing stops the fetching at once; it resolves once the messages in hand are finished.
    const closed = this.worker.close().then(
      () => true,
      () => true,
    );
    do await this.drainRun;
    while (this.draining);
    const { logger, partition } = this.options;
    if (!(await Promise.race([closed, sleep(CLOSE_GRACE_MS).then(() => false)]))) {
      logger.error({ partition }, 'queue worker did not close in time; leaving it behind');
    }
    await settlesWithin(this.queue.close(), CLOSE_GRACE_MS);
  }

  /**
   * Stops at once, without the batch in hand, whose jobs this process cannot apply (PostgreSQL is out
   * of its reach): BullMQ stops extending the locks of the messages held, so they come back to the
   * next owner as a dead process's would, ahead of newer ones. The batch in hand is left to fail, or
   * to find its jobs final, once PostgreSQL answers again; this resolves then. The messages held
   * that no batch took are let go once their locks have run out, which leaves them as they are.
   */
  async abandon(): Promise<void> {
    this.stopped = true;
    this.abandoning = true;
    clearInterval(this.requeueTimer);
    await Promise.race([this.worker.close(true).catch(() => {}), sleep(CLOSE_GRACE_MS)]);
    await this.queue.close().catch(() => {});
    const left = this.held.splice(0);
    setTimeout(() => {
      for (const h of left) h.reject(new Error('partition given up'));
    }, 2 * this.options.lockDurationMs).unref();
    do await this.drainRun;
    while (this.draining);
  }

  /**
   * Holds a message until the batch that carries its jobs has committed. It completes with no
   * return value: the outcomes live in PostgreSQL, and BullMQ would otherwise store a copy of
   * every one in Redis.
   */
  private hold(message: Job): Promise<void> {
    return new Promise((resolve, reject) => {
      this.held.push({ message, jobs: this.unpack(message), resolve, reject });
      if (!this.draining) {
        this.draining = true;
        // Let the fetches already in flight land, so the first batch is not a batch of one.
        this.drainRun = new Promise((resolve) => setImmediate(() => void this.drain().finally(resolve)));
      }
    });
  }

  private async drain(): Promise<void> {
    try {
      while (this.held.length > 0 && !this.abandoning) {
        const batch = takeBatch(this.held, this.options.batchSize);
        const jobs = batch.flatMap((h) => h.jobs);
        // Not awaited: one connection keeps the events in order, and the batch need not wait.
        void this.publish(jobs.map((j) => ({ job_id: j.id, status: 'processing' })));
        try {
          const outcomes = await this.options.processBatch(jobs);
          const committedAt = Date.now();
          const events: JobEvent[] = [];
          const debited: NewDelivery[] = [];
          for (const held of batch) {
            for (const { id } of held.jobs) {
              const o = outcomes.get(id);
              // A message naming no job of this partition announces nothing: there is no change.
              if (!o || o.ignored) continue;
              // Its own partition's consumer sends it, once, even if a stray message named it here too.
              if (o.delivery && !o.replayed && o.delivery.partition === this.options.partition)
                debited.push(o.delivery);
              events.push({
                job_id: o.jobId,
                status: o.status,
                type: o.type,
                // Queued → committed, for the latency histogram; a replay took no new time.
                latency_ms: o.replayed ? undefined : committedAt - held.message.timestamp,
              });
            }
            held.resolve();
          }
          void this.publish(events);
          if (debited.length > 0) this.options.onDebited(debited);
          if (events.length > 0) this.options.onCommitted();
        } catch (error) {
          for (const h of batch) h.reject(error);
        }
      }
    } finally {
      this.draining = false;
    }
  }

  /** The jobs a message names, as jobs of this partition; a message naming none is logged and left. */
  private unpack(message: Job): JobRef[] {
    const ids = jobIdsOf(message.data);
    if (ids.length === 0) this.options.logger.error({ queueJobId: message.id }, 'queue message names no job');
    return ids.map((id) => ({ id, partition: this.options.partition }));
  }

  /** Tells API processes (waiting clients, event streams) what changed; best effort. */
  private publish(events: JobEvent[]): Promise<void> {
    return publishJobEvents(this.options.redis, this.options.prefix, events, this.options.logger);
  }
}

/** Whether `promise` settles (either way) within `ms`; it is left to run if not. */
async function settlesWithin(promise: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<false>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([
      promise.then(
        () => true,
        () => true,
      ),
      late,
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Takes the oldest held messages off `held`, up to about `batchSize` jobs: always at least one
 * message, so a message carrying more than `batchSize` jobs still goes, alone.
 */
export function takeBatch<T extends { jobs: readonly unknown[] }>(held: T[], batchSize: number): T[] {
  let count = 0;
  let taken = 0;
  while (taken < held.length && (taken === 0 || count + (held[taken]?.jobs.length ?? 0) <= batchSize)) {
    count += held[taken]?.jobs.length ?? 0;
    taken++;
  }
  return held.splice(0, taken);
}
