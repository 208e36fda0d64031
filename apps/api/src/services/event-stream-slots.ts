import { rateLimited } from '../errors.ts';

export interface EventStreamLimits {
  /** Streams one caller may hold open on this process. */
  perCaller: number;
  /** The longest a stream stays open, in ms. */
  lifetimeMs: number;
}

/**
 * The open event streams of this API process, per caller. Each holds a connection, a
 * subscription and a timer for as long as it lives, so one caller may hold only so many, and
 * none lives for ever (the server closes it at `lifetimeMs`; the client reconnects and gets the
 * job's current state). The count is per process: behind a load balancer over N processes a
 * caller may hold up to N times the limit.
 */
export class EventStreamSlots {
  /** When each open stream of a caller was opened, oldest first. */
  private readonly openedAt = new Map<string, number[]>();
  private total = 0;

  constructor(readonly limits: EventStreamLimits) {}

  /** Streams open on this process now. */
  get open(): number {
    return this.total;
  }

  /**
   * A slot for one more stream of `caller`, or 429 with the time until its oldest stream is closed
   * at the latest. The returned function gives the slot back; calling it again does nothing.
   */
  take(caller: string): () => void {
    const now = Date.now();
    const opened = this.openedAt.get(caller) ?? [];
    if (opened.length >= this.limits.perCaller) {
      const oldest = opened[0] ?? now;
      throw rateLimited(
        `At most ${this.limits.perCaller} open event streams per caller; close one, or retry later`,
        oldest + this.limits.lifetimeMs - now,
      );
    }
    opened.push(now);
    this.openedAt.set(caller, opened);
    this.total++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.total--;
      opened.splice(opened.indexOf(now), 1);
      if (opened.length === 0) this.openedAt.delete(caller);
    };
  }
}
