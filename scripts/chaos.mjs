// `npm run test:chaos -- --minutes N --seed S`: the bank test (test/chaos/bank.test.ts) under
// faults drawn from the seed for N minutes (default 3, and a fresh seed). The seed is printed,
// so a failing run replays with the same schedule.
import { spawnSync } from 'node:child_process';
import { parseArgs } from 'node:util';
import { root } from './prepare.mjs';

const { values } = parseArgs({ options: { minutes: { type: 'string' }, seed: { type: 'string' } } });
const minutes = Number(values.minutes ?? 3);
const seed = values.seed === undefined ? undefined : Number(values.seed);
if (!(minutes > 0 && minutes <= 600)) {
  console.error('--minutes must be a number of minutes from 1 to 600');
  process.exit(2);
}
if (seed !== undefined && !(Number.isInteger(seed) && seed > 0)) {
  console.error('--seed must be a positive integer (the one a run printed)');
  process.exit(2);
}
const env = { ...process.env, CHAOS_MINUTES: String(minutes), ...(seed ? { CHAOS_SEED: String(seed) } : {}) };
const run = spawnSync(process.execPath, ['scripts/test.mjs', '--config', 'vitest.chaos.config.ts'], {
  cwd: root,
  env,
  stdio: 'inherit',
});
process.exit(run.status ?? 1);
