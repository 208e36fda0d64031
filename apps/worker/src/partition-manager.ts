import { randomUUID } from 'node:crypto';
import type { RedisClient } from '@cs/queue';
import { partitionLeaseKey } from '@cs/queue';
import type { Logger } from 'pino';

/** Renews the lease only if this process still holds it. */
const RENEW = `if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end`;
/** Releases the lease only if this process still holds it. */
const RELEASE = `if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) else return 0 end`;

export interface Consumer {
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Stops at once, without finishing the batch in hand; resolves once that batch has ended. */
  abandon(): Promise<void>;
}

export interface PartitionManagerOptions {
  redis: RedisClient;
  prefix: string;
  partitions: number;
  leaseMs: number;
  /** Whether PostgreSQL answers this process (see DatabaseProbe); omitted, it is taken to. */
  database?: { readonly answeredAt: number; readonly outOfReach: boolean };
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
  /**
   * Partitions given up whose consumer is still finishing its batch in hand. Their lease is kept
   * (renewed) until it has, so the next owner never starts while this process still applies jobs;
   * and giving one up never holds up the renewal of the others, however long that batch takes
   * (a lock wait, PostgreSQL down).
   */
  private readonly stopping = new Map<number, Promise<void>>();
  /**
   * Partitions given up while PostgreSQL was out of reach, whose consumer's batch in hand has not
   * ended yet. Their leases are not renewed, and this process does not take them again until then.
   */
  private readonly abandoned = new Map<number, Promise<void>>();
  private timer: NodeJS.Timeout | undefined;
  private ticking: Promise<void> = Promise.resolve();
  private stopped = false;
  /**
   * Renewals run on a timer of their own, each lease on its own, so that nothing else can hold
   * them up: on a Redis Cluster whose master is failing over, a command to that master takes
   * seconds to fail. When the registry update or the slowest renewal held up the others, the
   * leases on the healthy masters expired too, and every worker gave up all its partitions.
   */
  private renewTimer: NodeJS.Timeout | undefined;
  private readonly renewing = new Set<number>();

  constructor(private readonly options: PartitionManagerOptions) {}

  get ownedPartitions(): number[] {
    return [...this.owned.keys()].sort((a, b) => a - b);
  }

  start(): void {
    const every = Math.floor(this.options.leaseMs / 3);
    const schedule = () => {
      const startedAt = Date.now();
      this.ticking = this.tick(startedAt)
        .catch((err: unknown) => this.options.logger.warn({ err }, 'partition lease tick failed'))
        .finally(() => {
          // Every third of a lease from the start of the last tick, however long it took: over a
          // slow link to Redis a tick takes round trips, and they must not add up past a lease.
          if (!this.stopped) this.timer = setTimeout(schedule, Math.max(0, every - (Date.now() - startedAt)));
        });
    };
    schedule();
    // While stopping, renewals go on for the consumers that are still finishing (see stop()).
    this.renewTimer = setInterval(() => this.renewLeases(), every);
  }

  /** Stops every consumer (each finishes its batch in hand) and releases the leases. */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const partition of this.ownedPartitions) this.release(partition);
    await Promise.all(this.stopping.values());
    await Promise.all(this.abandoned.values());
    clearInterval(this.renewTimer);
    clearTimeout(this.timer);
    await this.ticking;
    clearTimeout(this.timer);
    await this.options.redis.zrem(this.registryKey, this.id).catch(() => 0);
    await this.options.redis.zrem(this.answeredKey, this.id).catch(() => 0);
  }

  private get registryKey(): string {
    return `${this.options.prefix}:workers`;
  }

  /** When PostgreSQL last answered each process, as each last reported it. */
  private get answeredKey(): string {
    return `${this.options.prefix}:database-answered`;
  }

  private async tick(startedAt = Date.now()): Promise<void> {
    const { redis, leaseMs, partitions } = this.options;
    if (this.stopped) return;
    const now = Date.now();
    const answeredAt = this.options.database?.answeredAt ?? now;
    if (this.options.database?.outOfReach && (await this.othersReachDatabase(answeredAt))) {
      await this.giveUpAll();
      return;
    }
    // A process counts as live for as long as its leases would last: a dead one drops out of the
    // fair share just as its partitions come free, so the survivors may take them at once instead
    // of leaving them unconsumed until a longer registration runs out.
    // Two transactions, sent at once: on a Redis Cluster the two keys live in different slots.
    const [registry] = await Promise.all([
      redis
        .multi()
        .zadd(this.registryKey, now + leaseMs, this.id)
        .zremrangebyscore(this.registryKey, '-inf', now)
        .zcard(this.registryKey)
        .exec(),
      redis
        .multi()
        .zadd(this.answeredKey, answeredAt, this.id)
        .zremrangebyscore(this.answeredKey, '-inf', now - 10 * leaseMs)
        .exec(),
    ]);
    const live = Math.max(1, Number(registry?.[2]?.[1] ?? 1));
    const fairShare = Math.ceil(partitions / live);
    if (this.stopped) return;

    if (this.owned.size > fairShare) {
      // Give one back per tick, so shares settle without every process moving at once.
      const surplus = this.ownedPartitions.at(-1);
      if (surplus !== undefined) this.release(surplus);
      return;
    }
    // Start at a point of our own, so processes starting together reach for different partitions.
    const offset = Number.parseInt(this.id.slice(0, 8), 16) % partitions;
    for (let i = 0; i < partitions && this.owned.size < fairShare && !this.stopped; i++) {
      // One round trip per partition tried: over a slow link to Redis, trying them all would hold
      // up the next renewal past the life of the leases held. Those come first; the rest waits
      // for the next tick.
      if (Date.now() - startedAt > leaseMs / 3) break;
      const partition = (offset + i) % partitions;
      if (this.owned.has(partition) || this.stopping.has(partition) || this.abandoned.has(partition)) continue;
      const acquired = await redis.set(partitionLeaseKey(this.options.prefix, partition), this.id, 'PX', leaseMs, 'NX');
      if (acquired === 'OK') this.take(partition);
    }
  }

  /**
   * True when another process heard from PostgreSQL since it stopped answering this one: the fault
   * is this process's (its host is cut off from PostgreSQL), not PostgreSQL's. When PostgreSQL itself
   * is down or restarting, nobody has heard from it since, and every process keeps its partitions as
   * before: nobody could apply them anyway, and they resume at once when it is back.
   */
  private async othersReachDatabase(answeredAt: number): Promise<boolean> {
    const since = `(${answeredAt + Math.floor(this.options.leaseMs / 3)}`;
    const heard = await this.options.redis.zrangebyscore(this.answeredKey, since, '+inf');
    return heard.some((id) => id !== this.id);
  }

  /**
   * PostgreSQL does not answer this process while Redis does, and others reach it: this process
   * could renew its leases for ever and apply nothing. It leaves the registry, so the others count
   * it out of their fair share, and gives its partitions up the way a dead process would: their
   * leases and the locks of the messages in hand run out, and the next owner takes those messages
   * back first. It registers again once PostgreSQL answers it.
   */
  private async giveUpAll(): Promise<void> {
    await this.options.redis.zrem(this.registryKey, this.id);
    for (const partition of this.ownedPartitions) this.abandon(partition);
  }

  /** Gives a partition up without waiting for its batch in hand, nor renewing its lease meanwhile. */
  private abandon(partition: number): void {
    const consumer = this.owned.get(partition);
    this.owned.delete(partition);
    const { logger } = this.options;
    logger.warn({ partition }, 'PostgreSQL out of reach; partition given up');
    const done = (async () => {
      await consumer?.abandon().catch((err: unknown) => logger.error({ err, partition }, 'consumer failed to stop'));
    })().finally(() => this.abandoned.delete(partition));
    this.abandoned.set(partition, done);
  }

  /**
   * Renews the leases of the partitions consumed and of those whose consumer is still stopping,
   * each by a command of its own (a cluster pipeline must stay in one slot, and each lease sits in
   * its partition's slot). A renewal still waiting for its answer is not sent again: its master is
   * unreachable or failing over, and the others need not wait for it. A failed renewal keeps the
   * partition (Redis did not answer, so nothing says the lease is gone); only an answer that the
   * lease is no longer ours stops its consumer.
   */
  private renewLeases(): void {
    const { redis, prefix, leaseMs, logger } = this.options;
    for (const p of [...this.owned.keys(), ...this.stopping.keys()]) {
      if (this.renewing.has(p)) continue;
      this.renewing.add(p);
      redis
        .eval(RENEW, 1, partitionLeaseKey(prefix, p), this.id, leaseMs)
        .then((renewed) => {
          if (renewed === 1 || !this.owned.has(p)) return;
          logger.warn({ partition: p }, 'partition lease lost; stopping its consumer');
          this.release(p);
        })
        .catch((err: unknown) => logger.debug({ err, partition: p }, 'partition lease renewal failed'))
        .finally(() => this.renewing.delete(p));
    }
  }

  private take(partition: number): void {
    const consumer = this.options.createConsumer(partition);
    this.owned.set(partition, consumer);
    this.options.logger.info({ partition }, 'partition acquired');
    // Not awaited: starting may wait out a dead owner's job locks, and renewals must go on meanwhile.
    consumer.start().catch((err: unknown) => this.options.logger.error({ err, partition }, 'consumer failed to start'));
  }

  /**
   * Stops consuming a partition without waiting: the consumer finishes its batch in hand in the
   * background, its lease renewed meanwhile, and only then is the lease released.
   */
  private release(partition: number): void {
    const consumer = this.owned.get(partition);
    this.owned.delete(partition);
    const { redis, prefix, logger } = this.options;
    const done = (async () => {
      await consumer?.stop().catch((err: unknown) => logger.error({ err, partition }, 'consumer failed to stop'));
      await redis.eval(RELEASE, 1, partitionLeaseKey(prefix, partition), this.id).catch(() => 0);
      logger.info({ partition }, 'partition released');
    })().finally(() => this.stopping.delete(partition));
    this.stopping.set(partition, done);
  }
}
