import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    exclude: ['test/stress/**'],
    globalSetup: ['test/global-setup.ts'],
    // Files run one after another: each starts real worker processes, and two files at once on
    // a 2-core machine would only measure each other.
    fileParallelism: false,
    testTimeout: 120_000,
    hookTimeout: 60_000,
    reporters: ['default'],
  },
});
