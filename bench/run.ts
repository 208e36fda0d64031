/**
 * `npm run bench`: measures the whole system under load, with two references on the same
 * database to say how good the figures are. One command: it makes its own database and Redis
 * prefix, starts the API and N worker processes and the bench-only sync server as child
 * processes, seeds sellers through the API, drives each workload from a separate load-generator
 * process (bench/load.ts), waits for the queues and the deliveries to drain, reads latencies from
 * the jobs and deliveries tables, checks that every seller reconciles and every debited sale was
 * delivered, prints a table, and exits non-zero if money went wrong.
 *
 * Options (`npm run bench -- --workers 3 --only hot,lockhot`): see `usage` in options.ts.
 */
import { Ceiling } from './ceiling.ts';
import { BENCH_POOL_SIZE, closeContext, createContext } from './context.ts';
import type { BenchSeller } from './load.ts';
import { parseOptions } from './options.ts';
import { elapsed, fmt, log } from './output.ts';
import { Phases } from './phases.ts';
import { waitForLeases } from './product.ts';
import { printMachine, printPostgres, printReport, printVerdict, type RunSummary, writeJson } from './report.ts';
import { seedSellers } from './seed.ts';
import { checkThroughApi, reconcileAll } from './stats.ts';
import { describePostgres, recreateDatabase, removeStaleRedisKeys } from './storage.ts';

const options = parseOptions();
const ctx = createContext(options);

/** The whole run; true when every check passed. */
async function benchmark(): Promise<boolean> {
  const { config, run, processes } = ctx;
  const started = Date.now();

  // Setup: a fresh database and Redis prefix, the product's processes, sellers funded through the API.
  printMachine(config);
  await recreateDatabase(config.databaseUrl, run);
  await removeStaleRedisKeys(ctx.redis);
  printPostgres(await describePostgres(ctx.sql, BENCH_POOL_SIZE), config, run);
  await processes.startProduct();
  log(`  started the API and ${config.workers} workers (${elapsed(started)})`);
  const { sellers, problems: fundProblems } = await seedSellers(ctx, config.sellers + 1);
  if (fundProblems.length > 0) {
    for (const p of fundProblems) log(`  FAILED: ${p}`);
    return false;
  }
  const [hot, ...spread] = sellers as [BenchSeller, ...BenchSeller[]];
  log(`  partition leases: ${await waitForLeases(ctx.redis, config, run.redisPrefix)}`);

  // Phases: the product's workloads, then the references (sync server, bare pipeline, row lock).
  const phases = new Phases(ctx, options.phases);
  log('');
  await phases.http('spread', 'api spread', 'api', spread);
  await phases.http('hot', 'api hot', 'api', [hot]);
  await phases.http('mixed', 'api mixed', 'api', spread, 'mixed');
  const finalProblems = await checkThroughApi(processes.apiUrl, sellers);
  // The references run alone: the product's processes would hold their PostgreSQL connections
  // (the server is shared) and tick their leases meanwhile.
  await processes.stop((p) => p.name !== 'sync');
  if (phases.includes('synchot', 'syncspread')) {
    await processes.startSync();
    await phases.http('synchot', 'sync hot', 'sync', [hot]);
    await phases.http('syncspread', 'sync spread', 'sync', spread);
    await processes.stop((p) => p.name === 'sync');
  }
  // The bare pipeline of the same design, alone too, in a database of its own.
  if (phases.includes('ceilhot', 'ceilspread')) {
    const ceiling = await Ceiling.open(ctx, options.ceilingDir, config.sellers + 1).catch((error: Error) => {
      finalProblems.push(`the bare pipeline did not start: ${error.message}`);
      return undefined;
    });
    if (ceiling) {
      try {
        await phases.ceiling('ceilhot', 'ceiling hot', ceiling, ceiling.sellers(1, 1));
        await phases.ceiling('ceilspread', 'ceiling spread', ceiling, ceiling.sellers(2, config.sellers));
      } finally {
        const failed = phases.results.some((r) => r.kind === 'ceiling' && r.problems.length > 0);
        finalProblems.push(...(await ceiling.close(options.keepData || failed)));
      }
    }
  }
  await phases.rowLock('lockhot', 'row-lock hot', [hot]);
  await phases.rowLock('lockspread', `row-lock ${spread.length}`, spread);
  finalProblems.push(...(await reconcileAll(ctx.bench.db, run.ledgerKey)));

  // Report
  const summary: RunSummary = {
    results: phases.results,
    finalProblems,
    lifetime: [...processes.lifetimePeaks()].map(([name, mib]) => `${name} ${fmt(mib)}`).join(', '),
    logged: processes.loggedWarnings(),
  };
  printReport(summary, config);
  if (options.json) writeJson(options.json, summary, config);
  const ok = finalProblems.length === 0 && phases.results.every((r) => r.problems.length === 0);
  printVerdict(ok, started);
  return ok;
}

// Exit status: 0 when every check passed, 1 otherwise, 130 on Ctrl-C. The processes are stopped
// whatever happens; the database and Redis keys are removed only after a run whose checks passed
// (and not with --keep-data).
let interrupted = false;
const abort = (why: string, exitCode: number) => {
  if (interrupted) return;
  interrupted = true;
  log(`\n${why}: stopping the processes`);
  void closeContext(ctx, true).finally(() => process.exit(exitCode));
};
process.once('SIGINT', () => abort('interrupted', 130));
// A stray rejection must not leave the API, workers and sync server running without their parent.
process.on('unhandledRejection', (error) => abort(`unexpected error: ${(error as Error)?.stack ?? error}`, 1));

let passed = false;
try {
  passed = await benchmark();
} catch (error) {
  console.error(`bench: ${(error as Error).stack ?? error}`);
  for (const logs of ctx.processes.recentLogs()) console.error(logs);
}
if (!interrupted) {
  await closeContext(ctx, options.keepData || !passed);
  process.exit(passed ? 0 : 1);
}
