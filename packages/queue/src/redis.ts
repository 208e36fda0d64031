import { Redis, type RedisOptions } from 'ioredis';

/**
 * A Redis connection. `failFast` is for request paths: commands fail at once while Redis is down
 * (the API answers 503) instead of queueing in memory until a client times out. Workers keep
 * BullMQ's requirement of unlimited retries per request.
 */
export function createRedis(url: string, { failFast = false }: { failFast?: boolean } = {}): Redis {
  const options: RedisOptions = failFast
    ? { maxRetriesPerRequest: 1, enableOfflineQueue: false, connectTimeout: 2000 }
    : { maxRetriesPerRequest: null, enableOfflineQueue: true };
  return new Redis(url, {
    ...options,
    lazyConnect: false,
    retryStrategy: (attempt) => Math.min(attempt * 200, 2000),
  });
}
