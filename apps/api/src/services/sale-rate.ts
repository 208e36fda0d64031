import { partitionHashTag, type RedisClient } from '@cs/queue';
import type { Logger } from 'pino';
import { RateLimiterRedis, RateLimiterRes } from 'rate-limiter-flexible';
import { ApiError, rateLimited } from '../errors.ts';

/**
 * Sales per second per seller, for sales a seller submits with its own key, counted across every
 * API process in Redis (one atomic script per sale, on the seller's own key, so it works the same
 * on a Redis Cluster; the key carries the hash tag of the seller's partition, so it lives on the
 * master of that partition's queue, and a failover elsewhere never holds the seller's sales up). The window is fixed: a second from the seller's first sale in it, so a
 * seller may get up to twice the limit across the edge of two windows.
 *
 * A sale it cannot count (Redis unreachable) is refused with 503, as the queue would refuse it:
 * nothing is recorded, rather than a job accepted past a limit nobody could check.
 */
export class SaleRate {
  private readonly limiter: RateLimiterRedis | null;

  constructor(
    redis: RedisClient,
    prefix: string,
    /** Sales a second; 0 is no limit. */
    private readonly perSecond: number,
  ) {
    this.limiter =
      perSecond > 0
        ? new RateLimiterRedis({
            storeClient: redis,
            keyPrefix: `${prefix}:sale-rate`,
            points: perSecond,
            duration: 1,
          })
        : null;
  }

  /** Counts one sale of the seller: 429 past the limit, 503 when it cannot be counted. */
  async take(sellerId: string, partition: number, logger: Logger): Promise<void> {
    if (!this.limiter) return;
    const key = `${partitionHashTag(partition)}:${sellerId}`;
    const counted = await this.limiter.consume(key).catch((refused: unknown) => refused);
    if (counted instanceof RateLimiterRes) {
      if (counted.consumedPoints <= this.perSecond) return;
      throw rateLimited(
        `At most ${this.perSecond} sales a second per seller; nothing was done, retry later`,
        counted.msBeforeNext,
      );
    }
    logger.warn({ err: (counted as Error | null)?.message, sellerId }, 'sale rate cannot be counted');
    throw new ApiError('service_unavailable', 'The rate limiter is unavailable; nothing was done, retry later');
  }
}
