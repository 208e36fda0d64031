import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { z } from 'zod';
import { type SendResponse, type StatusResponse, topUpRequest, topUpsPath } from './protocol.ts';
import { type SimulatedSend, type SimulatedStatus, Simulator, type SimulatorStats } from './simulator.ts';

export interface ProviderSimOptions {
  /** 0: a free port. */
  port?: number;
  /** Default 127.0.0.1: the simulator is for tests and demos, not for a network. */
  host?: string;
  apiKey: string;
  /** How long a "times out" send is held open, unanswered, before its connection is dropped. */
  hangMs?: number;
  /** The simulator to serve; a new one by default. */
  simulator?: Simulator;
}

export interface ProviderSim {
  url: string;
  simulator: Simulator;
  close(): Promise<void>;
}

/** `GET /sim/stats`: the simulator's counts, and the calls refused for an outage. */
export interface ProviderSimStats extends SimulatorStats {
  refused: number;
}

const outageBody = z.object({ ms: z.number().int().min(0).max(3_600_000) });
const latencyBody = outageBody;
const settleBody = z.object({ reference: z.string().min(1), status: z.enum(['delivered', 'failed']) });

/** Bodies larger than this are refused: every request of the protocol is a few hundred bytes. */
const MAX_BODY_BYTES = 16 * 1024;

class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
  ) {
    super(code);
  }
}

/**
 * The simulator served over the JSON protocol of `PROVIDER=http` (protocol.ts): what
 * `npm run provider:sim` runs, and what the HTTP tests talk to. One simulator for every worker
 * process, unlike the in-process one. Besides `/v1`, control endpoints (same key) let a test or
 * a demo make the provider misbehave: `POST /sim/outage {ms}` (every /v1 call answers 503 and
 * records nothing for that long), `POST /sim/latency {ms}` (each /v1 answer that much later; the
 * work is done before the wait, so a caller that times out has still been served),
 * `POST /sim/settle {reference, status}`, `GET /sim/stats` (ProviderSimStats).
 */
export async function startProviderSim(options: ProviderSimOptions): Promise<ProviderSim> {
  const simulator = options.simulator ?? new Simulator();
  const hangMs = options.hangMs ?? 60_000;
  const host = options.host ?? '127.0.0.1';
  const expectedKey = digest(options.apiKey);
  let outageUntil = 0;
  let latencyMs = 0;
  /** /v1 calls answered 503 for an outage: a caller's calls while the provider was down. */
  let refused = 0;

  // Everything that could keep the process alive after close: open connections, held requests'
  // and delayed answers' timers.
  const sockets = new Set<Socket>();
  const timers = new Set<NodeJS.Timeout>();
  const later = (ms: number, action: () => void) => {
    const timer = setTimeout(() => {
      timers.delete(timer);
      action();
    }, ms);
    timers.add(timer);
  };
  const wait = (ms: number) => new Promise<void>((resolve) => (ms > 0 ? later(ms, resolve) : resolve()));

  async function handle(request: IncomingMessage, response: ServerResponse): Promise<void> {
    if (!isAuthorised(request.headers.authorization, expectedKey)) throw new HttpError(401, 'unauthorized');
    const { pathname } = new URL(request.url ?? '/', 'http://sim');
    const route = `${request.method} ${pathname}`;

    if (pathname.startsWith('/v1/')) {
      const down = Date.now() < outageUntil;
      if (down) refused++;
      const answer = down ? null : await serveProtocol(request, route, pathname);
      if (answer === 'hold') {
        // Recorded (and perhaps delivered), never answered: the caller's timeout fires first, or
        // the dropped connection tells it nothing either.
        later(hangMs, () => request.socket.destroy());
        return;
      }
      await wait(latencyMs);
      if (answer === null) return reply(response, 503, { error: 'outage' });
      return reply(response, answer.status, answer.body);
    }

    switch (route) {
      case 'POST /sim/outage': {
        const { ms } = parse(outageBody, await readJson(request));
        outageUntil = Date.now() + ms;
        return reply(response, 200, { outage_ms: ms });
      }
      case 'POST /sim/latency': {
        latencyMs = parse(latencyBody, await readJson(request)).ms;
        return reply(response, 200, { latency_ms: latencyMs });
      }
      case 'POST /sim/settle': {
        const { reference, status } = parse(settleBody, await readJson(request));
        const result = simulator.settle(reference, status);
        if (result === 'not_found') throw new HttpError(404, 'not_found');
        if (result === 'already_delivered') throw new HttpError(409, 'already_delivered');
        return reply(response, 200, { reference, status });
      }
      case 'GET /sim/stats':
        return reply(response, 200, { ...simulator.stats(), refused } satisfies ProviderSimStats);
      default:
        throw new HttpError(404, 'no_such_route');
    }
  }

  async function serveProtocol(
    request: IncomingMessage,
    route: string,
    pathname: string,
  ): Promise<{ status: number; body: unknown } | 'hold'> {
    if (route === `POST ${topUpsPath}`) {
      const body = parse(topUpRequest, await readJson(request));
      const topUp = { reference: body.reference, phoneNumber: body.phone_number, amount: BigInt(body.amount) };
      const answer = await simulator.send(topUp);
      if (answer.kind === 'no_answer') return 'hold';
      return { status: 200, body: sendBody(topUp.reference, answer) };
    }
    const prefix = `${topUpsPath}/`;
    if (request.method === 'GET' && pathname.startsWith(prefix) && pathname.length > prefix.length) {
      const reference = decodeReference(pathname.slice(prefix.length));
      const answer = simulator.status(reference);
      if (answer.kind === 'not_found') return { status: 404, body: { status: 'not_found' } };
      return { status: 200, body: statusBody(reference, answer) };
    }
    throw new HttpError(404, 'no_such_route');
  }

  const server = createServer((request, response) => {
    handle(request, response).catch((error: unknown) => {
      const status = error instanceof HttpError ? error.status : 500;
      const code = error instanceof HttpError ? error.code : 'internal_error';
      reply(response, status, { error: code });
    });
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${port}`;

  return {
    url,
    simulator,
    async close() {
      for (const timer of timers) clearTimeout(timer);
      timers.clear();
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      // Held requests and keep-alive connections would otherwise keep close() waiting.
      for (const socket of sockets) socket.destroy();
      await closed;
    },
  };
}

function sendBody(reference: string, answer: Exclude<SimulatedSend, { kind: 'no_answer' }>): SendResponse {
  switch (answer.kind) {
    case 'delivered':
    case 'pending':
      return { reference, status: answer.kind, provider_reference: answer.providerReference, reason: null };
    case 'declined':
      return { reference, status: 'declined', provider_reference: null, reason: answer.reason };
  }
}

function statusBody(reference: string, answer: Exclude<SimulatedStatus, { kind: 'not_found' }>): StatusResponse {
  switch (answer.kind) {
    case 'delivered':
    case 'pending':
      return { reference, status: answer.kind, provider_reference: answer.providerReference, reason: null };
    case 'failed':
      return { reference, status: 'failed', provider_reference: null, reason: answer.reason };
  }
}

function reply(response: ServerResponse, status: number, body: unknown): void {
  // The caller may have gone (timed out) while the answer waited.
  if (response.destroyed || response.headersSent) return;
  response.writeHead(status, { 'content-type': 'application/json' });
  response.end(JSON.stringify(body));
}

const digest = (value: string) => createHash('sha256').update(value).digest();

function isAuthorised(header: string | undefined, expected: Buffer): boolean {
  const match = /^Bearer (.+)$/.exec(header ?? '');
  // Compared as digests, in constant time: the key is a secret even in a simulator.
  return match?.[1] !== undefined && timingSafeEqual(digest(match[1]), expected);
}

async function readJson(request: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of request as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > MAX_BODY_BYTES) throw new HttpError(413, 'body_too_large');
    chunks.push(chunk);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw new HttpError(400, 'invalid_json');
  }
}

function parse<T>(schema: z.ZodType<T>, value: unknown): T {
  const parsed = schema.safeParse(value);
  if (!parsed.success) throw new HttpError(400, 'invalid_request');
  return parsed.data;
}

function decodeReference(encoded: string): string {
  try {
    return decodeURIComponent(encoded);
  } catch {
    throw new HttpError(400, 'invalid_reference');
  }
}
