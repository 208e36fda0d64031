import { defaultJobOptions, type JobPayload, partitionOf, partitionQueueName } from '@cs/queue';
import { Queue } from 'bullmq';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';

/** The producer side of the partition queues: one BullMQ Queue per partition, made on first use. */
export class JobQueues {
  private readonly queues = new Map<number, Queue>();

  constructor(
    private readonly redis: Redis,
    private readonly prefix: string,
    readonly partitions: number,
    private readonly logger: Logger,
  ) {}

  partitionOf(sellerId: string): number {
    return partitionOf(sellerId, this.partitions);
  }

  queue(partition: number): Queue {
    let queue = this.queues.get(partition);
    if (!queue) {
      queue = new Queue(partitionQueueName(partition), {
        connection: this.redis,
        prefix: this.prefix,
        defaultJobOptions,
      });
      queue.on('error', (err) => this.logger.warn({ err: err.message, partition }, 'queue error'));
      this.queues.set(partition, queue);
    }
    return queue;
  }

  /** Enqueues under each job's own id (adding a job twice leaves one job), in one round trip. */
  async addBulk(partition: number, payloads: JobPayload[]): Promise<void> {
    await this.queue(partition).addBulk(
      payloads.map((payload) => ({
        name: payload.type,
        data: payload,
        opts: { ...defaultJobOptions, jobId: payload.jobId },
      })),
    );
  }

  /** BullMQ's view of a job still unfinished in PostgreSQL: is a worker holding it right now? */
  async isActive(partition: number, jobId: string): Promise<boolean> {
    return (await this.queue(partition).getJobState(jobId)) === 'active';
  }

  async close(): Promise<void> {
    await Promise.all([...this.queues.values()].map((q) => q.close()));
  }
}
