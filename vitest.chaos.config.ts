import { defineConfig } from 'vitest/config';

/**
 * The bank test under faults at random, for minutes: `npm run test:chaos -- --minutes N --seed S`
 * (scripts/chaos.mjs). CI runs 3 minutes of it.
 */
export default defineConfig({
  test: {
    include: ['test/chaos/**/*.test.ts'],
    globalSetup: ['test/global-setup.ts'],
    fileParallelism: false,
    // The run's minutes, then up to 3 minutes of healing and checks, then set-up.
    testTimeout: ((Number(process.env.CHAOS_MINUTES) || 3) + 6) * 60_000,
    hookTimeout: 120_000,
  },
});
