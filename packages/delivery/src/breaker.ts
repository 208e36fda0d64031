export interface BreakerOptions {
  /** Unclear answers in a row that open the breaker. */
  failures: number;
  /** How long it stays open before one call goes through as a probe. */
  cooldownMs: number;
  /** Milliseconds; injectable for tests. */
  clock?: () => number;
  /** Told when the breaker opens (with the last unclear answer's detail) and when it closes. */
  onChange?: (change: { open: true; unclearInARow: number; detail: string } | { open: false }) => void;
}

export type BreakerState = 'closed' | 'open' | 'probing';

/**
 * Keeps a worker from hammering a provider that is down. Any answer the provider gives about a
 * top-up (delivered, declined, pending, not found…) shows it up; an unclear one (a timeout, a
 * refused connection, a 5xx, a malformed body) may be one top-up's trouble or the whole
 * provider's. After `failures` unclear answers in a row the breaker opens: calls stop, and the
 * deliveries wait in PostgreSQL, due. After each `cooldownMs` one call goes through as a probe: a
 * clear answer closes the breaker, an unclear one keeps it open for another cooldown.
 *
 * It only holds calls back. Nothing is decided for it: no delivery is refunded or given up on
 * because the breaker is open, and the give-up clock of a delivery runs as it would anyway.
 */
export class ProviderBreaker {
  #unclearInARow = 0;
  /** 0 while closed; otherwise when the next probe may go. */
  #openUntil = 0;
  #probing = false;
  readonly #clock: () => number;

  constructor(private readonly options: BreakerOptions) {
    if (!(options.failures >= 1)) throw new Error('a breaker opens after one unclear answer or more');
    this.#clock = options.clock ?? Date.now;
  }

  get state(): BreakerState {
    if (this.#openUntil === 0) return 'closed';
    return this.#probing ? 'probing' : 'open';
  }

  /** Whether calls may go freely now. */
  get closed(): boolean {
    return this.#openUntil === 0;
  }

  /**
   * While open: whether a probe may go now (the cooldown is over and no probe is out). A `true`
   * takes the probe's place until `record` or `cancelProbe`.
   */
  tryProbe(): boolean {
    if (this.#openUntil === 0) return true;
    if (this.#probing || this.#clock() < this.#openUntil) return false;
    this.#probing = true;
    return true;
  }

  /** A probe that found nothing to call about gives its place back. */
  cancelProbe(): void {
    this.#probing = false;
  }

  /** Every answer of the provider, in the order they come. */
  record(answer: { kind: string; detail?: string }): void {
    if (answer.kind !== 'unclear') {
      this.#unclearInARow = 0;
      if (this.#openUntil !== 0) {
        this.#openUntil = 0;
        this.#probing = false;
        this.options.onChange?.({ open: false });
      }
      return;
    }
    this.#unclearInARow++;
    if (this.#openUntil !== 0) {
      // The probe (or a call from before the opening) is unclear too: another cooldown.
      this.#probing = false;
      this.#openUntil = this.#clock() + this.options.cooldownMs;
      return;
    }
    if (this.#unclearInARow >= this.options.failures) {
      this.#openUntil = this.#clock() + this.options.cooldownMs;
      this.options.onChange?.({ open: true, unclearInARow: this.#unclearInARow, detail: answer.detail ?? '' });
    }
  }
}
