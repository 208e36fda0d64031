import { describe, expect, it } from 'vitest';
import { takeBatch } from '../../apps/worker/src/partition-consumer.ts';

/** Held messages named by letter, each carrying `n` jobs. */
const held = (...sizes: number[]) =>
  sizes.map((n, i) => ({ name: String.fromCharCode(97 + i), jobs: Array.from({ length: n }, (_, j) => j) }));
const names = (messages: Array<{ name: string }>) => messages.map((m) => m.name).join('');

describe('takeBatch', () => {
  it('takes nothing from nothing', () => {
    expect(takeBatch([], 10)).toEqual([]);
  });

  it('takes the oldest messages up to batchSize jobs and leaves the rest, in order', () => {
    const queue = held(2, 2, 2, 2);
    expect(names(takeBatch(queue, 5))).toBe('ab');
    expect(names(queue)).toBe('cd');
    expect(names(takeBatch(queue, 5))).toBe('cd');
    expect(queue).toEqual([]);
  });

  it('fills the batch exactly when the jobs fit', () => {
    const queue = held(2, 3, 1);
    expect(names(takeBatch(queue, 5))).toBe('ab');
    expect(names(queue)).toBe('c');
  });

  it('always takes at least one message, even one carrying more than batchSize jobs, and then alone', () => {
    const queue = held(7, 1);
    expect(names(takeBatch(queue, 5))).toBe('a');
    expect(names(queue)).toBe('b');
  });

  it('stops at the first message that does not fit rather than skipping ahead to a smaller one', () => {
    const queue = held(3, 4, 1);
    expect(names(takeBatch(queue, 5))).toBe('a');
    expect(names(queue)).toBe('bc');
  });

  it('takes everything when all of it fits', () => {
    const queue = held(1, 1, 1);
    expect(names(takeBatch(queue, 100))).toBe('abc');
    expect(queue).toEqual([]);
  });

  it('takes one message at a time with a batch size of one', () => {
    const queue = held(1, 1);
    expect(names(takeBatch(queue, 1))).toBe('a');
    expect(names(queue)).toBe('b');
  });
});
