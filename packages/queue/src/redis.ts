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

export interface ConnectionOptions {
  /**
   * For request paths: commands fail at once while Redis is down (the API answers 503) instead of
   * queueing in memory until a client times out. Workers keep BullMQ's requirement of unlimited
   * retries per request.
   */
  failFast?: boolean;
  /**
   * Commands issued in one turn of the event loop leave in one write (ioredis' auto-pipelining;
   * on a cluster, one per node), in the order issued. Where many independent commands go out at
   * once, a batch's messages to every partition, each write would otherwise be a system call and a
   * wake-up of Redis of its own. Only for connections whose commands are independent of each other
   * (the API's): an explicit pipeline leaves at once and may overtake auto-pipelined commands issued
   * before it in the same turn, which a BullMQ worker's sequence of commands cannot bear.
   */
  autoPipeline?: boolean;
}

/** A Redis connection to a single server or a cluster (see {@link ConnectionOptions}). */
export function createRedis(
  target: RedisTarget,
  { failFast = false, autoPipeline = false }: ConnectionOptions = {},
): RedisClient {
  const perRequest: RedisOptions = {
    ...(failFast ? { maxRetriesPerRequest: 1, connectTimeout: 2000 } : { maxRetriesPerRequest: null }),
    enableAutoPipelining: autoPipeline,
  };
  const retryStrategy = (attempt: number) => Math.min(attempt * 200, 2000);
  if (!target.clusterNodes?.length) {
    return new Redis(target.url, { ...perRequest, enableOfflineQueue: !failFast, lazyConnect: false, retryStrategy });
  }
  const { username, password } = new URL(target.url);
  const options: ClusterOptions = {
    enableAutoPipelining: autoPipeline,
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
    // Each retry, MOVED included, spends one of these. ioredis' 16 keep a command to a dead
    // master retrying for 2-3 s; on a request path that holds the whole batch of submissions in
    // hand, every partition's, not only that master's. Four give up in under a second, and only
    // that master's partitions answer 503 until its replica takes over.
    ...(failFast ? { maxRedirections: 4 } : {}),
    slotsRefreshTimeout: 2000,
  };
  return stayEnded(new Cluster([...target.clusterNodes], options));
}

/**
 * Works around ioredis 6.0.0: once a Cluster has ended (disconnect(), quit()), a command still
 * waiting in its failover retry queue can put a node back in the connection pool; when that node
 * drops, the pool's `drain` sets the status back from `end` to `close`, and the next retry then
 * waits in the offline queue of a cluster that nobody reconnects: the command never settles. BullMQ
 * 6.7.0 disconnects a Worker's blocking connection in `Worker.close()` and waits for its BZPOPMIN;
 * a Worker closed while a master fails over never finished closing, so its partition's lease was
 * never released and nobody consumed the partition again. Keeping `end` until the next
 * `connect()` makes such a retry fail at once ("Cluster is ended"). BullMQ's duplicates of this
 * client (each Worker's own connections) get the same treatment.
 */
function stayEnded(cluster: Cluster): Cluster {
  const internals = cluster as unknown as { status: string; setStatus(status: string): void };
  const setStatus = internals.setStatus.bind(cluster);
  internals.setStatus = (status) => {
    if (internals.status === 'end' && status === 'close') return;
    setStatus(status);
  };
  const duplicate = cluster.duplicate.bind(cluster);
  cluster.duplicate = ((...args: Parameters<Cluster['duplicate']>) =>
    stayEnded(duplicate(...args))) as Cluster['duplicate'];
  return cluster;
}

/** The target of a process's configuration: the cluster when `REDIS_CLUSTER_NODES` is set. */
export function redisTargetOf(config: {
  REDIS_URL: string;
  REDIS_CLUSTER_NODES?: ReadonlyArray<{ host: string; port: number }>;
}): RedisTarget {
  return { url: config.REDIS_URL, clusterNodes: config.REDIS_CLUSTER_NODES };
}
