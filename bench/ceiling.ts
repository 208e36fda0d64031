/**
 * The bare pipeline of the product's design (the `ceiling` folder, `--ceiling DIR`: a Hono route
 * → 16 BullMQ partition queues → one worker process committing each partition's waiting jobs in
 * one PostgreSQL transaction, with no authentication, job records or phone totals), measured in
 * the same run and with the same load generator as the product, so that the product's committed/s
 * reads as a share of what the design itself reaches on this machine now.
 *
 * This does what the folder's run.sh does in shell: copies api.mjs and worker.mjs into a temp
 * folder whose node_modules is a link to the project's (ES modules ignore NODE_PATH), creates its
 * database and tables, starts its API and worker, and after each load waits for its queues to
 * drain and reads committed rows/s from its ledger (count and max − min of created_at) and checks
 * its money. Its queues get the run's Redis prefix, not the fixed `ceil`, so that two runs on one
 * Redis do not take each other's jobs.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync, unlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { BenchContext } from './context.ts';
import { connect, type Sql } from './direct-sale.ts';
import type { BenchSeller } from './load.ts';
import { elapsed, fmt, log } from './output.ts';
import type { HttpTarget } from './phases.ts';
import { root } from './processes.ts';
import { isLocal } from './samplers.ts';
import type { JobStats } from './stats.ts';
import { createDatabase, dropDatabase, processAlive, retrying, urlOfDatabase } from './storage.ts';

/** Fixed in api.mjs and worker.mjs. */
const PARTITIONS = 16;
/** Each seller's starting balance, as run.sh sets it. */
const START_BALANCE = 100_000_000_000n;
const DATABASE_PREFIX = 'csbench_ceil_';
/** The queue prefix as the two files spell it, replaced in the copies. */
const FIXED_PREFIX = "prefix: 'ceil'";

export class Ceiling {
  private constructor(
    private readonly ctx: BenchContext,
    private readonly dir: string,
    private readonly workDir: string,
    private readonly database: string,
    private readonly sql: Sql,
    private readonly queuePrefix: string,
    private readonly url: string,
    private readonly meters: HttpTarget['meters'],
  ) {}

  /**
   * Sets the bare pipeline up and starts it, with `sellers` sellers (ids 1…n) in its table; or
   * says in one line why not and resolves with undefined (the ceil phases are then skipped).
   */
  static async open(ctx: BenchContext, dir: string, sellers: number): Promise<Ceiling | undefined> {
    const sources = new Map<string, string>();
    const queuePrefix = `${ctx.run.redisPrefix}:ceil`;
    for (const file of ['api.mjs', 'worker.mjs']) {
      const path = join(dir, file);
      const text = existsSync(path) ? readFileSync(path, 'utf8') : undefined;
      if (text === undefined) return skip(`no ${path}`);
      if (!text.includes(FIXED_PREFIX)) return skip(`${path} does not say ${FIXED_PREFIX}, which the bench replaces`);
      sources.set(file, text.replaceAll(FIXED_PREFIX, `prefix: ${JSON.stringify(queuePrefix)}`));
    }
    const pg = new URL(ctx.config.databaseUrl);
    const redis = new URL(ctx.config.redisUrl);
    // Its own code connects to 127.0.0.1 as postgres, and to Redis on localhost: only the ports are its to choose.
    if (!isLocal(pg.hostname) || !isLocal(redis.hostname))
      return skip('it connects to PostgreSQL and Redis on this machine only');

    const workDir = mkdtempSync(join(tmpdir(), 'cs-bench-ceiling-'));
    for (const [file, text] of sources) writeFileSync(join(workDir, file), text);
    symlinkSync(join(root, 'node_modules'), join(workDir, 'node_modules'));
    await dropStaleDatabases(ctx);
    const database = `${DATABASE_PREFIX}${process.pid}`;
    await retrying(() => createDatabase(ctx.config.databaseUrl, database));
    const sql = connect(urlOfDatabase(ctx.config.databaseUrl, database), 2);
    try {
      await createTables(sql, sellers);
      const started = Date.now();
      const url = await ctx.processes.startCeiling(workDir, {
        ...process.env,
        PGPORT: pg.port || '5432',
        PGDATABASE: database,
        ...(pg.password ? { PGPASSWORD: decodeURIComponent(pg.password) } : {}),
        REDIS_PORT: redis.port || '6379',
      });
      log(
        `  bare pipeline from ${dir}: database ${database}, ${fmt(sellers)} sellers, queues ${queuePrefix}:{p0…p15}, ` +
          `its API and worker started (${elapsed(started)})`,
      );
      return new Ceiling(ctx, dir, workDir, database, sql, queuePrefix, url, ctx.metersFor(database));
    } catch (error) {
      await ctx.processes.stop((p) => p.name.startsWith('ceil-'));
      await sql.end({ timeout: 5 });
      await dropDatabase(ctx.config.databaseUrl, database).catch(() => {});
      removeWorkDir(workDir);
      throw error;
    }

    function skip(why: string): undefined {
      log(`  ceilhot and ceilspread skipped: ${why}`);
      return undefined;
    }
  }

  /** `count` of its sellers from id `first`; they have no api keys (it authenticates nothing). */
  sellers(first: number, count: number): BenchSeller[] {
    return Array.from({ length: count }, (_, i) => ({ id: String(first + i), key: '' }));
  }

  /** What an HTTP phase needs to load, wait for, read and check it. */
  target(): HttpTarget {
    return {
      kind: 'ceiling',
      description: `bare pipeline (${this.dir})`,
      url: this.url,
      requests: 'ceiling',
      measures: (process) => process.startsWith('ceil-'),
      meters: this.meters,
      queued: async () => ({ jobs: await this.queued() }),
      settle: async (label) => ({ jobs: await this.drain(label) }),
      stats: (_name, since) => this.ledgerStats(since),
      unreconciled: () => this.unreconciledSellers(),
      vacuum: async () => {
        await retrying(() => this.sql`vacuum (analyze) sellers, ledger`);
      },
    };
  }

  /** Jobs waiting or active in its queues (what run.sh polls). */
  private async queued(): Promise<number> {
    const pipeline = this.ctx.redis.pipeline();
    for (let p = 0; p < PARTITIONS; p++) {
      pipeline.llen(`${this.queuePrefix}:{p${p}}:wait`);
      pipeline.llen(`${this.queuePrefix}:{p${p}}:active`);
    }
    const replies = (await pipeline.exec()) ?? [];
    return replies.reduce((sum, [error, n]) => {
      if (error) throw error;
      return sum + Number(n);
    }, 0);
  }

  /** Waits until its queues are empty: a job leaves `active` once its batch has committed. */
  private async drain(label: string): Promise<number> {
    const started = Date.now();
    let lastPrint = started;
    for (;;) {
      const left = await this.queued();
      if (left === 0) return 0;
      if (Date.now() - started > this.ctx.config.drainTimeoutMs) return left;
      if (Date.now() - lastPrint >= 1000) {
        lastPrint = Date.now();
        log(`    ${label}: draining, ${fmt(left)} jobs queued (${elapsed(started)})`);
      }
      await sleep(100);
    }
  }

  /**
   * The phase's ledger rows: those written since it started (the phase before had drained). Its
   * rows carry no submission time, so the span is first to last commit, as run.sh measures it;
   * the rows one transaction inserted share its xid (`xmin`), which counts the transactions.
   */
  private async ledgerStats(since: Date): Promise<JobStats> {
    const [row] = await retrying(
      () => this.sql<{ rows: number; batches: number; span: number }[]>`
        select count(*)::int as rows, count(distinct xmin::text)::int as batches,
               coalesce(extract(epoch from max(created_at) - min(created_at)), 0)::float8 as span
        from ledger where created_at >= ${since}`,
    );
    const rows = row?.rows ?? 0;
    return {
      jobs: rows,
      succeeded: rows,
      // It records no refusals (a refused sale leaves no row; none is due with these balances).
      rejected: 0,
      failed: 0,
      unfinished: 0,
      sales: rows,
      approvals: 0,
      delivering: 0,
      ledgerRows: rows,
      // It delivers nothing: its sale ends at the ledger row.
      debited: 0,
      batches: row?.batches ?? 0,
      batchMs: Number.NaN,
      spanSeconds: row?.span ?? 0,
      p50: Number.NaN,
      p95: Number.NaN,
      p99: Number.NaN,
      max: Number.NaN,
    };
  }

  /** Sellers whose balance is not the start less their ledger rows, or not their last row's balance_after. */
  private async unreconciledSellers(): Promise<number> {
    const [row] = await retrying(
      () => this.sql<{ n: number }[]>`
        with moved as (select seller_id, sum(amount) as amount from ledger group by seller_id),
             last as (select distinct on (seller_id) seller_id, balance_after from ledger order by seller_id, id desc)
        select count(*)::int as n
        from sellers s left join moved m on m.seller_id = s.id left join last l on l.seller_id = s.id
        where s.balance <> ${START_BALANCE.toString()}::bigint + coalesce(m.amount, 0)
           or s.balance <> coalesce(l.balance_after, ${START_BALANCE.toString()}::bigint)`,
    );
    return row?.n ?? 0;
  }

  /**
   * Stops its processes, checks its money as run.sh does (the balances' sum is the start less the
   * ledger's), drops its database unless `keep`, removes the temp folder. Returns the problems.
   */
  async close(keep: boolean): Promise<string[]> {
    await this.ctx.processes.stop((p) => p.name.startsWith('ceil-'));
    const problems: string[] = [];
    try {
      const [money] = await retrying(
        () => this.sql<{ ok: boolean; rows: number }[]>`
          select (select sum(balance) from sellers)
                   = (select count(*) from sellers) * ${START_BALANCE.toString()}::numeric
                     + coalesce((select sum(amount) from ledger), 0) as ok,
                 (select count(*) from ledger)::int as rows`,
      );
      log(
        `  bare pipeline: ${fmt(money?.rows ?? 0)} ledger rows over the run; sum of balances = start − sales: ${money?.ok ? 'yes' : 'NO'}`,
      );
      if (!money?.ok) problems.push('bare pipeline: the sum of its balances is not the start less its ledger');
    } finally {
      await this.sql.end({ timeout: 5 });
      if (keep || problems.length > 0) log(`kept database ${this.database} (bare pipeline)`);
      else await dropDatabase(this.ctx.config.databaseUrl, this.database).catch(() => {});
      removeWorkDir(this.workDir);
    }
    return problems;
  }
}

function removeWorkDir(workDir: string): void {
  // The link first, so that removing the folder can never reach the project's node_modules.
  unlinkSync(join(workDir, 'node_modules'));
  rmSync(workDir, { recursive: true, force: true });
}

async function createTables(sql: Sql, sellers: number): Promise<void> {
  // run.sh's tables (without those of its pgbench reference: the bench has its row-lock phases).
  await sql`create table sellers(id int primary key, balance bigint not null check (balance >= 0))`;
  await sql`
    create table ledger(id bigserial primary key, job_id text not null unique, seller_id int not null references sellers,
      amount bigint not null, balance_after bigint not null, phone_number text not null,
      created_at timestamptz not null default clock_timestamp())`;
  await sql`insert into sellers select g, ${START_BALANCE.toString()}::bigint from generate_series(1, ${sellers}::int) g`;
  await sql`vacuum (analyze) sellers`;
}

/** The databases of runs whose process is gone (a run that failed or was killed keeps its own). */
async function dropStaleDatabases(ctx: BenchContext): Promise<void> {
  const rows = await retrying(
    () => ctx.sql<{ datname: string }[]>`
      select datname from pg_database where starts_with(datname, ${DATABASE_PREFIX})`,
  );
  for (const { datname } of rows) {
    const pid = Number(datname.slice(DATABASE_PREFIX.length));
    if (Number.isInteger(pid) && pid !== process.pid && !processAlive(pid))
      await dropDatabase(ctx.config.databaseUrl, datname);
  }
}
