/**
 * The bench's command line: the options and their usage text, checked and turned into the run's
 * configuration, and the settings each run makes for itself (database, Redis prefix, secrets).
 */
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { urlAsRole } from '@cs/db';
import type { LoadGeneratorName } from './load-process.ts';
import { findWrk } from './load-wrk.ts';
import { root } from './processes.ts';

export const usage = `npm run bench -- [options]
  --workers N            worker processes (default 1, as npm start runs)
  --duration S           seconds of load per HTTP workload (default 10)
  --max-requests N       at most N requests per HTTP workload (default 30000)
  --connections N        concurrent HTTP connections of the load generator (default 32)
  --load autocannon|wrk  the HTTP load generator (default autocannon; wrk: Debian's, apt-get install wrk)
  --rate R               offer R requests/s in all (open loop) instead of as fast as answered,
                         e.g. half the peak, to read latency below saturation
  --sellers N            sellers of the spread and mixed workloads (default 1000)
  --lock-seconds S       seconds per row-lock reference (default 5)
  --lock-connections N   PostgreSQL connections of the row-lock reference (default 8)
  --only a,b             run only these phases of spread,hot,mixed,synchot,syncspread,ceilhot,ceilspread,lockhot,lockspread
  --ceiling DIR          the bare pipeline of the ceil phases (default ../shared/ceiling from the project root)
  --profile              CPU-profile the API, workers and sync server (node --cpu-prof) and summarise
  --json FILE            also write every figure as JSON
  --keep-data            keep the database and Redis keys afterwards (kept anyway when a check fails)
Environment: BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/cs_bench; dropped and
recreated), BENCH_REDIS_URL or REDIS_URL, BATCH_SIZE, PARTITIONS, DB_POOL_SIZE (passed to the
product), BENCH_SHOW_LOGS=1 (the processes' logs), BENCH_LOG_LEVEL (default warn).`;

export const phaseNames = [
  'spread',
  'hot',
  'mixed',
  'synchot',
  'syncspread',
  'ceilhot',
  'ceilspread',
  'lockhot',
  'lockspread',
] as const;
export type PhaseName = (typeof phaseNames)[number];

/** The figures' conditions: written into the JSON output as they are. */
export interface Config {
  workers: number;
  durationSeconds: number;
  maxRequests: number;
  connections: number;
  load: LoadGeneratorName;
  rate: number | undefined;
  sellers: number;
  lockSeconds: number;
  lockConnections: number;
  partitions: number;
  batchSize: number;
  databaseUrl: string;
  redisUrl: string;
  /** How long the queues may take to drain after a workload before its jobs count as lost. */
  drainTimeoutMs: number;
}

export interface BenchOptions {
  config: Config;
  /** The phases to run (`--only`), all by default. */
  phases: ReadonlySet<PhaseName>;
  /** The bare pipeline's folder (api.mjs, worker.mjs) for the ceil phases. */
  ceilingDir: string;
  profile: boolean;
  json: string | undefined;
  keepData: boolean;
}

/** The command line, checked: prints the usage and exits with 0 on --help, with 2 on a bad value. */
export function parseOptions(): BenchOptions {
  const { values: opts } = parseArgs({
    options: {
      workers: { type: 'string', default: '1' },
      duration: { type: 'string', default: '10' },
      'max-requests': { type: 'string', default: '30000' },
      connections: { type: 'string', default: '32' },
      load: { type: 'string', default: 'autocannon' },
      ceiling: { type: 'string', default: '../shared/ceiling' },
      rate: { type: 'string' },
      sellers: { type: 'string', default: '1000' },
      'lock-seconds': { type: 'string', default: '5' },
      'lock-connections': { type: 'string', default: '8' },
      only: { type: 'string' },
      profile: { type: 'boolean', default: false },
      json: { type: 'string' },
      'keep-data': { type: 'boolean', default: false },
      help: { type: 'boolean', default: false },
    },
  });
  if (opts.help) {
    console.log(usage);
    process.exit(0);
  }
  const config: Config = {
    workers: positive('workers', opts.workers),
    durationSeconds: positive('duration', opts.duration),
    maxRequests: positive('max-requests', opts['max-requests']),
    connections: positive('connections', opts.connections),
    load: loadGenerator(opts.load),
    rate: opts.rate === undefined ? undefined : positive('rate', opts.rate),
    sellers: positive('sellers', opts.sellers),
    lockSeconds: positive('lock-seconds', opts['lock-seconds']),
    lockConnections: positive('lock-connections', opts['lock-connections']),
    partitions: Number(process.env.PARTITIONS ?? 16),
    batchSize: Number(process.env.BATCH_SIZE ?? 100),
    databaseUrl: process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/cs_bench',
    redisUrl: process.env.BENCH_REDIS_URL ?? process.env.REDIS_URL ?? 'redis://127.0.0.1:6379',
    drainTimeoutMs: 120_000,
  };
  const phases = new Set<PhaseName>(
    opts.only ? (opts.only.split(',').map((s) => s.trim()) as PhaseName[]) : [...phaseNames],
  );
  for (const name of phases) {
    if (!phaseNames.includes(name)) fail(`unknown phase "${name}"`);
  }
  if (config.load === 'wrk' && config.rate !== undefined) fail('--rate needs autocannon: wrk has no open-loop mode');
  return {
    config,
    phases,
    ceilingDir: resolve(root, opts.ceiling),
    profile: opts.profile,
    json: opts.json,
    keepData: opts['keep-data'],
  };
}

function loadGenerator(value: string): LoadGeneratorName {
  if (value !== 'autocannon' && value !== 'wrk') fail('--load must be autocannon or wrk');
  if (value === 'wrk' && !findWrk()) fail('--load wrk: wrk is not on PATH (Debian: apt-get install wrk)');
  return value;
}

function positive(name: string, value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) fail(`--${name} must be a positive integer`);
  return n;
}

function fail(message: string): never {
  console.error(`bench: ${message}\n\n${usage}`);
  process.exit(2);
}

/** What a run makes for itself: its database's name and roles, its Redis prefix, its secrets. */
export interface RunSettings {
  databaseName: string;
  redisPrefix: string;
  /** 36 characters: production wants 32 or more, and none of the placeholder words. */
  adminToken: string;
  /**
   * The ledger's chain key, new each run as a deployment's own would be. The product's processes,
   * the sync server and the row-lock loop seal with it, and `reconcile` verifies with it.
   */
  ledgerKey: string;
  sessionSecret: string;
  /**
   * The product connects as the application role, as in production (which refuses a superuser or
   * the tables' owner); the migration, run as the owner, grants it. Roles are shared by the whole
   * server: cs_app is the one tests and `npm start` use, and its grants live in this database only.
   * The bench's own queries and the row-lock reference stay on the owner's URL.
   */
  applicationUrl: string;
  /** Where the processes write their CPU profiles (`--profile`); undefined without it. */
  profileDir: string | undefined;
}

export function runSettings({ config, profile }: BenchOptions): RunSettings {
  return {
    databaseName: decodeURIComponent(new URL(config.databaseUrl).pathname.slice(1)),
    redisPrefix: `csbench-${process.pid}`,
    adminToken: `bench-admin-${randomBytes(12).toString('hex')}`,
    ledgerKey: randomBytes(32).toString('hex'),
    sessionSecret: randomBytes(32).toString('hex'),
    applicationUrl: urlAsRole(config.databaseUrl, 'cs_app', 'cs_app'),
    profileDir: profile ? join(tmpdir(), `cs-bench-profiles-${process.pid}`) : undefined,
  };
}
