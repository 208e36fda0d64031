import { randomUUID } from 'node:crypto';
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import {
  createProvider,
  DELIVERS_LATER_MS,
  type Provider,
  type ProviderSim,
  SIMULATOR_NUMBERS,
  Simulator,
  type SimulatorStats,
  startProviderSim,
  type TopUp,
} from '@cs/delivery';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

/**
 * The `PROVIDER=http` adapter against `startProviderSim`, over real sockets: API.md's phone-number
 * table end to end, and a provider that misbehaves (a wrong key, an outage, a slow answer, a
 * dropped connection, a malformed answer), none of which may ever read as a failure.
 */

const API_KEY = 'test-provider-key';
const TIMEOUT_MS = 200;
const HANG_MS = 400;

let now = Date.now();
let sim: ProviderSim;
let provider: Provider;

beforeAll(async () => {
  // The simulator's clock is the test's, so the 2 s of 09990000004 pass at once.
  sim = await startProviderSim({
    port: 0,
    apiKey: API_KEY,
    hangMs: HANG_MS,
    simulator: new Simulator({ clock: () => now, fastMs: 20 }),
  });
  provider = createProvider({ provider: 'http', url: sim.url, apiKey: API_KEY, timeoutMs: TIMEOUT_MS });
  // fetch loads its HTTP client on the first call, which on a busy machine can take longer than
  // the adapter's timeout: paid here, so the first test does not read it as the provider's.
  await stats();
});

afterAll(async () => {
  await provider?.close();
  await sim?.close();
});

const topUp = (phoneNumber: string): TopUp => ({ reference: randomUUID(), phoneNumber, amount: 50_000n });
const ordinary = () => topUp('09121234567');

/** A call to the simulator's control endpoints. */
async function control(method: 'GET' | 'POST', path: string, body?: unknown) {
  const response = await fetch(`${sim.url}${path}`, {
    method,
    headers: { authorization: `Bearer ${API_KEY}`, 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: response.status, body: (await response.json()) as unknown };
}
const stats = async () => (await control('GET', '/sim/stats')).body as SimulatorStats;
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

describe('the http provider against the simulator, by phone number', () => {
  it('delivers an ordinary number, and its status names the same provider reference', async () => {
    const sale = ordinary();
    const sent = await provider.send(sale);
    expect(sent).toEqual({ kind: 'delivered', providerReference: expect.stringMatching(/^sim-/) });
    const providerReference = sent.kind === 'delivered' ? sent.providerReference : '';
    expect(await provider.status(sale.reference)).toEqual({ kind: 'delivered', providerReference });
    expect((await stats()).deliveriesByReference[sale.reference]).toBe(1);
  });

  it('declines 09990000001 for certain, and its status says failed', async () => {
    const sale = topUp(SIMULATOR_NUMBERS.declines);
    expect(await provider.send(sale)).toEqual({ kind: 'declined', reason: 'number_not_supported' });
    expect(await provider.status(sale.reference)).toEqual({ kind: 'failed', reason: 'number_not_supported' });
    expect((await stats()).deliveriesByReference[sale.reference]).toBeUndefined();
  });

  it('times out on 09990000002, which was delivered all the same: its status says delivered', async () => {
    const sale = topUp(SIMULATOR_NUMBERS.timesOutThenDelivered);
    expect(await provider.send(sale)).toEqual({ kind: 'unclear', detail: 'timeout' });
    expect(await provider.status(sale.reference)).toEqual({
      kind: 'delivered',
      providerReference: expect.stringMatching(/^sim-/),
    });
    expect((await stats()).deliveriesByReference[sale.reference]).toBe(1);
  });

  it('times out on 09990000003, whose status then says failed', async () => {
    const sale = topUp(SIMULATOR_NUMBERS.timesOutThenFailed);
    expect(await provider.send(sale)).toEqual({ kind: 'unclear', detail: 'timeout' });
    expect(await provider.status(sale.reference)).toEqual({ kind: 'failed', reason: 'operator_declined' });
    expect((await stats()).deliveriesByReference[sale.reference]).toBeUndefined();
  });

  it('keeps 09990000004 pending until 2 s after the send, then delivered', async () => {
    const sale = topUp(SIMULATOR_NUMBERS.deliversLater);
    const sent = await provider.send(sale);
    expect(sent).toEqual({ kind: 'pending', providerReference: expect.stringMatching(/^sim-/) });
    expect(await provider.status(sale.reference)).toEqual({ kind: 'pending' });
    now += DELIVERS_LATER_MS;
    const providerReference = sent.kind === 'pending' ? sent.providerReference : null;
    expect(await provider.status(sale.reference)).toEqual({ kind: 'delivered', providerReference });
    expect((await stats()).deliveriesByReference[sale.reference]).toBe(1);
  });

  it('never knows about 09990000005 until settled from outside, then delivered', async () => {
    const sale = topUp(SIMULATOR_NUMBERS.neverKnows);
    expect((await provider.send(sale)).kind).toBe('pending');
    now += 7 * 24 * 3600_000;
    expect(await provider.status(sale.reference)).toEqual({ kind: 'pending' });
    expect(await control('POST', '/sim/settle', { reference: sale.reference, status: 'delivered' })).toEqual({
      status: 200,
      body: { reference: sale.reference, status: 'delivered' },
    });
    expect((await provider.status(sale.reference)).kind).toBe('delivered');
    expect((await control('POST', '/sim/settle', { reference: sale.reference, status: 'failed' })).status).toBe(409);
    expect((await control('POST', '/sim/settle', { reference: randomUUID(), status: 'delivered' })).status).toBe(404);
    expect((await stats()).deliveriesByReference[sale.reference]).toBe(1);
  });

  it('answers not_found about a reference it never received', async () => {
    expect(await provider.status(randomUUID())).toEqual({ kind: 'not_found' });
  });
});

describe('the http provider when the provider misbehaves', () => {
  it('answers unclear with a wrong key, and the simulator records nothing', async () => {
    const before = await stats();
    const wrongKey = createProvider({ provider: 'http', url: sim.url, apiKey: 'not-the-key', timeoutMs: TIMEOUT_MS });
    try {
      const sale = topUp(SIMULATOR_NUMBERS.declines);
      expect(await wrongKey.send(sale)).toEqual({ kind: 'unclear', detail: expect.stringContaining('401') });
      expect(await wrongKey.status(sale.reference)).toEqual({
        kind: 'unclear',
        detail: expect.stringContaining('401'),
      });
    } finally {
      await wrongKey.close();
    }
    const after = await stats();
    expect([after.sends, after.statusQueries]).toEqual([before.sends, before.statusQueries]);
  });

  it('answers unclear during an outage, records nothing of it, and recovers', async () => {
    const before = await stats();
    expect((await control('POST', '/sim/outage', { ms: 600 })).status).toBe(200);
    const sale = topUp(SIMULATOR_NUMBERS.declines);
    expect(await provider.send(sale)).toEqual({ kind: 'unclear', detail: 'http 503' });
    expect(await provider.status(sale.reference)).toEqual({ kind: 'unclear', detail: 'http 503' });
    const during = await stats();
    expect([during.sends, during.statusQueries]).toEqual([before.sends, before.statusQueries]);

    await sleep(650);
    // Nothing of the outage was recorded: the provider never received the sale.
    expect(await provider.status(sale.reference)).toEqual({ kind: 'not_found' });
    expect(await provider.send(sale)).toEqual({ kind: 'declined', reason: 'number_not_supported' });
    const sent = ordinary();
    expect((await provider.send(sent)).kind).toBe('delivered');
    expect((await stats()).deliveriesByReference[sent.reference]).toBe(1);
  });

  it('answers unclear when the answer comes after the timeout, though the sale was delivered', async () => {
    const sale = ordinary();
    await control('POST', '/sim/latency', { ms: TIMEOUT_MS + 250 });
    try {
      expect(await provider.send(sale)).toEqual({ kind: 'unclear', detail: 'timeout' });
    } finally {
      await control('POST', '/sim/latency', { ms: 0 });
    }
    expect((await stats()).deliveriesByReference[sale.reference]).toBe(1);
    const status = await provider.status(sale.reference);
    expect(status).toEqual({ kind: 'delivered', providerReference: expect.stringMatching(/^sim-/) });
    // Sending it again (as after any unclear answer) answers the one delivery, and makes no other.
    const again = await provider.send(sale);
    expect(again).toEqual(status);
    expect((await stats()).deliveriesByReference[sale.reference]).toBe(1);
  });

  it('delivers a reference sent 20 times at once once, and every answer names that delivery', async () => {
    const sale = ordinary();
    const answers = await Promise.all(Array.from({ length: 20 }, () => provider.send(sale)));
    expect(new Set(answers.map((a) => a.kind))).toEqual(new Set(['delivered']));
    expect(new Set(answers.map((a) => (a.kind === 'delivered' ? a.providerReference : null))).size).toBe(1);
    expect((await stats()).deliveriesByReference[sale.reference]).toBe(1);
  });

  it('holds a timing-out send for hangMs and then drops the connection: still unclear, never declined', async () => {
    const patient = createProvider({ provider: 'http', url: sim.url, apiKey: API_KEY, timeoutMs: 5000 });
    try {
      const started = performance.now();
      const sale = topUp(SIMULATOR_NUMBERS.timesOutThenFailed);
      expect(await patient.send(sale)).toEqual({ kind: 'unclear', detail: expect.stringMatching(/^connection error/) });
      expect(performance.now() - started).toBeGreaterThanOrEqual(HANG_MS - 20);
      expect(performance.now() - started).toBeLessThan(2000);
    } finally {
      await patient.close();
    }
  });

  it('answers unclear when nothing listens', async () => {
    const closed = await startProviderSim({ port: 0, apiKey: API_KEY });
    await closed.close();
    const nobody = createProvider({ provider: 'http', url: closed.url, apiKey: API_KEY, timeoutMs: TIMEOUT_MS });
    expect(await nobody.send(ordinary())).toEqual({ kind: 'unclear', detail: expect.stringMatching(/^connection/) });
    expect(await nobody.status(randomUUID())).toEqual({
      kind: 'unclear',
      detail: expect.stringMatching(/^connection/),
    });
    await nobody.close();
  });

  it('closes promptly while it holds a send, and the send in flight ends unclear', async () => {
    const held = await startProviderSim({ port: 0, apiKey: API_KEY, hangMs: 60_000 });
    const patient = createProvider({ provider: 'http', url: held.url, apiKey: API_KEY, timeoutMs: 10_000 });
    const sale = topUp(SIMULATOR_NUMBERS.timesOutThenDelivered);
    const inFlight = patient.send(sale);
    await sleep(50);
    expect(held.simulator.stats().deliveriesByReference[sale.reference]).toBe(1);
    const started = performance.now();
    // Bounded, so that a close() that waits for the held request fails here rather than hanging.
    await Promise.race([held.close(), sleep(1000)]);
    expect(performance.now() - started).toBeLessThan(500);
    expect((await inFlight).kind).toBe('unclear');
    await patient.close();
  });
});

/**
 * A provider that answers whatever the test says, for the answers the simulator never gives: the
 * adapter must take none of them as certain.
 */
describe('the http provider reading answers', () => {
  let answer: (response: ServerResponse, reference: string) => void = () => {};
  let url = '';
  const fake = createServer((request, response) => {
    const reference = decodeURIComponent(request.url?.split('/').pop() ?? '');
    let body = '';
    request.on('data', (chunk) => {
      body += chunk;
    });
    request.on('end', () => answer(response, body ? (JSON.parse(body) as { reference: string }).reference : reference));
  });
  const json = (response: ServerResponse, status: number, body: unknown) => {
    response.writeHead(status, { 'content-type': 'application/json' });
    response.end(JSON.stringify(body));
  };

  beforeAll(async () => {
    await new Promise<void>((resolve) => fake.listen(0, '127.0.0.1', resolve));
    url = `http://127.0.0.1:${(fake.address() as AddressInfo).port}/`;
  });
  afterAll(async () => {
    fake.closeAllConnections();
    await new Promise((resolve) => fake.close(resolve));
  });

  const cases: Array<[string, (response: ServerResponse, reference: string) => void]> = [
    ['a 500', (r) => json(r, 500, { error: 'boom' })],
    ['a 502 page from a proxy', (r) => r.writeHead(502).end('<html>Bad gateway</html>')],
    ['a 429', (r, reference) => json(r, 429, { reference, status: 'declined', reason: 'slow down' })],
    ['a 400', (r, reference) => json(r, 400, { reference, status: 'failed', reason: 'bad request' })],
    ['a 404 page that is not the provider’s not_found', (r) => r.writeHead(404).end('Not Found')],
    ['HTML with 200', (r) => r.writeHead(200).end('<html>maintenance</html>')],
    ['an unknown status', (r, reference) => json(r, 200, { reference, status: 'refunded', reason: 'x' })],
    ['an answer about another reference', (r) => json(r, 200, { reference: 'other', status: 'declined' })],
    ['declined without a reference', (r) => json(r, 200, { status: 'declined', reason: 'no' })],
    ['delivered with no provider reference', (r, reference) => json(r, 200, { reference, status: 'delivered' })],
    [
      'headers, then a body that never ends',
      (r) => r.writeHead(200, { 'content-type': 'application/json' }).write('{'),
    ],
  ];

  it.each(cases)('answers unclear to %s, on send and on status', async (_name, respond) => {
    answer = respond;
    const reader = createProvider({ provider: 'http', url, apiKey: API_KEY, timeoutMs: TIMEOUT_MS });
    try {
      const sale = ordinary();
      expect((await reader.send(sale)).kind).toBe('unclear');
      expect((await reader.status(sale.reference)).kind).toBe('unclear');
    } finally {
      await reader.close();
    }
  });

  it('takes declined and failed as certain only when the body says so about our reference', async () => {
    const reader = createProvider({ provider: 'http', url, apiKey: API_KEY, timeoutMs: TIMEOUT_MS });
    try {
      const sale = ordinary();
      answer = (r, reference) => json(r, 200, { reference, status: 'declined', provider_reference: null, reason: 'x' });
      expect(await reader.send(sale)).toEqual({ kind: 'declined', reason: 'x' });
      answer = (r, reference) => json(r, 200, { reference, status: 'failed', provider_reference: null, reason: 'y' });
      expect(await reader.status(sale.reference)).toEqual({ kind: 'failed', reason: 'y' });
      answer = (r) => json(r, 404, { status: 'not_found' });
      expect(await reader.status(sale.reference)).toEqual({ kind: 'not_found' });
    } finally {
      await reader.close();
    }
  });
});
