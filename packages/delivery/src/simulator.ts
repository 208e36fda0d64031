import { randomBytes } from 'node:crypto';
import type { TopUp } from './provider.ts';

/** The phone numbers that make the simulator misbehave, like a payment sandbox's test cards (API.md). */
export const SIMULATOR_NUMBERS = {
  declines: '09990000001',
  timesOutThenDelivered: '09990000002',
  timesOutThenFailed: '09990000003',
  deliversLater: '09990000004',
  neverKnows: '09990000005',
} as const;

/** How long after its first send a `deliversLater` top-up turns delivered. */
export const DELIVERS_LATER_MS = 2000;

/**
 * What the simulator answers a send. `no_answer`: it recorded the top-up (and may have delivered
 * it) but says nothing; whoever serves it lets the caller's timeout expire, as a provider that
 * hangs or loses its answer would.
 */
export type SimulatedSend =
  | { kind: 'delivered'; providerReference: string }
  | { kind: 'declined'; reason: string }
  | { kind: 'pending'; providerReference: string }
  | { kind: 'no_answer' };

export type SimulatedStatus =
  | { kind: 'delivered'; providerReference: string }
  | { kind: 'failed'; reason: string }
  | { kind: 'pending'; providerReference: string }
  | { kind: 'not_found' };

export type SettleResult = 'settled' | 'not_found' | 'already_delivered';

export interface SimulatorStats {
  /** Send calls received, repeats included. */
  sends: number;
  statusQueries: number;
  /** References delivered. */
  delivered: number;
  /** Deliveries per reference: never more than 1, which is what the tests look for. */
  deliveriesByReference: Record<string, number>;
}

export interface SimulatorOptions {
  /** Milliseconds since the epoch; injectable so a test can step over the 2 s of `deliversLater`. */
  clock?: () => number;
  /** The upper bound of an ordinary delivery's random delay, in ms. */
  fastMs?: number;
}

type State = 'delivering' | 'pending' | 'delivered' | 'failed';

interface Received {
  topUp: TopUp;
  providerReference: string;
  state: State;
  reason: string | null;
  /** When a `pending` top-up turns delivered by itself (`deliversLater`); null: only `settle` moves it. */
  deliverAt: number | null;
  deliveries: number;
  /** An ordinary top-up's delivery in progress: a repeat send that arrives meanwhile waits for it. */
  delivering: Promise<void> | null;
}

/**
 * A provider's behaviour, without transport: the in-process adapter and the HTTP simulator both
 * serve this one core, so the two behave alike. It is idempotent by reference, as a real provider
 * must be: a send of a reference it already has never delivers again, it answers with that
 * reference's current state (so a repeat send of a `timesOutThenFailed` top-up is `declined`).
 */
export class Simulator {
  readonly #received = new Map<string, Received>();
  readonly #clock: () => number;
  readonly #fastMs: number;
  #sends = 0;
  #statusQueries = 0;

  constructor(options: SimulatorOptions = {}) {
    this.#clock = options.clock ?? Date.now;
    this.#fastMs = options.fastMs ?? 50;
  }

  async send(topUp: TopUp): Promise<SimulatedSend> {
    this.#sends += 1;
    const known = this.#received.get(topUp.reference);
    if (known) {
      if (known.delivering) await known.delivering;
      return this.#sendAnswer(known);
    }
    // Recorded before any wait, so that concurrent sends of one reference find it.
    const received = this.#receive(topUp);
    switch (topUp.phoneNumber) {
      case SIMULATOR_NUMBERS.declines:
        this.#fail(received, 'number_not_supported');
        return this.#sendAnswer(received);
      case SIMULATOR_NUMBERS.timesOutThenDelivered:
        this.#deliver(received);
        return { kind: 'no_answer' };
      case SIMULATOR_NUMBERS.timesOutThenFailed:
        this.#fail(received, 'operator_declined');
        return { kind: 'no_answer' };
      case SIMULATOR_NUMBERS.deliversLater:
        received.deliverAt = this.#clock() + DELIVERS_LATER_MS;
        return this.#sendAnswer(received);
      case SIMULATOR_NUMBERS.neverKnows:
        return this.#sendAnswer(received);
      default:
        received.state = 'delivering';
        received.delivering = sleep(Math.random() * this.#fastMs).then(() => {
          received.delivering = null;
          // A `settle` during the delay already decided it.
          if (received.state === 'delivering') this.#deliver(received);
        });
        await received.delivering;
        return this.#sendAnswer(received);
    }
  }

  status(reference: string): SimulatedStatus {
    this.#statusQueries += 1;
    const received = this.#received.get(reference);
    if (!received) return { kind: 'not_found' };
    this.#catchUp(received);
    const { state, providerReference } = received;
    if (state === 'delivered') return { kind: 'delivered', providerReference };
    if (state === 'failed') return { kind: 'failed', reason: received.reason ?? 'failed' };
    return { kind: 'pending', providerReference };
  }

  /**
   * An outside answer arriving late: the operator's word on a top-up the simulator left pending
   * (a "never knows" sale that turns out delivered). A delivered top-up cannot be taken back.
   */
  settle(reference: string, outcome: 'delivered' | 'failed'): SettleResult {
    const received = this.#received.get(reference);
    if (!received) return 'not_found';
    this.#catchUp(received);
    if (received.state === 'delivered') return outcome === 'delivered' ? 'settled' : 'already_delivered';
    if (outcome === 'delivered') this.#deliver(received);
    else this.#fail(received, 'settled_failed');
    return 'settled';
  }

  stats(): SimulatorStats {
    const deliveriesByReference: Record<string, number> = {};
    let delivered = 0;
    for (const [reference, received] of this.#received) {
      this.#catchUp(received);
      if (received.deliveries === 0) continue;
      deliveriesByReference[reference] = received.deliveries;
      delivered += 1;
    }
    return { sends: this.#sends, statusQueries: this.#statusQueries, delivered, deliveriesByReference };
  }

  #receive(topUp: TopUp): Received {
    const received: Received = {
      topUp,
      providerReference: `sim-${randomBytes(8).toString('hex')}`,
      state: 'pending',
      reason: null,
      deliverAt: null,
      deliveries: 0,
      delivering: null,
    };
    this.#received.set(topUp.reference, received);
    return received;
  }

  /** The one place a delivery is counted; every path to `delivered` goes through it. */
  #deliver(received: Received): void {
    if (received.state === 'delivered') return;
    received.state = 'delivered';
    received.deliverAt = null;
    received.deliveries += 1;
  }

  #fail(received: Received, reason: string): void {
    received.state = 'failed';
    received.reason = reason;
    received.deliverAt = null;
  }

  /** Time-driven changes happen when someone looks, against the (injectable) clock. */
  #catchUp(received: Received): void {
    if (received.state === 'pending' && received.deliverAt !== null && this.#clock() >= received.deliverAt)
      this.#deliver(received);
  }

  #sendAnswer(received: Received): SimulatedSend {
    this.#catchUp(received);
    const { state, providerReference } = received;
    if (state === 'delivered') return { kind: 'delivered', providerReference };
    if (state === 'failed') return { kind: 'declined', reason: received.reason ?? 'declined' };
    return { kind: 'pending', providerReference };
  }
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
