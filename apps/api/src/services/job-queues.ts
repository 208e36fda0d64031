import type { JobEvent, RedisClient } from '@cs/queue';
import { deliver, openPartitionQueue, partitionOf, publishJobEvents } from '@cs/queue';
import type { Queue } from 'bullmq';
import type { Logger } from 'pino';

/** The producer side of the partition queues: one BullMQ Queue per partition, made on first use. */
export class JobQueues {
  private readonly queues = new Map<number, Queue>();

  constructor(
    private readonly redis: RedisClient,
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
      queue = openPartitionQueue(this.redis, this.prefix, partition, (err) =>
        this.logger.warn({ err: err.message, partition }, 'queue error'),
      );
      this.queues.set(partition, queue);
    }
    return queue;
  }

  /**
   * Enqueues recorded jobs of one partition, oldest first, as one message naming them under the
   * given id (adding it twice leaves one message).
   */
  async deliver(partition: number, queueJobId: string, jobIds: string[]): Promise<void> {
    await deliver(this.queue(partition), [{ id: queueJobId, jobIds }]);
  }

  /**
   * Tells every API process of job changes made here rather than by a worker (an operator's
   * decision on a delivery): waiting clients, event streams and the metrics hear of it as of any
   * other. Best effort, as the workers' own: the record is PostgreSQL.
   */
  publish(events: JobEvent[]): Promise<void> {
    return publishJobEvents(this.redis, this.prefix, events, this.logger);
  }

  /** BullMQ's view of a job still unfinished in PostgreSQL: is a worker holding its message right now? */
  async isActive(partition: number, queueJobId: string): Promise<boolean> {
    return (await this.queue(partition).getJobState(queueJobId)) === 'active';
  }

  async close(): Promise<void> {
    await Promise.all([...this.queues.values()].map((q) => q.close()));
  }
}
