/**
 * `npm run bench`: measures the whole system under load, with two references on the same
 * database to say how good the figures are. One command: it makes its own database and Redis
 * prefix, starts the API and N worker processes and the bench-only sync server as child
 * processes, seeds sellers through the API, drives each workload from a separate load-generator
 * process (bench/load.ts), waits for the queues to drain, reads latencies from the jobs table,
 * checks that every seller reconciles, prints a table, and exits non-zero if money went wrong.
 *
 * Options (`npm run bench -- --workers 3 --only hot,lockhot`): see `usage` below.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { createDb, isDatabaseUnavailable, migrateDatabase, urlAsRole } from '@cs/db';
import { reconcile } from '@cs/ledger';
import { createRedis, partitionLeaseKey } from '@cs/queue';
import postgres from 'postgres';
import { connect, type DirectSale, type Sql, sellInOneTransaction } from './direct-sale.ts';
import type { BenchSeller, LoadMessage, LoadPlan, LoadResult } from './load.ts';
import { BenchProcess, freePort, inParallel, root, waitHttpOk } from './processes.ts';
import { formatProfile, summarizeProfile } from './profile-summary.ts';
import { CpuMeter, parseCommandStats, parseRedisInfo, procStatusMiB, RssSampler, WaitSampler } from './samplers.ts';

const usage = `npm run bench -- [options]
  --workers N            worker processes (default 2)
  --duration S           seconds of load per HTTP workload (default 10)
  --max-requests N       at most N requests per HTTP workload (default 30000)
  --connections N        concurrent HTTP connections of the load generator (default 32)
  --rate R               offer R requests/s in all (open loop) instead of as fast as answered,
                         e.g. half the peak, to read latency below saturation
  --sellers N            sellers of the spread and mixed workloads (default 1000)
  --lock-seconds S       seconds per row-lock reference (default 5)
  --lock-connections N   PostgreSQL connections of the row-lock reference (default 8)
  --only a,b             run only these phases of spread,hot,mixed,synchot,syncspread,lockhot,lockspread
  --profile              CPU-profile the API, workers and sync server (node --cpu-prof) and summarise
  --json FILE            also write every figure as JSON
  --keep-data            keep the database and Redis keys afterwards (kept anyway when a check fails)
Environment: BENCH_DATABASE_URL (default postgres://postgres@127.0.0.1:5432/cs_bench; dropped and
recreated), BENCH_REDIS_URL or REDIS_URL, BATCH_SIZE, PARTITIONS, DB_POOL_SIZE (passed to the
product), BENCH_SHOW_LOGS=1 (the processes' logs), BENCH_LOG_LEVEL (default warn).`;

const { values: opts } = parseArgs({
  options: {
    workers: { type: 'string', default: '2' },
    duration: { type: 'string', default: '10' },
    'max-requests': { type: 'string', default: '30000' },
    connections: { type: 'string', default: '32' },
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
const positive = (name: string, value: string): number => {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) {
    console.error(`bench: --${name} must be a positive integer\n\n${usage}`);
    process.exit(2);
  }
  return n;
};
const config = {
  workers: positive('workers', opts.workers),
  durationSeconds: positive('duration', opts.duration),
  maxRequests: positive('max-requests', opts['max-requests']),
  connections: positive('connections', opts.connections),
  rate: opts.rate === undefined ? undefined : positive('rate', opts.rate),
  sellers: positive('sellers', opts.sellers),
  lockSeconds: positive('lock-seconds', opts['lock-seconds']),
  lockConnections: positive('lock-connections', opts['lock-connections']),
  partitions: Number(process.env.PARTITIONS ?? 16),
  batchSize: Number(process.env.BATCH_SIZE ?? 100),
  databaseUrl: process.env.BENCH_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/cs_bench',
  redisUrl: process.env.BENCH_REDIS_URL ?? process.env.REDIS_URL ?? 'redis://127.0.0.1:6379',
  /** How long the queues may take to drain after a workload before its jobs count as lost. */
  drainTimeoutMs: 120_000,
};

const phaseNames = ['spread', 'hot', 'mixed', 'synchot', 'syncspread', 'lockhot', 'lockspread'] as const;
type PhaseName = (typeof phaseNames)[number];
const selected = new Set<PhaseName>(
  opts.only ? (opts.only.split(',').map((s) => s.trim()) as PhaseName[]) : [...phaseNames],
);
for (const name of selected) {
  if (!phaseNames.includes(name)) {
    console.error(`bench: unknown phase "${name}"\n\n${usage}`);
    process.exit(2);
  }
}

/** Every seller starts with this, credited through the API's credit request and approval path. */
const FUNDING = 100_000_000_000n;
const databaseName = decodeURIComponent(new URL(config.databaseUrl).pathname.slice(1));
const redisPrefix = `csbench-${process.pid}`;
/** 36 characters: production wants 32 or more, and none of the placeholder words. */
const adminToken = `bench-admin-${randomBytes(12).toString('hex')}`;
/**
 * The ledger's chain key, new each run as a deployment's own would be. The product's processes,
 * the sync server and the row-lock loop seal with it, and `reconcile` verifies with it.
 */
const ledgerKey = randomBytes(32).toString('hex');
/**
 * The product connects as the application role, as in production (which refuses a superuser or
 * the tables' owner); the migration, run as the owner, grants it. Roles are shared by the whole
 * server: cs_app is the one tests and `npm start` use, and its grants live in this database only.
 * The bench's own queries and the row-lock reference stay on the owner's URL.
 */
const applicationUrl = urlAsRole(config.databaseUrl, 'cs_app', 'cs_app');
const profileDir = join(tmpdir(), `cs-bench-profiles-${process.pid}`);

interface JobStats {
  jobs: number;
  succeeded: number;
  rejected: number;
  failed: number;
  unfinished: number;
  sales: number;
  approvals: number;
  ledgerRows: number;
  /** Applying transactions (batches) that committed the phase's jobs, and their mean span in ms. */
  batches: number;
  batchMs: number;
  spanSeconds: number;
  p50: number;
  p95: number;
  p99: number;
  max: number;
}

interface PhaseResult {
  name: PhaseName;
  label: string;
  kind: 'api' | 'sync' | 'rowlock';
  load?: LoadResult;
  stats: JobStats;
  /** 2xx per second over the load (for the row-lock reference: commits per second). */
  acceptedPerSecond: number;
  /** Jobs finished per second: jobs / (last finished_at − first submitted_at). */
  committedPerSecond: number;
  salesPerSecond: number;
  rssMiB: Record<string, number>;
  /** CPU seconds used during the phase (load and drain) by group: api, workers, redis, sync, bench, postgres. */
  cpuSeconds: Record<string, number>;
  /** Redis commands run during the phase, by name, busiest first (HTTP phases only). */
  redisCommands?: Array<{ command: string; calls: number; usec: number }>;
  backends: string;
  unreconciled: number;
  problems: string[];
  warnings: string[];
}

// ---------------------------------------------------------------------------------------------
// Processes and connections, torn down in `cleanUp` whatever happens.

const processes: BenchProcess[] = [];
let loadChild: ChildProcess | undefined;
/** Drizzle, for `reconcile` from @cs/ledger; plain postgres.js for the bench's own queries. */
const bench = createDb(config.databaseUrl, { max: 2 });
const sql: Sql = connect(config.databaseUrl, 3);
const redis = createRedis(config.redisUrl);
redis.on('error', () => {});
const rss = new RssSampler(() => processes.filter((p) => p.running).map((p) => ({ name: p.name, pid: p.pid })));
const backendSampler = new WaitSampler(sql, databaseName);
const cpu = new CpuMeter(
  sql,
  databaseName,
  () => [
    ...processes.filter((p) => p.running).map((p) => ({ group: p.name.replace(/^worker\d+$/, 'workers'), pid: p.pid })),
    { group: 'bench', pid: process.pid },
  ],
  async () => {
    const info = parseRedisInfo(await redis.info('cpu'));
    return Number(info.get('used_cpu_user') ?? 0) + Number(info.get('used_cpu_sys') ?? 0);
  },
);
/** The processes whose CPU a phase of each kind is charged with. */
const cpuGroups = {
  api: ['api', 'workers', 'redis', 'postgres'],
  sync: ['sync', 'postgres'],
  rowlock: ['bench', 'postgres'],
};
let apiUrl = '';
let syncUrl = '';

/**
 * The bench's own queries wait out a PostgreSQL that briefly refuses connections: the server is
 * shared, and "too many clients" from a neighbour's test run must not abort a run midway.
 */
async function retrying<T>(query: () => Promise<T>, attempts = 20): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await query();
    } catch (error) {
      if (attempt >= attempts || !isDatabaseUnavailable(error)) throw error;
      await sleep(250 * attempt);
    }
  }
}

const fmt = (n: number, digits = 0) =>
  Number.isFinite(n)
    ? n.toLocaleString('en-US', { maximumFractionDigits: digits, minimumFractionDigits: digits })
    : '-';
const log = (line: string) => console.log(line);
const elapsed = (since: number) => `${((Date.now() - since) / 1000).toFixed(1)} s`;

async function main(): Promise<boolean> {
  const started = Date.now();
  log(
    `Charge Sales benchmark: ${cpus().length} cores (${cpus()[0]?.model.trim()}), ` +
      `${fmt(totalmem() / 2 ** 30, 1)} GiB, Node ${process.version}, load average ${loadavg()[0]?.toFixed(1)}`,
  );
  log(
    `  ${config.workers} worker processes, ${config.partitions} partitions, BATCH_SIZE ${config.batchSize}, ` +
      `${config.connections} HTTP connections, ${config.durationSeconds} s or ${fmt(config.maxRequests)} requests per workload`,
  );

  await recreateDatabase();
  await removeStaleRedisKeys();
  // Every connection of the bench's own pool opened now, while the shared server has room.
  await Promise.all([sql`select 1`, sql`select 1`, sql`select 1`]);
  const [pgInfo] = await sql<{ version: string; sc: string; fsync: string; sb: string; free: number; max: number }[]>`
    select split_part(version(), ' ', 2) as version, current_setting('synchronous_commit') as sc,
           current_setting('fsync') as fsync, current_setting('shared_buffers') as sb,
           current_setting('max_connections')::int as max,
           current_setting('max_connections')::int - (select count(*) from pg_stat_activity)::int as free`;
  log(
    `  PostgreSQL ${pgInfo?.version} (synchronous_commit=${pgInfo?.sc}, fsync=${pgInfo?.fsync}, ` +
      `shared_buffers=${pgInfo?.sb}), database ${databaseName}, Redis prefix ${redisPrefix}`,
  );
  // The API and each worker pool up to DB_POOL_SIZE connections; a shared server short of them
  // answers "too many clients", which shows up below as 503s and worker retries.
  const wanted = Number(process.env.DB_POOL_SIZE ?? 10) * (1 + config.workers);
  if (pgInfo && pgInfo.free < wanted + 10) {
    log(`  note: only ${pgInfo.free} of ${pgInfo.max} PostgreSQL connections are free; the product may open ${wanted}`);
  }

  await startProduct();
  log(`  started the API and ${config.workers} workers (${elapsed(started)})`);

  const setupStarted = Date.now();
  const sellers = await createSellers(config.sellers + 1);
  const [hot, ...spread] = sellers as [BenchSeller, ...BenchSeller[]];
  log(`  created ${fmt(sellers.length)} sellers through the API in ${elapsed(setupStarted)}`);
  const fundStarted = Date.now();
  const fundProblems = await fundSellers(sellers);
  if (fundProblems.length > 0) {
    for (const p of fundProblems) log(`  FAILED: ${p}`);
    return false;
  }
  log(
    `  funded each with ${fmt(Number(FUNDING))} rials (credit request + approval through the API) in ${elapsed(fundStarted)}`,
  );
  const leases = await waitForLeases();
  log(`  partition leases: ${leases}`);

  const results: PhaseResult[] = [];
  const run = async (name: PhaseName, phase: () => Promise<PhaseResult>) => {
    if (!selected.has(name)) return;
    await retrying(() => sql`vacuum (analyze) sellers, jobs, transactions, phone_numbers`);
    const result = await phase();
    results.push(result);
    const verdict = result.problems.length > 0 ? 'FAILED' : 'ok';
    const approvals = result.stats.approvals > 0 ? ` (${fmt(result.stats.approvals)} of them approvals)` : '';
    log(
      `  ${result.label}: ${fmt(result.stats.jobs)} jobs${approvals} in ${fmt(result.stats.batches)} transactions ` +
        `of ${fmt(result.stats.batchMs, 1)} ms on average, ${fmt(result.committedPerSecond)} committed/s, ` +
        `p99 ${fmt(result.stats.p99)} ms, ${result.unreconciled} unreconciled: ${verdict}`,
    );
    for (const p of result.problems) log(`    FAILED: ${p}`);
    for (const w of result.warnings) log(`    note: ${w}`);
  };

  log('');
  await run('spread', () => httpPhase('spread', 'api spread', 'api', spread));
  await run('hot', () => httpPhase('hot', 'api hot', 'api', [hot]));
  await run('mixed', () => httpPhase('mixed', 'api mixed', 'api', spread, 'mixed'));
  const finalProblems = await checkThroughApi(sellers);

  // The references run alone: the product's processes would hold their PostgreSQL connections
  // (the server is shared) and tick their leases meanwhile.
  await stopProcesses((p) => p.name !== 'sync');
  if (selected.has('synchot') || selected.has('syncspread')) {
    await startSync();
    await run('synchot', () => httpPhase('synchot', 'sync hot', 'sync', [hot]));
    await run('syncspread', () => httpPhase('syncspread', 'sync spread', 'sync', spread));
    await stopProcesses((p) => p.name === 'sync');
  }
  await run('lockhot', () => rowLockPhase('lockhot', 'row-lock hot', [hot]));
  await run('lockspread', () => rowLockPhase('lockspread', `row-lock ${spread.length}`, spread));

  finalProblems.push(...(await reconcileAll()));
  for (const p of processes) if (p.running) lifetimePeakMiB.set(p.name, procStatusMiB(p.pid, 'VmHWM'));
  const lifetime = [...lifetimePeakMiB].map(([name, mib]) => `${name} ${fmt(mib)}`).join(', ');

  log('');
  printTable(results);
  log('');
  printRatios(results);
  log('');
  log(`Peak RSS over the whole run (VmHWM, MiB): ${lifetime}`);
  log('PostgreSQL backends of the bench database, sampled during each phase:');
  for (const r of results) log(`  ${r.label.padEnd(16)} ${r.backends}`);
  log('Redis commands per committed job (INFO commandstats; BullMQ runs Lua scripts, counted as evalsha):');
  for (const r of results) {
    if (!r.redisCommands || r.stats.jobs === 0) continue;
    const perJob = r.redisCommands
      .slice(0, 4)
      .map((c) => `${c.command} ${fmt(c.calls / r.stats.jobs, 2)} calls, ${fmt(c.usec / r.stats.jobs, 1)} µs`)
      .join('; ');
    log(`  ${r.label.padEnd(16)} ${perJob}`);
  }
  const logged = processes.flatMap((p) => [...p.warnings].map(([msg, n]) => `${p.name}: "${msg}" ×${n}`));
  log(`Warnings logged by the processes: ${logged.length > 0 ? logged.join('; ') : 'none'}`);
  for (const p of finalProblems) log(`FAILED: ${p}`);

  if (opts.json) {
    writeFileSync(
      opts.json,
      `${JSON.stringify({ cores: cpus().length, config, results, finalProblems, lifetimePeakRssMiB: lifetime }, null, 2)}\n`,
    );
    log(`figures written to ${opts.json}`);
  }
  const ok = finalProblems.length === 0 && results.every((r) => r.problems.length === 0);
  log(
    `\n${ok ? 'bench passed' : 'bench FAILED'} in ${elapsed(started)} (load average now ${loadavg()[0]?.toFixed(1)}: ` +
      'other processes on this machine share its cores)',
  );
  return ok;
}

// ---------------------------------------------------------------------------------------------
// Setup

async function recreateDatabase(): Promise<void> {
  const admin = new URL(config.databaseUrl);
  admin.pathname = '/postgres';
  const client = postgres(admin.toString(), { max: 1, onnotice: () => {} });
  try {
    await client.unsafe(`drop database if exists "${databaseName.replaceAll('"', '""')}" with (force)`);
  } finally {
    await client.end({ timeout: 5 });
  }
  await migrateDatabase(config.databaseUrl, { applicationUrl });
}

// A directory per process: Node writes one profile per thread (tsx's loader hooks run on a
// thread of their own), and the main thread's is the one that matters.
/**
 * The API's heap cap, as `npm run start:api` sets it: without it V8 lets the heap grow lazily on a
 * large machine and the API's RSS passed 300 MiB under load, for no gain in throughput.
 */
const API_HEAP = ['--max-old-space-size=192'];
const nodeArgs = (name: string) => (opts.profile ? ['--cpu-prof', '--cpu-prof-dir', join(profileDir, name)] : []);

/**
 * A run whose checks failed keeps its Redis keys for inspection; the next run removes those of
 * bench processes that no longer exist (the prefix carries the pid), never a live run's.
 */
async function removeStaleRedisKeys(): Promise<void> {
  const alive = (pid: number) => {
    try {
      process.kill(pid, 0);
      return true;
    } catch (error) {
      return (error as NodeJS.ErrnoException).code === 'EPERM';
    }
  };
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', 'csbench-*', 'COUNT', 1000);
    cursor = next;
    const stale = keys.filter((key) => !alive(Number(/^csbench-(\d+):/.exec(key)?.[1] ?? process.pid)));
    if (stale.length > 0) await redis.unlink(...stale);
  } while (cursor !== '0');
}

async function startProduct(): Promise<void> {
  const apiPort = await freePort();
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    NODE_ENV: 'production',
    DATABASE_URL: applicationUrl,
    LEDGER_HMAC_KEY: ledgerKey,
    REDIS_URL: config.redisUrl,
    REDIS_PREFIX: redisPrefix,
    ADMIN_TOKEN: adminToken,
    PARTITIONS: String(config.partitions),
    BATCH_SIZE: String(config.batchSize),
    LOG_LEVEL: process.env.BENCH_LOG_LEVEL ?? 'warn',
  };
  // Several workers on one machine cannot share a health port.
  delete env.WORKER_HEALTH_PORT;
  const api = new BenchProcess('api', 'apps/api/src/index.ts', { ...env, PORT: String(apiPort) }, [
    ...nodeArgs('api'),
    ...API_HEAP,
  ]);
  processes.push(api);
  for (let i = 0; i < config.workers; i++) {
    processes.push(new BenchProcess(`worker${i}`, 'apps/worker/src/index.ts', env, nodeArgs(`worker${i}`)));
  }
  apiUrl = `http://127.0.0.1:${apiPort}`;
  await waitHttpOk(`${apiUrl}/readyz`, api);
}

/**
 * The sync server stands in for a production server too: it connects as the application role,
 * which also shows that its writes need no privilege the product lacks.
 */
async function startSync(): Promise<void> {
  const port = await freePort();
  const sync = new BenchProcess(
    'sync',
    'bench/sync-server.ts',
    { ...process.env, DATABASE_URL: applicationUrl, LEDGER_HMAC_KEY: ledgerKey, PORT: String(port) },
    nodeArgs('sync'),
  );
  processes.push(sync);
  syncUrl = `http://127.0.0.1:${port}`;
  await waitHttpOk(`${syncUrl}/healthz`, sync, 90_000);
}

/** Peak RSS of every process over its life (VmHWM), read just before it is stopped. */
const lifetimePeakMiB = new Map<string, number>();

async function stopProcesses(which: (p: BenchProcess) => boolean): Promise<void> {
  const stopping = processes.filter((p) => p.running && which(p));
  for (const p of stopping) lifetimePeakMiB.set(p.name, procStatusMiB(p.pid, 'VmHWM'));
  await Promise.all(stopping.map((p) => p.stop()));
}

/**
 * One API call of the setup or the checks. A 503 is the contract's "a dependency is unavailable,
 * nothing was done, retry later" (on a shared PostgreSQL: too many clients for a moment), so it is
 * retried; every other answer is the caller's to judge.
 */
async function call<T>(
  method: string,
  path: string,
  token: string,
  body?: unknown,
): Promise<{ status: number; body: T }> {
  for (let attempt = 1; ; attempt++) {
    const res = await fetch(`${apiUrl}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const answer = { status: res.status, body: (await res.json()) as T };
    if (res.status !== 503 || attempt >= 30) return answer;
    await sleep(Math.min(250 * attempt, 2000));
  }
}

async function createSellers(count: number): Promise<BenchSeller[]> {
  const run = randomBytes(4).toString('hex');
  return inParallel(
    Array.from({ length: count }, (_, i) => i),
    16,
    async (i) => {
      const res = await call<{ id: string; api_key: string }>('POST', '/api/sellers', adminToken, {
        name: `Bench seller ${i}`,
        email: `bench-${run}-${i}@example.com`,
        phone: `0935${String(i).padStart(7, '0')}`,
      });
      if (res.status !== 201) throw new Error(`creating a seller answered ${res.status}: ${JSON.stringify(res.body)}`);
      return { id: res.body.id, key: res.body.api_key };
    },
  );
}

/** Credits every seller through the product's own path, then checks every balance arrived. */
async function fundSellers(sellers: BenchSeller[]): Promise<string[]> {
  await inParallel(sellers, 16, async (seller) => {
    const request = await call<{ id: string }>('POST', '/api/credit-requests', adminToken, {
      seller: seller.id,
      amount: FUNDING.toString(),
    });
    if (request.status !== 201) throw new Error(`credit request answered ${request.status}`);
    const processed = await call('POST', `/api/credit-requests/${request.body.id}/process`, adminToken, {
      action: 'approve',
    });
    if (processed.status !== 202 && processed.status !== 200) throw new Error(`approval answered ${processed.status}`);
  });
  const left = await drain('funding');
  const [funded] = await retrying(
    () => sql<{ n: number }[]>`
      select count(*)::int as n from sellers where credit_balance = ${FUNDING.toString()}::bigint`,
  );
  const problems: string[] = [];
  if (left > 0) problems.push(`${left} funding jobs still unfinished`);
  if (funded?.n !== sellers.length) problems.push(`${funded?.n ?? 0} of ${sellers.length} sellers were funded`);
  return problems;
}

/**
 * Waits until every partition is leased and the leases are spread over all workers: a worker
 * that starts first takes every partition and gives them back one per lease tick, and measuring
 * before that settles would measure one worker.
 */
async function waitForLeases(timeoutMs = 45_000): Promise<string> {
  const keys = Array.from({ length: config.partitions }, (_, p) => partitionLeaseKey(redisPrefix, p));
  const fairShare = Math.ceil(config.partitions / config.workers);
  const deadline = Date.now() + timeoutMs;
  let shares: number[] = [];
  for (;;) {
    const owners = await redis.mget(...keys);
    const byOwner = new Map<string, number>();
    for (const owner of owners) if (owner) byOwner.set(owner, (byOwner.get(owner) ?? 0) + 1);
    shares = [...byOwner.values()].sort((a, b) => b - a);
    const settled = owners.every((o) => o !== null) && byOwner.size === config.workers && (shares[0] ?? 0) <= fairShare;
    if (settled) return `${shares.join(' + ')} partitions over ${byOwner.size} workers`;
    if (Date.now() > deadline) return `not settled after ${timeoutMs / 1000} s: ${shares.join(' + ') || 'none'}`;
    await sleep(250);
  }
}

// ---------------------------------------------------------------------------------------------
// Phases

async function backlog(): Promise<number> {
  const [row] = await retrying(
    () => sql<{ n: number }[]>`select count(*)::int as n from jobs where status in ('queued', 'processing')`,
  );
  return row?.n ?? 0;
}

/** Waits for every accepted job to be final; returns how many were still unfinished at the timeout. */
async function drain(label: string): Promise<number> {
  const started = Date.now();
  let lastPrint = Date.now();
  for (;;) {
    const left = await backlog();
    if (left === 0) return 0;
    if (Date.now() - started > config.drainTimeoutMs) return left;
    if (Date.now() - lastPrint >= 1000) {
      lastPrint = Date.now();
      log(`    ${label}: draining, ${fmt(left)} jobs queued (${elapsed(started)})`);
    }
    await sleep(100);
  }
}

/**
 * The sync server's drain: waits until it has finished the requests the load left in flight (the
 * load generator does not wait for its last answers), so that nothing commits while the phase is
 * read; returns how many were still in flight at the timeout.
 */
async function settleSync(): Promise<number> {
  const started = Date.now();
  for (;;) {
    const res = await fetch(`${syncUrl}/in-flight`);
    const { in_flight: left } = (await res.json()) as { in_flight: number };
    if (left === 0 || Date.now() - started > config.drainTimeoutMs) return left;
    await sleep(20);
  }
}

function runLoad(plan: LoadPlan, onTick: (tick: Extract<LoadMessage, { type: 'tick' }>) => void): Promise<LoadResult> {
  return new Promise((resolve, reject) => {
    const child = fork(join(root, 'bench/load.ts'), [], {
      cwd: root,
      execArgv: ['--import', 'tsx'],
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    loadChild = child;
    let done = false;
    child.on('message', (message: LoadMessage) => {
      if (message.type === 'tick') onTick(message);
      else if (message.type === 'done') {
        done = true;
        resolve(message.result);
      } else {
        done = true;
        reject(new Error(`load generator failed: ${message.message}`));
      }
    });
    child.on('exit', (code) => {
      loadChild = undefined;
      if (!done) reject(new Error(`load generator exited with ${code} before reporting`));
    });
    child.send(plan);
  });
}

const warmed = new Set<'api' | 'sync'>();

/**
 * A few seconds of unmeasured sales first: the first phase on a fresh process would otherwise
 * also measure V8 compiling the sale path and pools opening their connections.
 */
async function warmUp(kind: 'api' | 'sync', sellers: BenchSeller[]): Promise<void> {
  warmed.add(kind);
  const started = Date.now();
  const load = await runLoad(
    {
      name: 'warmup',
      url: kind === 'api' ? apiUrl : syncUrl,
      mode: 'sales',
      sellers,
      adminToken,
      durationSeconds: 2,
      maxRequests: config.maxRequests,
      connections: config.connections,
    },
    () => {},
  );
  if (kind === 'api') await drain('warm-up');
  log(
    `  warm-up of the ${kind === 'api' ? 'API and workers' : 'sync server'}: ${fmt(load.ok)} sales in ${elapsed(started)}`,
  );
}

async function httpPhase(
  name: PhaseName,
  label: string,
  kind: 'api' | 'sync',
  sellers: BenchSeller[],
  mode: LoadPlan['mode'] = 'sales',
): Promise<PhaseResult> {
  if (!warmed.has(kind)) await warmUp(kind, sellers);
  log(
    `${label}: ${mode === 'mixed' ? '90 % sales, 10 % credit requests and approvals' : 'sales'} over ${fmt(sellers.length)} seller(s), ${kind === 'api' ? 'product API' : 'sync server'}`,
  );
  const since = new Date();
  rss.start();
  backendSampler.start();
  const commandsBefore = parseCommandStats(await redis.info('commandstats'));
  await retrying(() => cpu.begin());
  let lastResponses = 0;
  const load = await runLoad(
    {
      name,
      url: kind === 'api' ? apiUrl : syncUrl,
      mode,
      sellers,
      adminToken,
      durationSeconds: config.durationSeconds,
      maxRequests: config.maxRequests,
      connections: config.connections,
      rate: config.rate,
    },
    (tick) => {
      const perSecond = tick.responses - lastResponses;
      lastResponses = tick.responses;
      const memory = [...rss.current()]
        .filter(([process]) => (kind === 'api' ? process !== 'sync' : process === 'sync'))
        .map(([process, mib]) => `${process} ${fmt(mib)}`)
        .join(' ');
      const queued =
        kind === 'api'
          ? backlog().then(
              (n) => `  queued ${fmt(n)}`,
              () => '  queued ?',
            )
          : Promise.resolve('');
      void queued.then((q) =>
        log(
          `    ${label} ${String(tick.second).padStart(3)} s  ${fmt(perSecond).padStart(6)} responses/s  ` +
            `2xx ${fmt(tick.ok)}  non-2xx ${fmt(tick.notOk)}${q}  RSS MiB ${memory}`,
        ),
      );
    },
  );
  const left = kind === 'api' ? await drain(label) : await settleSync();
  const cpuSeconds = Object.fromEntries(await retrying(() => cpu.end()));
  const redisCommands = commandDelta(commandsBefore, parseCommandStats(await redis.info('commandstats')));
  const rssMiB = Object.fromEntries(
    [...rss.stop()].filter(([process]) => (kind === 'api' ? process !== 'sync' : process === 'sync')),
  );
  const backends = backendSampler.stop();
  const stats = await jobStats(name, since);

  const problems: string[] = [];
  const warnings: string[] = [];
  if (load.ok === 0) problems.push('no request succeeded');
  if (left > 0)
    problems.push(`${fmt(left)} accepted jobs still unfinished ${config.drainTimeoutMs / 1000} s after the load`);
  const acceptedJobs = kind === 'api' ? okCount(load, 'sale') + okCount(load, 'approval') : okCount(load, 'sale');
  if (stats.jobs < acceptedJobs)
    problems.push(`${fmt(acceptedJobs)} jobs accepted but only ${fmt(stats.jobs)} recorded`);
  if (stats.failed > 0) problems.push(`${fmt(stats.failed)} jobs failed`);
  if (stats.ledgerRows !== stats.succeeded)
    problems.push(`${fmt(stats.succeeded)} jobs succeeded but ${fmt(stats.ledgerRows)} ledger rows were written`);
  if (stats.rejected > 0) warnings.push(`${fmt(stats.rejected)} jobs rejected (business refusals)`);
  if (load.notOk > 0) warnings.push(`non-2xx answers by status: ${JSON.stringify(nonOkStatuses(load))}`);
  if (load.errors > 0) warnings.push(`${fmt(load.errors)} connection errors, ${fmt(load.timeouts)} timeouts`);
  const unreconciled = await unreconciledSellers();
  if (unreconciled > 0) problems.push(`${unreconciled} sellers do not reconcile`);

  return {
    name,
    label,
    kind,
    load,
    stats,
    acceptedPerSecond: load.ok / load.durationSeconds,
    committedPerSecond: stats.spanSeconds > 0 ? stats.jobs / stats.spanSeconds : 0,
    salesPerSecond: stats.spanSeconds > 0 ? stats.sales / stats.spanSeconds : 0,
    rssMiB,
    cpuSeconds,
    redisCommands,
    backends,
    unreconciled,
    problems,
    warnings,
  };
}

/**
 * The database's own ceiling for one-transaction-per-sale: the same SQL as the sync server, from
 * several connections in a loop, no HTTP, no queue.
 */
async function rowLockPhase(name: PhaseName, label: string, sellers: BenchSeller[]): Promise<PhaseResult> {
  log(
    `${label}: one transaction per sale from ${config.lockConnections} connections for ${config.lockSeconds} s over ${fmt(sellers.length)} row(s)`,
  );
  const since = new Date();
  const pool = connect(config.databaseUrl, config.lockConnections);
  const phones = Array.from({ length: 10_000 }, (_, i) => `0912${String(i * 7 + 1_000_000).padStart(7, '0')}`);
  const amounts = [1_000n, 2_000n, 5_000n, 10_000n, 20_000n];
  const pick = <T>(items: readonly T[]): T => items[Math.floor(Math.random() * items.length)] as T;
  // Open every connection before the clock starts.
  await retrying(() => Promise.all(Array.from({ length: config.lockConnections }, () => pool`select 1`)));
  backendSampler.start();
  await retrying(() => cpu.begin());
  let seq = 0;
  let committed = 0;
  let refused = 0;
  const started = Date.now();
  const end = started + config.lockSeconds * 1000;
  const progress = setInterval(
    () => log(`    ${label} ${elapsed(started).padStart(7)}  ${fmt(committed)} committed`),
    1000,
  );
  await Promise.all(
    Array.from({ length: config.lockConnections }, async () => {
      while (Date.now() < end) {
        const sale: DirectSale = {
          sellerId: pick(sellers).id,
          phoneNumber: pick(phones),
          amount: pick(amounts),
          requestId: `${name}-${++seq}`,
          receivedAt: new Date(),
        };
        const outcome = await sellInOneTransaction(pool, sale, ledgerKey);
        if (outcome.ok) committed++;
        else refused++;
      }
    }),
  );
  const seconds = (Date.now() - started) / 1000;
  clearInterval(progress);
  const backends = backendSampler.stop();
  const cpuSeconds = Object.fromEntries(await retrying(() => cpu.end()));
  await pool.end({ timeout: 5 });
  const stats = await jobStats(name, since);
  const unreconciled = await unreconciledSellers();
  const problems: string[] = [];
  if (stats.jobs !== committed)
    problems.push(`${fmt(committed)} sales committed but ${fmt(stats.jobs)} job rows found`);
  if (stats.ledgerRows !== stats.succeeded)
    problems.push(`${fmt(stats.ledgerRows)} ledger rows for ${fmt(stats.succeeded)} sales`);
  if (unreconciled > 0) problems.push(`${unreconciled} sellers do not reconcile`);
  return {
    name,
    label,
    kind: 'rowlock',
    stats,
    acceptedPerSecond: committed / seconds,
    committedPerSecond: stats.spanSeconds > 0 ? stats.jobs / stats.spanSeconds : 0,
    salesPerSecond: stats.spanSeconds > 0 ? stats.sales / stats.spanSeconds : 0,
    rssMiB: {},
    cpuSeconds,
    backends,
    unreconciled,
    problems,
    warnings: refused > 0 ? [`${refused} sales refused`] : [],
  };
}

const okCount = (load: LoadResult, kind: keyof LoadResult['byKind']) =>
  Object.entries(load.byKind[kind])
    .filter(([status]) => status.startsWith('2'))
    .reduce((sum, [, n]) => sum + n, 0);

function nonOkStatuses(load: LoadResult): Record<string, Record<string, number>> {
  const out: Record<string, Record<string, number>> = {};
  for (const [kind, counts] of Object.entries(load.byKind)) {
    for (const [status, n] of Object.entries(counts)) {
      if (status.startsWith('2')) continue;
      out[kind] = { ...out[kind], [status]: n };
    }
  }
  return out;
}

/**
 * Figures of a phase from the jobs table: the jobs carry the load's request ids (`<phase>-<n>`).
 * Latency is submission (the API's insert) to the commit of the batch that applied the job
 * (finished_at, set by the batch's last statement before COMMIT).
 */
async function jobStats(tag: string, since: Date): Promise<JobStats> {
  const query = (filter: postgres.PendingQuery<postgres.Row[]>) => sql<JobStats[]>`
    with phase as (
      select j.*, t.id as ledger_id from jobs j left join transactions t on t.job_id = j.id where ${filter}
    ), batches as (
      -- started_at is the applying transaction's now(): the same for every job of one batch.
      select started_at, max(finished_at) as finished_at from phase where started_at is not null group by started_at
    )
    select count(*)::int as jobs,
           count(*) filter (where status = 'succeeded')::int as succeeded,
           count(*) filter (where status = 'rejected')::int as rejected,
           count(*) filter (where status = 'failed')::int as failed,
           count(*) filter (where finished_at is null)::int as unfinished,
           count(*) filter (where type = 'charge_sale' and status = 'succeeded')::int as sales,
           count(*) filter (where type = 'credit_approval')::int as approvals,
           count(ledger_id)::int as "ledgerRows",
           (select count(*) from batches)::int as batches,
           coalesce((select 1000 * extract(epoch from avg(finished_at - started_at)) from batches), 0)::float8 as "batchMs",
           coalesce(extract(epoch from max(finished_at) - min(submitted_at)), 0)::float8 as "spanSeconds",
           coalesce(1000 * percentile_cont(0.5) within group (order by extract(epoch from finished_at - submitted_at)), 0)::float8 as p50,
           coalesce(1000 * percentile_cont(0.95) within group (order by extract(epoch from finished_at - submitted_at)), 0)::float8 as p95,
           coalesce(1000 * percentile_cont(0.99) within group (order by extract(epoch from finished_at - submitted_at)), 0)::float8 as p99,
           coalesce(1000 * extract(epoch from max(finished_at - submitted_at)), 0)::float8 as max
    from phase`;
  const [tagged] = await retrying(() => query(sql`starts_with(coalesce(j.request_id, ''), ${`${tag}-`})`));
  if (tagged && tagged.jobs > 0) return tagged;
  // Request ids not carried through: phases run one after another, so the time window is exact.
  const [windowed] = await retrying(() => query(sql`j.submitted_at >= ${since}`));
  if (!windowed) throw new Error('job statistics returned nothing');
  return windowed;
}

async function unreconciledSellers(): Promise<number> {
  return (await retrying(() => reconcile(bench.db, { ledgerKey }))).filter((r) => !r.isReconciled).length;
}

/** A sample of sellers through the public endpoint, while the API runs. */
async function checkThroughApi(sellers: BenchSeller[]): Promise<string[]> {
  const problems: string[] = [];
  const sample = [sellers[0], ...sellers.slice(1).filter((_, i) => i % 100 === 0)].filter(
    (s): s is BenchSeller => s !== undefined,
  );
  for (const seller of sample) {
    const res = await call<{ is_reconciled: boolean }>('GET', `/api/sellers/${seller.id}/reconcile`, seller.key);
    if (res.status !== 200 || !res.body.is_reconciled)
      problems.push(`GET /api/sellers/${seller.id}/reconcile: ${res.status} ${JSON.stringify(res.body)}`);
  }
  log(
    `  ${sample.length} sellers checked through GET /api/sellers/{id}/reconcile: ${problems.length > 0 ? 'FAILED' : 'ok'}`,
  );
  return problems;
}

/** Every seller against its ledger once more, after the last phase. */
async function reconcileAll(): Promise<string[]> {
  const all = await retrying(() => reconcile(bench.db, { ledgerKey }));
  const bad = all.filter((r) => !r.isReconciled);
  log(
    `\nreconcile: ${all.length - bad.length} of ${all.length} sellers reconcile (reconcile(db) after the last phase)`,
  );
  return bad.length > 0 ? [`${bad.length} of ${all.length} sellers do not reconcile`] : [];
}

// ---------------------------------------------------------------------------------------------
// Report

function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    `| ${cells.map((c, i) => (i === 0 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join(' | ')} |`;
  return [
    line(header),
    `|${widths.map((w, i) => (i === 0 ? `:${'-'.repeat(w + 1)}` : `${'-'.repeat(w + 1)}:`)).join('|')}|`,
    ...rows.map(line),
  ].join('\n');
}

function printTable(results: PhaseResult[]): void {
  const header = [
    'workload',
    'requests',
    'accepted/s',
    'non-2xx',
    'committed/s',
    'jobs ok/rej/fail',
    'jobs/tx',
    'p50 ms',
    'p95 ms',
    'p99 ms',
    'http p99 ms',
    'peak RSS MiB',
    'reconciled',
  ];
  const rows = results.map((r) => {
    const memory = Object.entries(r.rssMiB)
      .map(([process, mib]) => `${process.replace(/^worker/, 'w')} ${fmt(mib)}`)
      .join(', ');
    return [
      r.label,
      r.load ? fmt(r.load.responses) : fmt(r.stats.jobs),
      fmt(r.acceptedPerSecond),
      r.load ? fmt(r.load.notOk + r.load.errors) : '-',
      fmt(r.committedPerSecond),
      `${fmt(r.stats.succeeded)}/${fmt(r.stats.rejected)}/${fmt(r.stats.failed)}`,
      r.stats.batches > 0 ? fmt(r.stats.jobs / r.stats.batches, 1) : '-',
      fmt(r.stats.p50, 1),
      fmt(r.stats.p95, 1),
      fmt(r.stats.p99, 1),
      r.load ? fmt(r.load.latencyMs.p99) : '-',
      memory || '-',
      r.unreconciled === 0 ? 'yes' : `NO (${r.unreconciled})`,
    ];
  });
  log(table(header, rows));
  log(
    'accepted/s: 2xx answers per second of load (row-lock: commits per second). committed/s: jobs of the phase / ' +
      '(last finished_at − first submitted_at), after the queues drained. p50/p95/p99: submission → commit, from the ' +
      'jobs table. jobs/tx: jobs per committing transaction. http p99: the load generator’s response time. ' +
      'peak RSS: max VmRSS sampled during the phase.',
  );
  log('');
  const groups = ['api', 'workers', 'redis', 'sync', 'bench', 'postgres'];
  log(
    table(
      ['CPU ms per committed job', ...groups, 'total', 'load generator'],
      results.map((r) => {
        const charged = cpuGroups[r.kind];
        const perJob = (seconds: number) => (r.stats.jobs > 0 ? fmt((1000 * seconds) / r.stats.jobs, 2) : '-');
        const total = charged.reduce((sum, g) => sum + (r.cpuSeconds[g] ?? 0), 0);
        return [
          r.label,
          ...groups.map((g) => (charged.includes(g) ? perJob(r.cpuSeconds[g] ?? 0) : '-')),
          perJob(total),
          r.load ? perJob(r.load.cpuSeconds) : '-',
        ];
      }),
    ),
  );
  log(
    'CPU (user + system, /proc/<pid>/stat) over the load and the drain, divided by the jobs committed. bench: the ' +
      'row-lock loop runs in the bench process. redis: the Redis server (INFO cpu). postgres: the backends serving ' +
      'the bench database. load generator: ' +
      'the autocannon process (not in the total).',
  );
}

function printRatios(results: PhaseResult[]): void {
  const rate = (name: PhaseName) => results.find((r) => r.name === name)?.committedPerSecond;
  const ratio = (label: string, a: PhaseName, b: PhaseName) => {
    const x = rate(a);
    const y = rate(b);
    const value = x !== undefined && y !== undefined && y > 0 ? `${(x / y).toFixed(2)}×` : 'n/a';
    return [label, x === undefined ? '-' : fmt(x), y === undefined ? '-' : fmt(y), value];
  };
  log(
    table(
      ['ratio (committed/s)', 'product', 'reference', 'ratio'],
      [
        ratio('hot ÷ row-lock rate, one hot row', 'hot', 'lockhot'),
        ratio('hot ÷ sync baseline hot', 'hot', 'synchot'),
        ratio(`spread ÷ row-lock rate, ${config.sellers} rows`, 'spread', 'lockspread'),
        ratio('spread ÷ sync baseline spread', 'spread', 'syncspread'),
      ],
    ),
  );
}

// ---------------------------------------------------------------------------------------------
// Teardown

async function cleanUp(keepData: boolean): Promise<void> {
  loadChild?.kill('SIGTERM');
  await Promise.all(processes.map((p) => p.stop()));
  if (opts.profile) {
    log(`\nCPU profiles in ${profileDir} (main thread of each process):`);
    for (const p of processes) {
      const dir = join(profileDir, p.name);
      const profiles = existsSync(dir)
        ? readdirSync(dir)
            .filter((f) => f.endsWith('.cpuprofile'))
            .map((f) => summarizeProfile(join(dir, f)))
        : [];
      const main = profiles.sort((a, b) => b.busyMs - a.busyMs)[0];
      log(main ? `${p.name}: ${formatProfile(main)}` : `${p.name}: no profile written`);
    }
  }
  if (!keepData) {
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${redisPrefix}:*`, 'COUNT', 1000);
      cursor = next;
      if (keys.length > 0) await redis.unlink(...keys);
    } while (cursor !== '0');
  }
  await redis.quit().catch(() => {});
  await bench.close();
  await sql.end({ timeout: 5 });
  if (!keepData) {
    const admin = new URL(config.databaseUrl);
    admin.pathname = '/postgres';
    const client = postgres(admin.toString(), { max: 1, onnotice: () => {} });
    await client.unsafe(`drop database if exists "${databaseName.replaceAll('"', '""')}" with (force)`).catch(() => {});
    await client.end({ timeout: 5 });
  } else {
    log(`kept database ${databaseName} and Redis keys ${redisPrefix}:*`);
  }
}

let interrupted = false;
const abort = (why: string, exitCode: number) => {
  if (interrupted) return;
  interrupted = true;
  log(`\n${why}: stopping the processes`);
  void cleanUp(true).finally(() => process.exit(exitCode));
};
process.once('SIGINT', () => abort('interrupted', 130));
// A stray rejection must not leave the API, workers and sync server running without their parent.
process.on('unhandledRejection', (error) => abort(`unexpected error: ${(error as Error)?.stack ?? error}`, 1));

let passed = false;
try {
  passed = await main();
} catch (error) {
  console.error(`bench: ${(error as Error).stack ?? error}`);
  for (const p of processes) if (p.recentLogs().trim()) console.error(p.recentLogs());
}
if (!interrupted) {
  await cleanUp(opts['keep-data'] || !passed);
  process.exit(passed ? 0 : 1);
}

/** Redis commands run between two `INFO commandstats` readings, busiest first. */
function commandDelta(
  before: Map<string, { calls: number; usec: number }>,
  after: Map<string, { calls: number; usec: number }>,
): Array<{ command: string; calls: number; usec: number }> {
  return [...after]
    .map(([command, { calls, usec }]) => ({
      command,
      calls: calls - (before.get(command)?.calls ?? 0),
      usec: usec - (before.get(command)?.usec ?? 0),
    }))
    .filter((c) => c.calls > 0)
    .sort((a, b) => b.usec - a.usec);
}
