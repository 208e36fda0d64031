/**
 * What the parts of one run share, made once at the start and closed once at the end: the run's
 * settings, the bench's own connections, the processes it started, the load generator and the
 * samplers that watch them.
 */
import { createDb } from '@cs/db';
import { createRedis } from '@cs/queue';
import { connect, type Sql } from './direct-sale.ts';
import { LoadGenerator } from './load-process.ts';
import { type BenchOptions, type Config, type RunSettings, runSettings } from './options.ts';
import { log } from './output.ts';
import { RunProcesses } from './product.ts';
import { CpuMeter, isLocal, parseRedisInfo, RssSampler, WaitSampler } from './samplers.ts';
import { dropDatabase, removeRedisKeys } from './storage.ts';

/** Connections of the bench's own postgres.js pool (its queries and the samplers'). */
export const BENCH_POOL_SIZE = 3;

export interface BenchContext {
  readonly config: Config;
  readonly run: RunSettings;
  /** Drizzle, for `reconcile` from @cs/ledger; plain postgres.js for the bench's own queries. */
  readonly bench: ReturnType<typeof createDb>;
  readonly sql: Sql;
  readonly redis: ReturnType<typeof createRedis>;
  readonly processes: RunProcesses;
  readonly load: LoadGenerator;
  readonly rssSampler: RssSampler;
  /** The backends and CPU of the bench database; `metersFor` gives the same for another database. */
  readonly waitSampler: WaitSampler;
  readonly cpuMeter: CpuMeter;
  /** Samplers of the running processes and of another database's backends (the bare pipeline's). */
  readonly metersFor: (database: string) => { waitSampler: WaitSampler; cpuMeter: CpuMeter };
}

/**
 * The CPU table's column of a process: the product's workers and the bare pipeline's worker are
 * `workers`, its API `api` (the ceil phases run alone, so nothing else is counted with them).
 */
const cpuGroup = (processName: string) => processName.replace(/^ceil-/, '').replace(/^worker\d*$/, 'workers');

/** The connections open lazily: nothing reaches the database before it is recreated. */
export function createContext(options: BenchOptions): BenchContext {
  const { config } = options;
  const run = runSettings(options);
  const sql = connect(config.databaseUrl, BENCH_POOL_SIZE);
  const redis = createRedis({ url: config.redisUrl });
  redis.on('error', () => {});
  const processes = new RunProcesses(config, run);
  const metersFor = (database: string) => ({
    waitSampler: new WaitSampler(sql, database),
    cpuMeter: new CpuMeter(
      sql,
      database,
      () => [
        ...processes.running().map((p) => ({ group: cpuGroup(p.name), pid: p.pid })),
        { group: 'bench', pid: process.pid },
      ],
      async () => {
        const info = parseRedisInfo(`${await redis.info('cpu')}\n${await redis.info('server')}`);
        const local = isLocal(new URL(config.redisUrl).hostname);
        return {
          cpuSeconds: Number(info.get('used_cpu_user') ?? 0) + Number(info.get('used_cpu_sys') ?? 0),
          pid: local ? Number(info.get('process_id')) || undefined : undefined,
        };
      },
    ),
  });
  return {
    config,
    run,
    bench: createDb(config.databaseUrl, { max: 2 }),
    sql,
    redis,
    processes,
    load: new LoadGenerator(config.load),
    rssSampler: new RssSampler(() => processes.running().map((p) => ({ name: p.name, pid: p.pid }))),
    ...metersFor(run.databaseName),
    metersFor,
  };
}

/** Stops every process and closes every connection; without `keepData`, removes the run's data. */
export async function closeContext(ctx: BenchContext, keepData: boolean): Promise<void> {
  ctx.load.kill();
  await ctx.processes.stopAll();
  ctx.processes.printProfiles();
  if (!keepData) await removeRedisKeys(ctx.redis, ctx.run.redisPrefix);
  await ctx.redis.quit().catch(() => {});
  await ctx.bench.close();
  await ctx.sql.end({ timeout: 5 });
  if (!keepData) {
    await dropDatabase(ctx.config.databaseUrl, ctx.run.databaseName).catch(() => {});
  } else {
    log(`kept database ${ctx.run.databaseName} and Redis keys ${ctx.run.redisPrefix}:*`);
  }
}
