import { partitionOf } from '@cs/queue';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';

/**
 * jobs.partition is on disk and a seller's jobs must keep landing on the partition they always
 * did: these values were computed once with FNV-1a (32-bit) and must never change.
 */
const pinned: Array<[sellerId: string, fnv1a: number, byPartitions: Record<number, number>]> = [
  ['00000000-0000-0000-0000-000000000000', 3192360657, { 1: 0, 2: 1, 7: 3, 16: 1, 64: 17, 1024: 721 }],
  ['0190a1b2-c3d4-7e5f-8a6b-9c0d1e2f3a4b', 3363552373, { 1: 0, 2: 1, 7: 6, 16: 5, 64: 53, 1024: 117 }],
  ['018f4e2a-7b3c-7d1e-9f20-1a2b3c4d5e6f', 2699507351, { 1: 0, 2: 1, 7: 2, 16: 7, 64: 23, 1024: 663 }],
  ['ffffffff-ffff-ffff-ffff-ffffffffffff', 654879633, { 1: 0, 2: 1, 7: 2, 16: 1, 64: 17, 1024: 913 }],
];

describe('partitionOf', () => {
  for (const [sellerId, fnv1a, byPartitions] of pinned) {
    it(`keeps ${sellerId} where it always was`, () => {
      for (const [partitions, expected] of Object.entries(byPartitions)) {
        expect(partitionOf(sellerId, Number(partitions)), `${partitions} partitions`).toBe(expected);
      }
      // The whole hash, modulo 2^32: any change to the function shows here first.
      expect(partitionOf(sellerId, 2 ** 32)).toBe(fnv1a);
    });
  }

  it('is always an integer in 0 .. partitions - 1, the same on every call', () => {
    fc.assert(
      fc.property(fc.oneof(fc.uuid(), fc.string()), fc.integer({ min: 1, max: 1024 }), (sellerId, partitions) => {
        const p = partitionOf(sellerId, partitions);
        expect(Number.isInteger(p)).toBe(true);
        expect(p).toBeGreaterThanOrEqual(0);
        expect(p).toBeLessThan(partitions);
        expect(partitionOf(sellerId, partitions)).toBe(p);
      }),
      { numRuns: 2000 },
    );
  });

  it('spreads sellers over every partition', () => {
    const seen = new Set<number>();
    fc.assert(
      fc.property(fc.uuid(), (id) => {
        seen.add(partitionOf(id, 16));
      }),
      { numRuns: 2000, seed: 42 },
    );
    expect(seen.size).toBe(16);
  });
});
