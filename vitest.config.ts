import { defineConfig } from 'vitest/config';

/**
 * Two projects. `unit`: the pure rules (money, chain, partitions, batching, config), no process,
 * no database, seconds. `e2e`: everything else, against real PostgreSQL, Redis, API and worker
 * processes. `npm test` runs `unit` first and stops if it fails; `npx vitest run <file>` runs the
 * file in whichever project holds it (the e2e global setup only runs when an e2e file is picked).
 * The stress and scale tests have configs of their own (vitest.stress.config.ts, vitest.scale.config.ts).
 */
export default defineConfig({
  test: {
    reporters: ['default'],
    projects: [
      {
        test: {
          name: 'unit',
          include: ['test/unit/**/*.test.ts'],
          testTimeout: 10_000,
        },
      },
      {
        test: {
          name: 'e2e',
          include: ['test/**/*.test.ts'],
          exclude: ['test/unit/**', 'test/stress/**', 'test/scale/**', 'test/chaos/**'],
          globalSetup: ['test/global-setup.ts'],
          // Files run one after another: each starts real worker processes, and two files at once on
          // a 2-core machine would only measure each other.
          fileParallelism: false,
          testTimeout: 120_000,
          hookTimeout: 60_000,
        },
      },
    ],
  },
});
