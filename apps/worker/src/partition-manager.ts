import { randomUUID } from 'node:crypto';
import { partitionLeaseKey } from '@cs/queue';
import type { Redis } from 'ioredis';
import type { Logger } from 'pino';

/** Renews the lease only if this process still holds it. */
const RENEW = `if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end`;
/** Releases the lease only if this process still holds it. */
const RELEASE = `if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end`;

export interface Consumer {
  start(): Promise<void>;
  stop(): Promise<void>;
}

export interface PartitionManagerOptions {
  redis: Redis;
  prefix: string;
  partitions: number;
  leaseMs: number;
  logger: Logger;
  createConsumer: (partition: number) => Consumer;
}

/**
 * Decides which partitions this process consumes. A partition is consumed by the one process
 * holding its lease in Redis, renewed every third of its life; a process that dies stops
 * renewing and its partitions are taken over once the lease expires. Live processes register
 * themselves, and each holds about its fair share (partitions / live processes), so adding a
 * worker process spreads the load.
 *
 * The lease is for throughput and order, not for money: if two processes ever consumed one
 * partition at once (a paused process whose lease expired), row locks and the jobs' final-state
 * gate in PostgreSQL still apply each job once and never overdraw.
 */
export class PartitionManager {
  readonly id = randomUUID();
  private readonly owned = new Map<number, Consumer>();
  private timer: NodeJS.Timeout | undefined;
  private ticking: Promise<void> = Promise.resolve();
  private stopped = false;

  constructor(private readonly options: PartitionManagerOptions) {}

  get ownedPartitions(): number[] {
    return [...this.owned.keys()].sort((a, b) => a - b);
  }

  start(): void {
    const schedule = () => {
      this.ticking = this.tick()
        .catch((err: unknown) => this.options.logger.warn({ err }, 'partition lease tick failed'))
        .finally(() => {
          if (!this.stopped) this.timer = setTimeout(schedule, Math.floor(this.options.leaseMs / 3));
        });
    };
    schedule();
  }

  /** Stops every consumer (each finishes its batch in hand) and releases the leases at once. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.ticking;
    await Promise.all([...this.owned.keys()].map((p) => this.release(p)));
    await this.options.redis.zrem(this.registryKey, this.id).catch(() => 0);
  }

  private get registryKey(): string {
    return `${this.options.prefix}:workers`;
  }

  private async tick(): Promise<void> {
    const { redis, leaseMs, partitions } = this.options;
    const now = Date.now();
    const registry = await redis
      .multi()
      .zadd(this.registryKey, now + 2 * leaseMs, this.id)
      .zremrangebyscore(this.registryKey, '-inf', now)
      .zcard(this.registryKey)
      .exec();
    const live = Math.max(1, Number(registry?.[2]?.[1] ?? 1));
    const fairShare = Math.ceil(partitions / live);

    await this.renewOwned();
    if (this.stopped) return;

    if (this.owned.size > fairShare) {
      // Give one back per tick, so shares settle without every process moving at once.
      const surplus = this.ownedPartitions.at(-1);
      if (surplus !== undefined) await this.release(surplus);
      return;
    }
    // Start at a point of our own, so processes starting together reach for different partitions.
    const offset = Number.parseInt(this.id.slice(0, 8), 16) % partitions;
    for (let i = 0; i < partitions && this.owned.size < fairShare && !this.stopped; i++) {
      const partition = (offset + i) % partitions;
      if (this.owned.has(partition)) continue;
      const acquired = await redis.set(partitionLeaseKey(this.options.prefix, partition), this.id, 'PX', leaseMs, 'NX');
      if (acquired === 'OK') await this.take(partition);
    }
  }

  private async renewOwned(): Promise<void> {
    const { redis, prefix, leaseMs } = this.options;
    const partitions = this.ownedPartitions;
    if (partitions.length === 0) return;
    const pipeline = redis.pipeline();
    for (const p of partitions) pipeline.eval(RENEW, 1, partitionLeaseKey(prefix, p), this.id, leaseMs);
    const results = (await pipeline.exec()) ?? [];
    await Promise.all(
      partitions.map(async (p, i) => {
        const [error, renewed] = results[i] ?? [null, 0];
        if (!error && renewed === 1) return;
        this.options.logger.warn({ partition: p }, 'partition lease lost; stopping its consumer');
        const consumer = this.owned.get(p);
        this.owned.delete(p);
        await consumer?.stop();
      }),
    );
  }

  private async take(partition: number): Promise<void> {
    const consumer = this.options.createConsumer(partition);
    this.owned.set(partition, consumer);
    this.options.logger.info({ partition }, 'partition acquired');
    // Not awaited: starting may wait out a dead owner's job locks, and renewals must go on meanwhile.
    consumer.start().catch((err: unknown) => this.options.logger.error({ err, partition }, 'consumer failed to start'));
  }

  private async release(partition: number): Promise<void> {
    const consumer = this.owned.get(partition);
    this.owned.delete(partition);
    await consumer?.stop();
    await this.options.redis
      .eval(RELEASE, 1, partitionLeaseKey(this.options.prefix, partition), this.id)
      .catch(() => 0);
    this.options.logger.info({ partition }, 'partition released');
  }
}
