import { setTimeout as sleep } from 'node:timers/promises';
import type { JobOutcome, JobRef } from '@cs/ledger';
import { defaultJobOptions, type JobEvent, jobEventsChannel, jobIdsOf, partitionQueueName } from '@cs/queue';
import { type Job, Queue, Worker } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';

export interface ConsumerOptions {
  partition: number;
  prefix: string;
  redis: Redis;
  logger: Logger;
  batchSize: number;
  lockDurationMs: number;
  stalledIntervalMs: number;
  /** Applies the named jobs; outcomes by job id. */
  processBatch: (jobs: readonly JobRef[]) => Promise<Map<string, JobOutcome>>;
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
  private stopped = false;

  constructor(private readonly options: ConsumerOptions) {
    const name = partitionQueueName(options.partition);
    this.queue = new Queue(name, { connection: options.redis, prefix: options.prefix, defaultJobOptions });
    this.queue.on('error', (err) => options.logger.warn({ err, partition: options.partition }, 'queue error'));
    this.worker = new Worker(name, (message) => this.hold(message), {
      connection: options.redis,
      prefix: options.prefix,
      autorun: false,
      concurrency: options.batchSize,
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
  }

  /** Stops taking jobs, finishes the batch in hand, closes. */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.worker.close();
    await this.queue.close();
  }

  /** Jobs that are queued in Redis, for the requeue check and metrics. */
  get bullQueue(): Queue {
    return this.queue;
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
        setImmediate(() => void this.drain());
      }
    });
  }

  private async drain(): Promise<void> {
    try {
      while (this.held.length > 0) {
        const batch = this.takeBatch();
        const jobs = batch.flatMap((h) => h.jobs);
        // Not awaited: one connection keeps the events in order, and the batch need not wait.
        void this.publish(jobs.map((j) => ({ job_id: j.id, status: 'processing' })));
        try {
          const outcomes = await this.options.processBatch(jobs);
          const committedAt = Date.now();
          const events: JobEvent[] = [];
          for (const held of batch) {
            for (const { id } of held.jobs) {
              const o = outcomes.get(id);
              // A message naming no job of this partition announces nothing: there is no change.
              if (!o || o.ignored) continue;
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
        } catch (error) {
          for (const h of batch) h.reject(error);
        }
      }
    } finally {
      this.draining = false;
    }
  }

  /** The oldest held messages, up to about `batchSize` jobs (always at least one message). */
  private takeBatch(): Held[] {
    let count = 0;
    let taken = 0;
    while (
      taken < this.held.length &&
      (taken === 0 || count + (this.held[taken]?.jobs.length ?? 0) <= this.options.batchSize)
    ) {
      count += this.held[taken]?.jobs.length ?? 0;
      taken++;
    }
    return this.held.splice(0, taken);
  }

  /** The jobs a message names, as jobs of this partition; a message naming none is logged and left. */
  private unpack(message: Job): JobRef[] {
    const ids = jobIdsOf(message.data);
    if (ids.length === 0) this.options.logger.error({ queueJobId: message.id }, 'queue message names no job');
    return ids.map((id) => ({ id, partition: this.options.partition }));
  }

  /** Tells API processes (waiting clients, event streams) what changed; best effort. */
  private async publish(events: JobEvent[]): Promise<void> {
    try {
      await this.options.redis.publish(jobEventsChannel(this.options.prefix), JSON.stringify(events));
    } catch (err) {
      this.options.logger.warn({ err }, 'could not publish job events');
    }
  }
}
