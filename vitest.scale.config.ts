import { defineConfig } from 'vitest/config';

/**
 * Beyond one machine: a Redis Cluster, PgBouncer, workers on several network namespaces. Each
 * test starts the servers it needs from Debian's binaries on free ports and stops them; run with
 * `npm run test:scale` (CI runs it after the default suite).
 */
export default defineConfig({
  test: {
    include: ['test/scale/**/*.test.ts'],
    globalSetup: ['test/global-setup.ts'],
    fileParallelism: false,
    testTimeout: 300_000,
    hookTimeout: 120_000,
  },
});
