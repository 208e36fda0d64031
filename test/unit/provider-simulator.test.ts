import { randomUUID } from 'node:crypto';
import {
  createProvider,
  createSimulatorProvider,
  DELIVERS_LATER_MS,
  SIMULATOR_NUMBERS,
  Simulator,
  type TopUp,
} from '@cs/delivery';
import { describe, expect, it } from 'vitest';

const TIMEOUT_MS = 50;

/** A clock the test moves by hand, for the 2 s of `deliversLater`. */
function manualClock(start = 1_700_000_000_000) {
  let now = start;
  return { now: () => now, advance: (ms: number) => (now += ms) };
}

/** The in-process provider over a simulator the test can look into; deliveries within 5 ms. */
function setUp(clock?: () => number) {
  const simulator = new Simulator({ clock, fastMs: 5 });
  return { simulator, provider: createSimulatorProvider({ timeoutMs: TIMEOUT_MS, simulator }) };
}

const topUp = (phoneNumber: string): TopUp => ({ reference: randomUUID(), phoneNumber, amount: 50_000n });

describe('the in-process simulator provider', () => {
  it('delivers an ordinary number at once, with a sim- reference, and its status says so', async () => {
    const { simulator, provider } = setUp();
    const sale = topUp('09121234567');
    const sent = await provider.send(sale);
    expect(sent).toEqual({ kind: 'delivered', providerReference: expect.stringMatching(/^sim-.+/) });
    const providerReference = sent.kind === 'delivered' ? sent.providerReference : '';
    expect(await provider.status(sale.reference)).toEqual({ kind: 'delivered', providerReference });
    expect(simulator.stats().deliveriesByReference).toEqual({ [sale.reference]: 1 });
  });

  it('declines 09990000001 for certain, and its status says failed; nothing is delivered', async () => {
    const { simulator, provider } = setUp();
    const sale = topUp(SIMULATOR_NUMBERS.declines);
    expect(await provider.send(sale)).toEqual({ kind: 'declined', reason: 'number_not_supported' });
    expect(await provider.status(sale.reference)).toEqual({ kind: 'failed', reason: 'number_not_supported' });
    expect(simulator.stats().delivered).toBe(0);
  });

  it('times out on 09990000002 after the whole timeout, yet delivered it: its status says delivered', async () => {
    const { simulator, provider } = setUp();
    const sale = topUp(SIMULATOR_NUMBERS.timesOutThenDelivered);
    const started = performance.now();
    expect(await provider.send(sale)).toEqual({ kind: 'unclear', detail: 'timeout' });
    expect(performance.now() - started).toBeGreaterThanOrEqual(TIMEOUT_MS - 5);
    expect(await provider.status(sale.reference)).toEqual({
      kind: 'delivered',
      providerReference: expect.stringMatching(/^sim-/),
    });
    expect(simulator.stats().deliveriesByReference).toEqual({ [sale.reference]: 1 });
  });

  it('times out on 09990000003, and its status says failed: operator_declined', async () => {
    const { simulator, provider } = setUp();
    const sale = topUp(SIMULATOR_NUMBERS.timesOutThenFailed);
    expect(await provider.send(sale)).toEqual({ kind: 'unclear', detail: 'timeout' });
    expect(await provider.status(sale.reference)).toEqual({ kind: 'failed', reason: 'operator_declined' });
    // A later send of the same reference answers its state: a certain failure, never a delivery.
    expect(await provider.send(sale)).toEqual({ kind: 'declined', reason: 'operator_declined' });
    expect(simulator.stats().delivered).toBe(0);
  });

  it('keeps 09990000004 pending until 2 s after its first send, then delivers it once', async () => {
    const clock = manualClock();
    const { simulator, provider } = setUp(clock.now);
    const sale = topUp(SIMULATOR_NUMBERS.deliversLater);
    const sent = await provider.send(sale);
    expect(sent).toEqual({ kind: 'pending', providerReference: expect.stringMatching(/^sim-/) });
    clock.advance(DELIVERS_LATER_MS - 1);
    expect(await provider.status(sale.reference)).toEqual({ kind: 'pending' });
    // A repeat send before the 2 s neither delivers nor restarts the wait.
    expect((await provider.send(sale)).kind).toBe('pending');
    expect(simulator.stats().delivered).toBe(0);
    clock.advance(1);
    const providerReference = sent.kind === 'pending' ? sent.providerReference : null;
    expect(await provider.status(sale.reference)).toEqual({ kind: 'delivered', providerReference });
    expect(await provider.send(sale)).toEqual({ kind: 'delivered', providerReference });
    expect(simulator.stats().deliveriesByReference).toEqual({ [sale.reference]: 1 });
  });

  it('never knows about 09990000005, however long one waits, until it is settled', async () => {
    const clock = manualClock();
    const { simulator, provider } = setUp(clock.now);
    const sale = topUp(SIMULATOR_NUMBERS.neverKnows);
    expect((await provider.send(sale)).kind).toBe('pending');
    clock.advance(30 * 24 * 3600_000);
    expect(await provider.status(sale.reference)).toEqual({ kind: 'pending' });
    expect(simulator.stats().delivered).toBe(0);

    // The late outside answer: it turns out delivered. It counts one delivery, however often said.
    expect(simulator.settle(sale.reference, 'delivered')).toBe('settled');
    expect(simulator.settle(sale.reference, 'delivered')).toBe('settled');
    expect((await provider.status(sale.reference)).kind).toBe('delivered');
    expect(simulator.settle(sale.reference, 'failed')).toBe('already_delivered');
    expect(simulator.stats().deliveriesByReference).toEqual({ [sale.reference]: 1 });
  });

  it('settles a never-knows top-up to failed, and refuses to settle a reference it never received', async () => {
    const { simulator, provider } = setUp();
    const sale = topUp(SIMULATOR_NUMBERS.neverKnows);
    await provider.send(sale);
    expect(simulator.settle(sale.reference, 'failed')).toBe('settled');
    expect(await provider.status(sale.reference)).toEqual({ kind: 'failed', reason: expect.any(String) });
    expect(simulator.settle(randomUUID(), 'delivered')).toBe('not_found');
    expect(simulator.stats().delivered).toBe(0);
  });

  it('lets a settle during an ordinary delivery decide it: the delivery under way does not happen', async () => {
    const { simulator, provider } = setUp();
    const sale = topUp('09121234567');
    // The simulator records the sale as the send starts, before its delivery delay.
    const sending = provider.send(sale);
    expect(await provider.status(sale.reference)).toEqual({ kind: 'pending' });
    expect(simulator.settle(sale.reference, 'failed')).toBe('settled');
    expect(await sending).toEqual({ kind: 'declined', reason: expect.any(String) });
    expect(simulator.stats().delivered).toBe(0);
  });

  it('answers not_found for a reference it never received', async () => {
    const { provider } = setUp();
    expect(await provider.status(randomUUID())).toEqual({ kind: 'not_found' });
  });

  it('delivers a reference sent 5 times once, one after another or all at once', async () => {
    const { simulator, provider } = setUp();
    const inTurn = topUp('09121234567');
    const answers = [];
    for (let i = 0; i < 5; i++) answers.push(await provider.send(inTurn));
    const together = topUp('09121234568');
    answers.push(...(await Promise.all(Array.from({ length: 5 }, () => provider.send(together)))));
    expect(answers.map((a) => a.kind)).toEqual(Array(10).fill('delivered'));
    // Every answer names the one delivery.
    expect(new Set(answers.slice(0, 5).map((a) => (a.kind === 'delivered' ? a.providerReference : a.kind))).size).toBe(
      1,
    );
    expect(new Set(answers.slice(5).map((a) => (a.kind === 'delivered' ? a.providerReference : a.kind))).size).toBe(1);
    expect(simulator.stats()).toEqual({
      sends: 10,
      statusQueries: 0,
      delivered: 2,
      deliveriesByReference: { [inTurn.reference]: 1, [together.reference]: 1 },
    });
  });

  it('keeps the simulator of each provider to itself: another process never heard of the reference', async () => {
    const one = createProvider({ provider: 'simulator', timeoutMs: TIMEOUT_MS });
    const other = createProvider({ provider: 'simulator', timeoutMs: TIMEOUT_MS });
    const sale = topUp('09121234567');
    expect((await one.send(sale)).kind).toBe('delivered');
    expect(await other.status(sale.reference)).toEqual({ kind: 'not_found' });
    expect(one.name).toBe('simulator');
  });

  it('answers unclear, never failed, after it is closed, and ends the wait of a send in flight', async () => {
    const provider = createSimulatorProvider({ timeoutMs: 10_000 });
    const sale = topUp(SIMULATOR_NUMBERS.timesOutThenDelivered);
    const started = performance.now();
    const inFlight = provider.send(sale);
    await provider.close();
    expect((await inFlight).kind).toBe('unclear');
    expect(performance.now() - started).toBeLessThan(1000);
    expect((await provider.send(topUp('09121234567'))).kind).toBe('unclear');
    expect((await provider.status(sale.reference)).kind).toBe('unclear');
  });
});

describe('createProvider', () => {
  it('refuses http without a URL or a key, with a message that names the setting', () => {
    expect(() => createProvider({ provider: 'http', apiKey: 'k', timeoutMs: 100 })).toThrow(/PROVIDER_URL/);
    expect(() => createProvider({ provider: 'http', url: 'not a url', apiKey: 'k', timeoutMs: 100 })).toThrow(
      /PROVIDER_URL/,
    );
    expect(() => createProvider({ provider: 'http', url: 'http://127.0.0.1:1', timeoutMs: 100 })).toThrow(
      /PROVIDER_API_KEY/,
    );
    expect(createProvider({ provider: 'http', url: 'http://127.0.0.1:1', apiKey: 'k', timeoutMs: 100 }).name).toBe(
      'http',
    );
  });
});
