import { Socket } from 'node:net';
import type { ClusterNode } from './redis-cluster.ts';

/** True when something accepts TCP connections at the URL's host and port. */
export function isReachable(url: string, defaultPort: number, timeoutMs = 1500): Promise<boolean> {
  const { hostname, port } = new URL(url);
  return new Promise((resolve) => {
    const socket = new Socket();
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('error', () => done(false));
    socket.connect(Number(port) || defaultPort, hostname.replace(/^\[|\]$/g, ''), () => done(true));
  });
}

/** The address Redis is checked at: the first cluster node when there is a cluster, else REDIS_URL. */
function redisAddress(config: RedisOfConfig): { url: string; variable: string } {
  const node = config.REDIS_CLUSTER_NODES?.[0];
  if (!node) return { url: config.REDIS_URL, variable: 'REDIS_URL' };
  const host = node.host.includes(':') ? `[${node.host}]` : node.host;
  return { url: `redis://${host}:${node.port}`, variable: 'REDIS_CLUSTER_NODES' };
}

type RedisOfConfig = { REDIS_URL: string; REDIS_CLUSTER_NODES?: ReadonlyArray<ClusterNode> };

/** Exits with one line when PostgreSQL or Redis does not answer, instead of a stack trace later. */
export async function requireServices(config: { DATABASE_URL: string } & RedisOfConfig, who: string): Promise<void> {
  const redisAt = redisAddress(config);
  const [pg, redis] = await Promise.all([isReachable(config.DATABASE_URL, 5432), isReachable(redisAt.url, 6379)]);
  for (const [ok, name, url, variable] of [
    [pg, 'PostgreSQL', config.DATABASE_URL, 'DATABASE_URL'],
    [redis, 'Redis', redisAt.url, redisAt.variable],
  ] as const) {
    if (!ok) {
      const { host } = new URL(url);
      console.error(`${who}: ${name} is unreachable at ${host}; start it or set ${variable}`);
      process.exit(1);
    }
  }
}
