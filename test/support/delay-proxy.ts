import { createConnection, createServer, type Server, type Socket } from 'node:net';

/**
 * A TCP proxy that adds a delay to every chunk, each way: what netem would do to a link, for a
 * machine without the netem qdisc. Each chunk is written `delayMs` after it arrived, and never
 * before the chunk that arrived ahead of it in the same direction, so the byte stream is the
 * same, only later. The delay can be changed while connections are open: a chunk keeps the delay
 * it arrived under, and a chunk arriving after a switch to 0 still waits for the ones queued
 * before it. A client's connections may be given a delay of their own (by the client's address),
 * so that one proxy in front of a server shared by many clients can slow one of them.
 */
export interface DelayProxy {
  /** Where clients connect. */
  host: string;
  port: number;
  /** The delay added to each direction, in ms, of a client without a delay of its own. */
  readonly delayMs: number;
  /**
   * Sets the delay of every client's connections, or, with `from`, of the connections of the
   * client at that address only (its own delay from then on, whatever the default).
   */
  setDelay(ms: number, from?: string): void;
  /**
   * The most a chunk was written later than due, in ms since the last `setDelay`: the proxy runs on
   * the test's event loop, and a busy loop adds to the delay asked for.
   */
  readonly maxLatenessMs: number;
  /** Connections accepted so far, and open now. */
  readonly accepted: number;
  readonly open: number;
  /** Closes the listener and destroys every connection. */
  close(): Promise<void>;
}

export interface DelayProxyOptions {
  listen: { host: string; port?: number };
  target: { host: string; port: number };
  delayMs?: number;
}

export async function startDelayProxy(options: DelayProxyOptions): Promise<DelayProxy> {
  let delayMs = options.delayMs ?? 0;
  const delayOf = new Map<string, number>();
  let accepted = 0;
  const lateness = { max: 0 };
  const sockets = new Set<Socket>();
  const track = (socket: Socket) => {
    sockets.add(socket);
    socket.once('close', () => sockets.delete(socket));
  };

  const server: Server = createServer({ allowHalfOpen: true }, (client) => {
    accepted++;
    const upstream = createConnection({ ...options.target, allowHalfOpen: true });
    track(client);
    track(upstream);
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    // An error is passed on as the other side's close, in its turn after the data ahead of it (see
    // delayedPipe); the handlers only keep an error from being thrown.
    client.on('error', () => {});
    upstream.on('error', () => {});
    const from = client.remoteAddress ?? '';
    const delay = () => delayOf.get(from) ?? delayMs;
    delayedPipe(client, upstream, delay, lateness);
    delayedPipe(upstream, client, delay, lateness);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.listen.port ?? 0, options.listen.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;

  return {
    host: options.listen.host,
    port,
    get delayMs() {
      return delayMs;
    },
    setDelay(ms: number, from?: string) {
      if (!Number.isFinite(ms) || ms < 0) throw new Error(`delay: not a duration: ${ms}`);
      if (from === undefined) delayMs = ms;
      else delayOf.set(from, ms);
      lateness.max = 0;
    },
    get maxLatenessMs() {
      return lateness.max;
    },
    get accepted() {
      return accepted;
    },
    get open() {
      return Math.floor(sockets.size / 2);
    },
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy();
        server.close(() => resolve());
      }),
  };
}

type Item = Buffer | 'end' | 'destroy';

/**
 * Copies `from` to `to`, each chunk written `delay()` ms after it arrived and in arrival order.
 * What happens to `from` is passed on in the same order, after its last chunk: its end (FIN) as
 * `to.end()`, its close without an end (an error, a reset) as `to.destroy()`. A full `to` pauses
 * `from` until it drains.
 */
function delayedPipe(from: Socket, to: Socket, delay: () => number, lateness: { max: number }): void {
  const queue: Array<{ at: number; item: Item }> = [];
  let scheduled = false;
  let lastAt = 0;
  let ended = false;

  const write = (item: Item) => {
    if (to.destroyed) return;
    if (item === 'end') {
      to.end();
      return;
    }
    if (item === 'destroy') {
      to.destroy();
      return;
    }
    if (!to.write(item) && !from.isPaused()) {
      from.pause();
      to.once('drain', () => from.resume());
    }
  };
  const flush = () => {
    scheduled = false;
    const now = Date.now();
    for (let head = queue[0]; head && head.at <= now; head = queue[0]) {
      queue.shift();
      lateness.max = Math.max(lateness.max, now - head.at);
      write(head.item);
    }
    const next = queue[0];
    if (next) schedule(next.at - now);
  };
  const schedule = (inMs: number) => {
    scheduled = true;
    setTimeout(flush, Math.max(1, inMs));
  };
  const push = (item: Item) => {
    const at = Math.max(Date.now() + delay(), lastAt);
    lastAt = at;
    // No delay and nothing queued ahead: straight through.
    if (queue.length === 0 && at <= Date.now()) {
      write(item);
      return;
    }
    queue.push({ at, item });
    // The head of the queue is always the earliest: a flush is due for it already unless this is it.
    if (!scheduled) schedule(at - Date.now());
  };

  from.on('data', (chunk: Buffer) => push(chunk));
  from.once('end', () => {
    ended = true;
    push('end');
  });
  from.once('close', () => {
    if (!ended) push('destroy');
  });
}
