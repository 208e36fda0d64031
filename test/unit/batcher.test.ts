import { Batcher } from '@cs/queue';
import { describe, expect, it } from 'vitest';

/** A handler whose calls stay open until the test settles them. */
function controlledHandler<In, Out>() {
  const calls: Array<{
    items: In[];
    resolve: (results: Array<Out | Error>) => void;
    reject: (error: unknown) => void;
  }> = [];
  const handle = (items: In[]) =>
    new Promise<Array<Out | Error>>((resolve, reject) => {
      calls.push({ items, resolve, reject });
    });
  return { calls, handle };
}

/** Lets the promise callbacks (the batcher's `then` and `finally`) run. */
const settle = () => new Promise<void>((resolve) => setImmediate(resolve));

const doubled = (items: number[]) => items.map((n) => n * 2);

describe('Batcher', () => {
  it('hands a lone call over at once, without waiting for a timer', async () => {
    const { calls, handle } = controlledHandler<number, number>();
    const batcher = new Batcher(handle, { maxBatch: 10, maxInFlight: 1 });
    const answer = batcher.submit(21);
    expect(calls.map((c) => c.items)).toEqual([[21]]);
    calls[0]?.resolve([42]);
    await expect(answer).resolves.toBe(42);
  });

  it('gathers the calls that arrive during a flight into the next batch, in order', async () => {
    const { calls, handle } = controlledHandler<number, number>();
    const batcher = new Batcher(handle, { maxBatch: 10, maxInFlight: 1 });
    const first = batcher.submit(1);
    const later = [batcher.submit(2), batcher.submit(3), batcher.submit(4)];
    expect(calls).toHaveLength(1);
    calls[0]?.resolve([10]);
    await expect(first).resolves.toBe(10);
    await settle();
    expect(calls.map((c) => c.items)).toEqual([[1], [2, 3, 4]]);
    calls[1]?.resolve(doubled([2, 3, 4]));
    await expect(Promise.all(later)).resolves.toEqual([4, 6, 8]);
  });

  it('never hands over more than maxBatch items at once', async () => {
    const { calls, handle } = controlledHandler<number, number>();
    const batcher = new Batcher(handle, { maxBatch: 2, maxInFlight: 1 });
    const answers = [1, 2, 3, 4, 5, 6].map((n) => batcher.submit(n));
    for (let i = 0; i < 4; i++) {
      await settle();
      const call = calls[i];
      if (call) call.resolve(doubled(call.items));
    }
    await expect(Promise.all(answers)).resolves.toEqual([2, 4, 6, 8, 10, 12]);
    expect(calls.map((c) => c.items)).toEqual([[1], [2, 3], [4, 5], [6]]);
  });

  it('never has more than maxInFlight batches in flight', async () => {
    const { calls, handle } = controlledHandler<number, number>();
    const batcher = new Batcher(handle, { maxBatch: 10, maxInFlight: 2 });
    const answers = [1, 2, 3, 4].map((n) => batcher.submit(n));
    // Two flights at once, each of what was waiting when it left; the rest waits.
    expect(calls.map((c) => c.items)).toEqual([[1], [2]]);
    await settle();
    expect(calls).toHaveLength(2);
    calls[1]?.resolve([20]);
    await settle();
    expect(calls.map((c) => c.items)).toEqual([[1], [2], [3, 4]]);
    calls[2]?.resolve([30, 40]);
    calls[0]?.resolve([10]);
    await expect(Promise.all(answers)).resolves.toEqual([10, 20, 30, 40]);
  });

  it('rejects only the caller whose result is an Error', async () => {
    const batcher = new Batcher<number, number>(
      async (items) => items.map((n) => (n === 2 ? new Error(`refused ${n}`) : n * 2)),
      { maxBatch: 10, maxInFlight: 1 },
    );
    const blocker = batcher.submit(0);
    const answers = [1, 2, 3].map((n) => batcher.submit(n));
    await blocker;
    const settled = await Promise.allSettled(answers);
    expect(settled).toEqual([
      { status: 'fulfilled', value: 2 },
      { status: 'rejected', reason: new Error('refused 2') },
      { status: 'fulfilled', value: 6 },
    ]);
  });

  it('rejects every caller of a batch whose handler throws, and goes on with the next batch', async () => {
    let call = 0;
    const failure = new Error('database gone');
    const batcher = new Batcher<number, number>(
      async (items) => {
        call++;
        if (call === 2) throw failure;
        return doubled(items);
      },
      { maxBatch: 10, maxInFlight: 1 },
    );
    const first = batcher.submit(1);
    const failed = [batcher.submit(2), batcher.submit(3)];
    await expect(first).resolves.toBe(2);
    const settled = await Promise.allSettled(failed);
    expect(settled).toEqual([
      { status: 'rejected', reason: failure },
      { status: 'rejected', reason: failure },
    ]);
    await expect(batcher.submit(4)).resolves.toBe(8);
  });

  it('fails the batch of a handler that throws before returning a promise, and goes on', async () => {
    let call = 0;
    const batcher = new Batcher<number, number>(
      (items) => {
        call++;
        if (call === 1) throw new Error('thrown at once');
        return Promise.resolve(doubled(items));
      },
      { maxBatch: 10, maxInFlight: 1 },
    );
    await expect(batcher.submit(1)).rejects.toThrow('thrown at once');
    await expect(batcher.submit(5)).resolves.toBe(10);
  });
});
