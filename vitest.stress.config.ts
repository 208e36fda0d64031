import { defineConfig } from 'vitest/config';

/** The large versions of the proofs: minutes, not seconds; run with `npm run test:stress`. */
export default defineConfig({
  test: {
    include: ['test/stress/**/*.stress.test.ts'],
    globalSetup: ['test/global-setup.ts'],
    fileParallelism: false,
    testTimeout: 900_000,
    hookTimeout: 120_000,
  },
});
