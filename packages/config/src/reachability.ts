import { Socket } from 'node:net';

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

/** Exits with one line when PostgreSQL or Redis does not answer, instead of a stack trace later. */
export async function requireServices(config: { DATABASE_URL: string; REDIS_URL: string }, who: string): Promise<void> {
  const [pg, redis] = await Promise.all([isReachable(config.DATABASE_URL, 5432), isReachable(config.REDIS_URL, 6379)]);
  for (const [ok, name, url] of [
    [pg, 'PostgreSQL', config.DATABASE_URL],
    [redis, 'Redis', config.REDIS_URL],
  ] as const) {
    if (!ok) {
      const { host } = new URL(url);
      console.error(
        `${who}: ${name} is unreachable at ${host}; start it or set ${name === 'Redis' ? 'REDIS_URL' : 'DATABASE_URL'}`,
      );
      process.exit(1);
    }
  }
}
