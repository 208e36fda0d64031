import { createServer, type IncomingHttpHeaders, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { type Database, insertWebhookEvents, type WebhookEvent } from '@cs/db';
import { Webhook } from 'standardwebhooks';

/** One POST a receiver got, as it arrived. */
export interface Received {
  path: string;
  headers: IncomingHttpHeaders;
  body: string;
  at: number;
}

/**
 * What a receiver answers a request with: a status, at once or after a while, or `hang` (read
 * the request, never answer, as a dead or overloaded server does).
 */
export type Answer = number | { status: number; afterMs: number } | 'hang';

/**
 * A seller's webhook server for the tests, on loopback: it records every POST and answers as the
 * test tells it, per path (each test gets paths of its own: `/a`, `/slow`...).
 */
export class Receiver {
  readonly received: Received[] = [];
  private readonly server: Server;
  private readonly sockets = new Set<Socket>();
  private readonly answers = new Map<string, (request: Received, nth: number) => Answer>();
  private readonly hanging = new Set<ServerResponse>();

  private constructor() {
    this.server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (chunk: Buffer) => chunks.push(chunk));
      req.on('end', () => {
        const request: Received = {
          path: req.url ?? '/',
          headers: req.headers,
          body: Buffer.concat(chunks).toString('utf8'),
          at: Date.now(),
        };
        this.received.push(request);
        const nth = this.received.filter((r) => r.path === request.path).length;
        const answer = this.answers.get(request.path)?.(request, nth) ?? 200;
        if (answer === 'hang') {
          this.hanging.add(res);
          return;
        }
        const { status, afterMs } = typeof answer === 'number' ? { status: answer, afterMs: 0 } : answer;
        const reply = () => res.writeHead(status, { 'content-type': 'text/plain' }).end(status < 300 ? 'ok' : 'nope');
        if (afterMs > 0) {
          this.hanging.add(res);
          setTimeout(reply, afterMs);
        } else reply();
      });
    });
    this.server.on('connection', (socket) => {
      this.sockets.add(socket);
      socket.once('close', () => this.sockets.delete(socket));
    });
  }

  static async start(): Promise<Receiver> {
    const receiver = new Receiver();
    await new Promise<void>((resolve) => receiver.server.listen(0, '127.0.0.1', resolve));
    return receiver;
  }

  get baseUrl(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  /** The URL of a path, and how it answers (200 unless told). */
  url(path: string, answer?: (request: Received, nth: number) => Answer): string {
    if (answer) this.answers.set(path, answer);
    return `${this.baseUrl}${path}`;
  }

  answer(path: string, answer: (request: Received, nth: number) => Answer): void {
    this.answers.set(path, answer);
  }

  at(path: string): Received[] {
    return this.received.filter((r) => r.path === path);
  }

  /** Waits until `path` has received what `done` asks for. */
  async waitFor(path: string, done: (received: Received[]) => boolean, timeoutMs = 15_000): Promise<Received[]> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const got = this.at(path);
      if (done(got)) return got;
      if (Date.now() > deadline)
        throw new Error(
          `${path} received ${got.length} posts in ${timeoutMs} ms: ${got.map((r) => r.body).join('\n')}`,
        );
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  async stop(): Promise<void> {
    for (const res of this.hanging) res.destroy();
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}

/** The headers a receiver hands to `new Webhook(secret).verify(body, headers)`. */
export function signatureHeadersOf(request: Received): Record<string, string> {
  const header = (name: string) => String(request.headers[name] ?? '');
  return {
    'webhook-id': header('webhook-id'),
    'webhook-timestamp': header('webhook-timestamp'),
    'webhook-signature': header('webhook-signature'),
  };
}

/** Verifies a post as a receiver would, with standardwebhooks; returns the parsed event or throws. */
export function verified(
  request: Received,
  secret: string,
): { id: string; type: string; created_at: string; data: any } {
  return new Webhook(secret).verify(request.body, signatureHeadersOf(request)) as any;
}

export function verifies(request: Received, secret: string): boolean {
  try {
    verified(request, secret);
    return true;
  } catch {
    return false;
  }
}

/**
 * Writes events straight into the outbox, as the worker's transactions do, through a pool like
 * theirs (Drizzle's): for volume, and for events no API call makes.
 */
export async function writeEvents(db: Database, events: WebhookEvent[]): Promise<void> {
  await db.$client.begin((tx) => insertWebhookEvents(tx, events));
}
