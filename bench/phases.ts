/**
 * The measured phases, one after another: the HTTP workloads (the product's API, then the sync
 * server and the bare pipeline, each driven by the load generator) and the row-lock references
 * (the same transaction as the sync server from a few connections in a loop). Each phase is read
 * and checked from the database once its work has drained, and a line says how it went.
 */
import type { Ceiling } from './ceiling.ts';
import type { BenchContext } from './context.ts';
import { connect, type DirectSale, sellInOneTransaction } from './direct-sale.ts';
import { type Backlog, backlog, drain, settleSync } from './drain.ts';
import type { BenchSeller, LoadPlan, LoadResult } from './load.ts';
import type { PhaseName } from './options.ts';
import { elapsed, fmt, log } from './output.ts';
import { type CpuMeter, commandDelta, parseCommandStats, type WaitSampler } from './samplers.ts';
import { type JobStats, jobStats, judgeHttpPhase, judgeRowLockPhase, unreconciledSellers } from './stats.ts';
import { retrying } from './storage.ts';

export type PhaseKind = 'api' | 'sync' | 'ceiling' | 'rowlock';
type HttpKind = Exclude<PhaseKind, 'rowlock'>;

/** The server an HTTP phase loads, and how the work it accepted is waited for, read and checked. */
export interface HttpTarget {
  kind: HttpKind;
  /** Says what is loaded, in the phase's first line. */
  description: string;
  url: string;
  /** The shape of its requests (see `LoadPlan.target`). */
  requests: LoadPlan['target'];
  /** Whether a process, by name, is one this target's phases measure (memory in the progress lines). */
  measures: (process: string) => boolean;
  /** The backends and CPU of the database it writes. */
  meters: { waitSampler: WaitSampler; cpuMeter: CpuMeter };
  /**
   * Accepted work not yet committed, and the product's deliveries not yet settled, for the
   * progress lines; absent where nothing is queued.
   */
  queued?: () => Promise<Backlog>;
  /** Waits for the work the load left behind; resolves with what was still unfinished at the timeout. */
  settle: (label: string) => Promise<Backlog>;
  /** The phase's figures from its database. */
  stats: (name: PhaseName, since: Date) => Promise<JobStats>;
  unreconciled: () => Promise<number>;
  /** Before each phase: fresh planner statistics, and no dead rows of the phase before. */
  vacuum: () => Promise<void>;
}

export interface PhaseResult {
  name: PhaseName;
  label: string;
  kind: PhaseKind;
  load?: LoadResult;
  stats: JobStats;
  /** 2xx per second over the load (for the row-lock reference: commits per second). */
  acceptedPerSecond: number;
  /** Jobs committed per second: jobs / (last commit − first submitted_at); a sale commits at its debit. */
  committedPerSecond: number;
  salesPerSecond: number;
  rssMiB: Record<string, number>;
  /** CPU seconds used during the phase (load and drain) by group: api, workers, redis, sync, bench, postgres. */
  cpuSeconds: Record<string, number>;
  /** Read and write system calls made during the phase, by the same groups. */
  systemCalls: Record<string, number>;
  /** WAL the PostgreSQL server wrote and flushed during the phase. */
  wal: { bytes: number; flushes: number };
  /** Redis commands run during the phase, by name, busiest first (HTTP phases only). */
  redisCommands?: Array<{ command: string; calls: number; usec: number }>;
  backends: string;
  unreconciled: number;
  problems: string[];
  warnings: string[];
}

/** Runs the selected phases and keeps their results, in the order they ran. */
export class Phases {
  readonly results: PhaseResult[] = [];
  /** The servers that have had their warm-up. */
  private readonly warmed = new Set<HttpKind>();

  constructor(
    private readonly ctx: BenchContext,
    private readonly selected: ReadonlySet<PhaseName>,
  ) {}

  includes(...names: PhaseName[]): boolean {
    return names.some((name) => this.selected.has(name));
  }

  /** A workload through HTTP: the product's API (`api`) or the sync server (`sync`). */
  async http(
    name: PhaseName,
    label: string,
    kind: 'api' | 'sync',
    sellers: BenchSeller[],
    mode: LoadPlan['mode'] = 'sales',
  ): Promise<void> {
    const target = this.target(kind);
    await this.measure(name, target.vacuum, () => this.httpPhase(name, label, target, sellers, mode));
  }

  /** A workload on the bare pipeline (bench/ceiling.ts): sales over `sellers` of its own table. */
  async ceiling(name: PhaseName, label: string, ceiling: Ceiling, sellers: BenchSeller[]): Promise<void> {
    const target = ceiling.target();
    await this.measure(name, target.vacuum, () => this.httpPhase(name, label, target, sellers, 'sales'));
  }

  /**
   * The database's own ceiling for one-transaction-per-sale: the same SQL as the sync server, from
   * several connections in a loop, no HTTP, no queue.
   */
  async rowLock(name: PhaseName, label: string, sellers: BenchSeller[]): Promise<void> {
    await this.measure(
      name,
      () => this.vacuumProduct(),
      () => this.rowLockPhase(name, label, sellers),
    );
  }

  private async measure(name: PhaseName, vacuum: () => Promise<void>, phase: () => Promise<PhaseResult>) {
    if (!this.selected.has(name)) return;
    await vacuum();
    const result = await phase();
    this.results.push(result);
    const { stats } = result;
    const verdict = result.problems.length > 0 ? 'FAILED' : 'ok';
    const approvals = stats.approvals > 0 ? ` (${fmt(stats.approvals)} of them approvals)` : '';
    // The bare pipeline records neither when a job was submitted nor how long its transaction took.
    const batchMs = Number.isFinite(stats.batchMs) ? ` of ${fmt(stats.batchMs, 1)} ms on average` : '';
    const p99 = Number.isFinite(stats.p99) ? `, p99 ${fmt(stats.p99)} ms` : '';
    const d = stats.delivery;
    const delivery = d
      ? `; delivery p50 ${fmt(d.p50, 1)} / p95 ${fmt(d.p95, 1)} / p99 ${fmt(d.p99, 1)} / max ${fmt(d.max)} ms, ` +
        `${fmt(d.delivered)} delivered, ${fmt(d.pending)} pending` +
        (d.refunded + d.other > 0 ? `, ${fmt(d.refunded)} refunded, ${fmt(d.other)} otherwise` : '')
      : '';
    log(
      `  ${result.label}: ${fmt(stats.jobs)} jobs${approvals} in ${fmt(stats.batches)} transactions${batchMs}, ` +
        `${fmt(result.committedPerSecond)} committed/s${p99}${delivery}, ${result.unreconciled} unreconciled: ${verdict}`,
    );
    for (const p of result.problems) log(`    FAILED: ${p}`);
    for (const w of result.warnings) log(`    note: ${w}`);
  }

  private async vacuumProduct(): Promise<void> {
    await retrying(() => this.ctx.sql`vacuum (analyze) sellers, jobs, transactions, phone_numbers, deliveries`);
  }

  /** The product's API or the sync server, both on the bench database. */
  private target(kind: 'api' | 'sync'): HttpTarget {
    const { ctx } = this;
    const { config, run, sql } = ctx;
    const common = {
      requests: 'product' as const,
      meters: { waitSampler: ctx.waitSampler, cpuMeter: ctx.cpuMeter },
      stats: (name: PhaseName, since: Date) => jobStats(sql, name, since),
      unreconciled: () => unreconciledSellers(ctx.bench.db, run.ledgerKey),
      vacuum: () => this.vacuumProduct(),
    };
    if (kind === 'api') {
      return {
        ...common,
        kind,
        description: 'product API',
        url: ctx.processes.apiUrl,
        measures: (process) => process !== 'sync' && !process.startsWith('ceil-'),
        queued: () => backlog(sql),
        settle: (label) => drain(sql, label, config.drainTimeoutMs),
      };
    }
    return {
      ...common,
      kind,
      description: 'sync server',
      url: ctx.processes.syncUrl,
      measures: (process) => process === 'sync',
      settle: async () => ({ jobs: await settleSync(ctx.processes.syncUrl, config.drainTimeoutMs) }),
    };
  }

  /**
   * A few seconds of unmeasured sales first: the first phase on a fresh process would otherwise
   * also measure V8 compiling the sale path and pools opening their connections.
   */
  private async warmUp(target: HttpTarget, sellers: BenchSeller[]): Promise<void> {
    const { config, run } = this.ctx;
    this.warmed.add(target.kind);
    const started = Date.now();
    const load = await this.ctx.load.run(
      {
        name: 'warmup',
        url: target.url,
        mode: 'sales',
        target: target.requests,
        sellers,
        adminToken: run.adminToken,
        durationSeconds: 2,
        maxRequests: config.maxRequests,
        connections: config.connections,
      },
      () => {},
    );
    await target.settle('warm-up');
    log(`  warm-up of the ${target.description}: ${fmt(load.ok)} sales in ${elapsed(started)}`);
  }

  private async httpPhase(
    name: PhaseName,
    label: string,
    target: HttpTarget,
    sellers: BenchSeller[],
    mode: LoadPlan['mode'],
  ): Promise<PhaseResult> {
    const { config, run, redis, rssSampler } = this.ctx;
    const { waitSampler, cpuMeter } = target.meters;
    const { kind, measures: measured } = target;
    if (!this.warmed.has(kind)) await this.warmUp(target, sellers);
    log(
      `${label}: ${mode === 'mixed' ? '90 % sales, 10 % credit requests and approvals' : 'sales'} over ${fmt(sellers.length)} seller(s), ${target.description}`,
    );
    const since = new Date();
    rssSampler.start();
    waitSampler.start();
    const commandsBefore = parseCommandStats(await redis.info('commandstats'));
    await retrying(() => cpuMeter.begin());
    let lastResponses = 0;
    const load = await this.ctx.load.run(
      {
        name,
        url: target.url,
        mode,
        target: target.requests,
        sellers,
        adminToken: run.adminToken,
        durationSeconds: config.durationSeconds,
        maxRequests: config.maxRequests,
        connections: config.connections,
        rate: config.rate,
      },
      (tick) => {
        const perSecond = tick.responses - lastResponses;
        lastResponses = tick.responses;
        const memory = [...rssSampler.current()]
          .filter(([process]) => measured(process))
          .map(([process, mib]) => `${process} ${fmt(mib)}`)
          .join(' ');
        const queued = target.queued
          ? target.queued().then(
              (b) => `  queued ${fmt(b.jobs)}${b.deliveries === undefined ? '' : `  delivering ${fmt(b.deliveries)}`}`,
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
    const left = await target.settle(label);
    const { cpuSeconds, systemCalls, wal } = await retrying(() => cpuMeter.end());
    const redisCommands = commandDelta(commandsBefore, parseCommandStats(await redis.info('commandstats')));
    const rssMiB = Object.fromEntries([...rssSampler.stop()].filter(([process]) => measured(process)));
    const backends = waitSampler.stop();
    const stats = await target.stats(name, since);
    const unreconciled = await target.unreconciled();
    const { problems, warnings } = judgeHttpPhase({
      kind,
      load,
      stats,
      left,
      drainTimeoutMs: config.drainTimeoutMs,
      unreconciled,
    });
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
      systemCalls,
      wal,
      redisCommands,
      backends,
      unreconciled,
      problems,
      warnings,
    };
  }

  private async rowLockPhase(name: PhaseName, label: string, sellers: BenchSeller[]): Promise<PhaseResult> {
    const { config, run, waitSampler, cpuMeter } = this.ctx;
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
    waitSampler.start();
    await retrying(() => cpuMeter.begin());
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
          const outcome = await sellInOneTransaction(pool, sale, run.ledgerKey);
          if (outcome.ok) committed++;
          else refused++;
        }
      }),
    );
    const seconds = (Date.now() - started) / 1000;
    clearInterval(progress);
    const backends = waitSampler.stop();
    const { cpuSeconds, systemCalls, wal } = await retrying(() => cpuMeter.end());
    await pool.end({ timeout: 5 });
    const stats = await jobStats(this.ctx.sql, name, since);
    const unreconciled = await unreconciledSellers(this.ctx.bench.db, run.ledgerKey);
    const { problems, warnings } = judgeRowLockPhase({ committed, refused, stats, unreconciled });
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
      systemCalls,
      wal,
      backends,
      unreconciled,
      problems,
      warnings,
    };
  }
}
