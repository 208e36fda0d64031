/**
 * What the bench prints about the run: the machine and server it ran on, then, after the phases,
 * the tables (figures, CPU per job, ratios to the references), the per-phase backends and Redis
 * commands, the JSON file of every figure, and the verdict.
 */
import { writeFileSync } from 'node:fs';
import { cpus, loadavg, totalmem } from 'node:os';
import type { Config, PhaseName, RunSettings } from './options.ts';
import { elapsed, fmt, log } from './output.ts';
import type { PhaseKind, PhaseResult } from './phases.ts';
import type { PostgresSettings } from './storage.ts';

/** The processes whose CPU a phase of each kind is charged with. */
const cpuGroups: Record<PhaseKind, string[]> = {
  api: ['api', 'workers', 'redis', 'postgres'],
  sync: ['sync', 'postgres'],
  // The bare pipeline's API and its one worker.
  ceiling: ['api', 'workers', 'redis', 'postgres'],
  rowlock: ['bench', 'postgres'],
};

export function printMachine(config: Config): void {
  log(
    `Charge Sales benchmark: ${cpus().length} cores (${cpus()[0]?.model.trim()}), ` +
      `${fmt(totalmem() / 2 ** 30, 1)} GiB, Node ${process.version}, load average ${loadavg()[0]?.toFixed(1)}`,
  );
  log(
    `  ${config.workers} worker process${config.workers === 1 ? '' : 'es'}, ${config.partitions} partitions, BATCH_SIZE ${config.batchSize}, ` +
      `${config.connections} HTTP connections (${config.load}), ${config.durationSeconds} s or ${fmt(config.maxRequests)} requests per workload`,
  );
}

export function printPostgres(pg: PostgresSettings | undefined, config: Config, run: RunSettings): void {
  log(
    `  PostgreSQL ${pg?.version} (synchronous_commit=${pg?.sc}, fsync=${pg?.fsync}, ` +
      `shared_buffers=${pg?.sb}), database ${run.databaseName}, Redis prefix ${run.redisPrefix}`,
  );
  // The API and each worker pool up to DB_POOL_SIZE connections; a shared server short of them
  // answers "too many clients", which shows up below as 503s and worker retries.
  const wanted = Number(process.env.DB_POOL_SIZE ?? 10) * (1 + config.workers);
  if (pg && pg.free < wanted + 10) {
    log(`  note: only ${pg.free} of ${pg.max} PostgreSQL connections are free; the product may open ${wanted}`);
  }
}

export interface RunSummary {
  results: PhaseResult[];
  /** Problems found outside the phases: the checks through the API and the last reconciliation. */
  finalProblems: string[];
  /** Peak RSS over each process's life, as `name MiB, …`. */
  lifetime: string;
  /** Warnings and errors the processes logged. */
  logged: string[];
}

export function printReport({ results, finalProblems, lifetime, logged }: RunSummary, config: Config): void {
  log('');
  printTable(results, config);
  log('');
  printRatios(results, config);
  log('');
  log(`Peak RSS over the whole run (VmHWM, MiB): ${lifetime}`);
  log("PostgreSQL backends of the phase's database (the bench's; the bare pipeline's own), sampled during each phase:");
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
  log('PostgreSQL WAL per committed job (pg_stat_wal, the whole server):');
  for (const r of results) {
    if (r.stats.jobs === 0) continue;
    log(
      `  ${r.label.padEnd(16)} ${fmt(r.wal.bytes / r.stats.jobs)} bytes, ${fmt(r.wal.flushes / r.stats.jobs, 3)} flushes`,
    );
  }
  log(`Warnings logged by the processes: ${logged.length > 0 ? logged.join('; ') : 'none'}`);
  for (const p of finalProblems) log(`FAILED: ${p}`);
}

/** Every figure of the run as JSON, for `--json FILE`. */
export function writeJson(file: string, { results, finalProblems, lifetime }: RunSummary, config: Config): void {
  const json = {
    cores: cpus().length,
    config,
    results,
    ratios: ratios(results, config),
    finalProblems,
    lifetimePeakRssMiB: lifetime,
  };
  writeFileSync(file, `${JSON.stringify(json, null, 2)}\n`);
  log(`figures written to ${file}`);
}

export function printVerdict(ok: boolean, started: number): void {
  log(
    `\n${ok ? 'bench passed' : 'bench FAILED'} in ${elapsed(started)} (load average now ${loadavg()[0]?.toFixed(1)}: ` +
      'other processes on this machine share its cores)',
  );
}

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

function printTable(results: PhaseResult[], config: Config): void {
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
      '(last commit − first submitted_at), after the queues and deliveries drained. p50/p95/p99: submission → ' +
      'commit, from the jobs table; a sale commits when its batch debits it (jobs.applied_at), other jobs ' +
      'at finished_at. jobs/tx: jobs per committing transaction. http p99: the load generator’s response time. ' +
      'peak RSS: max VmRSS sampled during the phase.',
  );
  log('');
  printDeliveries(results);
  const groups = ['api', 'workers', 'redis', 'sync', 'bench', 'postgres'];
  // PostgreSQL's backends talk through send() and recv(), which /proc/<pid>/io does not count.
  const callGroups = groups.filter((g) => g !== 'postgres');
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
    table(
      ['system calls per committed job', ...callGroups, 'total'],
      results.map((r) => {
        const charged = cpuGroups[r.kind].filter((g) => callGroups.includes(g));
        const perJob = (calls: number) => (r.stats.jobs > 0 ? fmt(calls / r.stats.jobs, 1) : '-');
        const total = charged.reduce((sum, g) => sum + (r.systemCalls[g] ?? 0), 0);
        return [
          r.label,
          ...callGroups.map((g) => (charged.includes(g) ? perJob(r.systemCalls[g] ?? 0) : '-')),
          perJob(total),
        ];
      }),
    ),
  );
  log(
    'CPU (user + system, /proc/<pid>/stat) over the load and the drain, divided by the jobs committed; system ' +
      'calls: reads and writes (syscr + syscw, /proc/<pid>/io), each hand-over between two processes is a write ' +
      "and a read (PostgreSQL's backends use send and recv, which it does not count). bench: the " +
      'row-lock loop runs in the bench process. redis: the Redis server (INFO cpu). postgres: the backends serving ' +
      `the bench database (the bare pipeline's own for its phases). load generator: the ${config.load} process ` +
      '(not in the total).',
  );
}

/** The delivery stage of each product phase: debit → delivered, apart from the sale path's figures. */
function printDeliveries(results: PhaseResult[]): void {
  const withDelivery = results.filter((r) => r.stats.delivery);
  if (withDelivery.length === 0) return;
  log(
    table(
      ['delivery stage', 'debited', 'delivered', 'pending', 'not delivered', 'p50 ms', 'p95 ms', 'p99 ms', 'max ms'],
      withDelivery.map((r) => {
        const d = r.stats.delivery as NonNullable<PhaseResult['stats']['delivery']>;
        return [
          r.label,
          fmt(d.records),
          fmt(d.delivered),
          fmt(d.pending),
          fmt(d.refunded + d.other),
          fmt(d.p50, 1),
          fmt(d.p95, 1),
          fmt(d.p99, 1),
          fmt(d.max, 1),
        ];
      }),
    ),
  );
  log(
    "delivery stage: the sales' top-ups, from the batch's debit (jobs.applied_at) to " +
      'delivered_at (the settlement), over the delivered ones; pending: still on their way when the phase was read (after the ' +
      `drain); not delivered: refunded, or ended otherwise. Provider: ${process.env.PROVIDER ?? 'simulator'} ` +
      '(PROVIDER; the in-process simulator delivers an ordinary number within 0–50 ms).',
  );
  log('');
}

export interface Ratio {
  label: string;
  product: PhaseName;
  reference: PhaseName;
  /** Committed/s of each phase; undefined when it did not run. */
  productPerSecond: number | undefined;
  referencePerSecond: number | undefined;
  ratio: number | undefined;
}

/** The product's committed/s over each reference's, in this run. */
function ratios(results: PhaseResult[], config: Config): Ratio[] {
  const rate = (name: PhaseName) => results.find((r) => r.name === name)?.committedPerSecond;
  const ratio = (label: string, product: PhaseName, reference: PhaseName): Ratio => {
    const x = rate(product);
    const y = rate(reference);
    const value = x !== undefined && y !== undefined && y > 0 ? x / y : undefined;
    return { label, product, reference, productPerSecond: x, referencePerSecond: y, ratio: value };
  };
  return [
    ratio('hot ÷ row-lock rate, one hot row', 'hot', 'lockhot'),
    ratio('hot ÷ sync baseline hot', 'hot', 'synchot'),
    ratio('hot ÷ bare pipeline hot (share of the ceiling)', 'hot', 'ceilhot'),
    ratio(`spread ÷ row-lock rate, ${config.sellers} rows`, 'spread', 'lockspread'),
    ratio('spread ÷ sync baseline spread', 'spread', 'syncspread'),
    ratio('spread ÷ bare pipeline spread (share of the ceiling)', 'spread', 'ceilspread'),
  ];
}

function printRatios(results: PhaseResult[], config: Config): void {
  const figure = (n: number | undefined) => (n === undefined ? '-' : fmt(n));
  log(
    table(
      ['ratio (committed/s)', 'product', 'reference', 'ratio'],
      ratios(results, config).map((r) => [
        r.label,
        figure(r.productPerSecond),
        figure(r.referencePerSecond),
        r.ratio === undefined ? 'n/a' : `${r.ratio.toFixed(2)}×`,
      ]),
    ),
  );
}
