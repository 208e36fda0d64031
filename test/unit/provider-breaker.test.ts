import { ProviderBreaker } from '@cs/delivery';
import { describe, expect, it } from 'vitest';

/**
 * The delivery stage's breaker on its own clock: when calls to the provider pause, when a probe
 * may go, and what resumes them. (That a paused worker makes few calls through a real outage is
 * test/stress/delivery-faults.stress.test.ts.)
 */
describe('the provider breaker', () => {
  const unclear = { kind: 'unclear', detail: 'timeout' };
  function breaker(failures = 3, cooldownMs = 1000) {
    let now = 0;
    const changes: boolean[] = [];
    const b = new ProviderBreaker({
      failures,
      cooldownMs,
      clock: () => now,
      onChange: (c) => changes.push(c.open),
    });
    return { b, changes, advance: (ms: number) => (now += ms) };
  }

  it('opens after the set number of unclear answers in a row, not before', () => {
    const { b, changes } = breaker(3);
    b.record(unclear);
    b.record(unclear);
    expect(b.state).toBe('closed');
    b.record(unclear);
    expect(b.state).toBe('open');
    expect(b.closed).toBe(false);
    expect(changes).toEqual([true]);
  });

  it('any clear answer, pending and not found included, starts the count again', () => {
    const { b } = breaker(3);
    for (const clear of ['pending', 'not_found', 'declined', 'delivered', 'failed']) {
      b.record(unclear);
      b.record(unclear);
      b.record({ kind: clear });
    }
    expect(b.state).toBe('closed');
  });

  it('lets one probe go per cooldown; an unclear probe waits another cooldown', () => {
    const { b, advance } = breaker(1, 1000);
    b.record(unclear);
    expect(b.tryProbe()).toBe(false);
    advance(999);
    expect(b.tryProbe()).toBe(false);
    advance(1);
    expect(b.tryProbe()).toBe(true);
    expect(b.state).toBe('probing');
    // One probe at a time.
    expect(b.tryProbe()).toBe(false);
    b.record(unclear);
    expect(b.state).toBe('open');
    advance(500);
    expect(b.tryProbe()).toBe(false);
    advance(500);
    expect(b.tryProbe()).toBe(true);
  });

  it('a probe that found nothing to call about gives its place back', () => {
    const { b, advance } = breaker(1, 1000);
    b.record(unclear);
    advance(1000);
    expect(b.tryProbe()).toBe(true);
    b.cancelProbe();
    expect(b.tryProbe()).toBe(true);
  });

  it('the first clear answer closes it, and it is told once each way', () => {
    const { b, changes, advance } = breaker(2, 1000);
    b.record(unclear);
    b.record(unclear);
    // Calls in flight from before the pause still answer; more unclear ones change nothing.
    b.record(unclear);
    advance(1000);
    expect(b.tryProbe()).toBe(true);
    b.record({ kind: 'delivered' });
    expect(b.state).toBe('closed');
    expect(b.tryProbe()).toBe(true);
    // Closed, it counts from zero again.
    b.record(unclear);
    expect(b.state).toBe('closed');
    expect(changes).toEqual([true, false]);
  });

  it('refuses a setting that could never let a call through', () => {
    expect(() => new ProviderBreaker({ failures: 0, cooldownMs: 1000 })).toThrow();
  });
});
