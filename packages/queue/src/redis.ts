import { Cluster, type ClusterOptions, Redis, type RedisOptions } from 'ioredis';

/** A connection to a single Redis server or to a Redis Cluster: BullMQ and our own keys take either. */
export type RedisClient = Redis | Cluster;

/** Where Redis is: one server at `url`, or a cluster found from `clusterNodes`. */
export interface RedisTarget {
  /** `redis://[user:password@]host:port`; with a cluster, only its credentials are used. */
  url: string;
  /** Any of the cluster's nodes; the client learns the rest from them. */
  clusterNodes?: ReadonlyArray<{ host: string; port: number }>;
}

/**
 * A Redis connection. `failFast` is for request paths: commands fail at once while Redis is down
 * (the API answers 503) instead of queueing in memory until a client times out. Workers keep
 * BullMQ's requirement of unlimited retries per request.
 */
export function createRedis(target: RedisTarget, { failFast = false }: { failFast?: boolean } = {}): RedisClient {
  const perRequest: RedisOptions = failFast
    ? { maxRetriesPerRequest: 1, connectTimeout: 2000 }
    : { maxRetriesPerRequest: null };
  const retryStrategy = (attempt: number) => Math.min(attempt * 200, 2000);
  if (!target.clusterNodes?.length) {
    return new Redis(target.url, { ...perRequest, enableOfflineQueue: !failFast, lazyConnect: false, retryStrategy });
  }
  const { username, password } = new URL(target.url);
  const options: ClusterOptions = {
    redisOptions: {
      ...perRequest,
      ...(username ? { username: decodeURIComponent(username) } : {}),
      ...(password ? { password: decodeURIComponent(password) } : {}),
    },
    // Until the client has learnt the slots it has no node to send to; a request path fails at
    // once then, as with a single server that is down.
    enableOfflineQueue: !failFast,
    clusterRetryStrategy: retryStrategy,
    // A failover takes the cluster's node timeout plus an election: keep asking meanwhile
    // instead of failing the command on the first CLUSTERDOWN or refused connection.
    retryDelayOnClusterDown: 200,
    retryDelayOnFailover: 200,
    retryDelayOnTryAgain: 200,
    slotsRefreshTimeout: 2000,
  };
  return new Cluster([...target.clusterNodes], options);
}

/** The target of a process's configuration: the cluster when `REDIS_CLUSTER_NODES` is set. */
export function redisTargetOf(config: {
  REDIS_URL: string;
  REDIS_CLUSTER_NODES?: ReadonlyArray<{ host: string; port: number }>;
}): RedisTarget {
  return { url: config.REDIS_URL, clusterNodes: config.REDIS_CLUSTER_NODES };
}
