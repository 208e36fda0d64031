/**
 * What a phase did, read from the database rather than believed from the load generator: job
 * counts, transactions and latencies from the jobs table, the checks that turn them into problems
 * (which fail the run) and warnings, and the reconciliation of the sellers' balances and ledgers.
 */
import type { Database } from '@cs/db';
import { reconcile } from '@cs/ledger';
import type postgres from 'postgres';
import { callApi } from './api-client.ts';
import type { Sql } from './direct-sale.ts';
import type { BenchSeller, LoadResult } from './load.ts';
import { fmt, log } from './output.ts';
import { retrying } from './storage.ts';

export interface JobStats {
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

/**
 * Figures of a phase from the jobs table: the jobs carry the load's request ids (`<phase>-<n>`).
 * Latency is submission (the API's insert) to the commit of the batch that applied the job
 * (finished_at, set by the batch's last statement before COMMIT).
 */
export async function jobStats(sql: Sql, tag: string, since: Date): Promise<JobStats> {
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

export interface Verdict {
  /** Each fails the run. */
  problems: string[];
  warnings: string[];
}

/** The checks of an HTTP phase: every accepted job recorded and final, none failed, one ledger row per success. */
export function judgeHttpPhase(phase: {
  /** The product's API counts approvals among its jobs; the sync server and the bare pipeline take sales only. */
  kind: 'api' | 'sync' | 'ceiling';
  load: LoadResult;
  stats: JobStats;
  /** Jobs (or sync requests) still unfinished when the drain timed out. */
  left: number;
  drainTimeoutMs: number;
  unreconciled: number;
}): Verdict {
  const { kind, load, stats, left } = phase;
  const problems: string[] = [];
  const warnings: string[] = [];
  if (load.ok === 0) problems.push('no request succeeded');
  if (left > 0)
    problems.push(`${fmt(left)} accepted jobs still unfinished ${phase.drainTimeoutMs / 1000} s after the load`);
  const acceptedJobs = kind === 'api' ? okCount(load, 'sale') + okCount(load, 'approval') : okCount(load, 'sale');
  if (stats.jobs < acceptedJobs)
    problems.push(`${fmt(acceptedJobs)} jobs accepted but only ${fmt(stats.jobs)} recorded`);
  if (stats.failed > 0) problems.push(`${fmt(stats.failed)} jobs failed`);
  if (stats.ledgerRows !== stats.succeeded)
    problems.push(`${fmt(stats.succeeded)} jobs succeeded but ${fmt(stats.ledgerRows)} ledger rows were written`);
  if (stats.rejected > 0) warnings.push(`${fmt(stats.rejected)} jobs rejected (business refusals)`);
  if (load.notOk > 0) warnings.push(`non-2xx answers by status: ${JSON.stringify(nonOkStatuses(load))}`);
  if (load.errors > 0) warnings.push(`${fmt(load.errors)} connection errors, ${fmt(load.timeouts)} timeouts`);
  if (phase.unreconciled > 0) problems.push(`${phase.unreconciled} sellers do not reconcile`);
  return { problems, warnings };
}

/** The checks of a row-lock phase: one job row and one ledger row per committed sale. */
export function judgeRowLockPhase(phase: {
  committed: number;
  refused: number;
  stats: JobStats;
  unreconciled: number;
}): Verdict {
  const { committed, stats } = phase;
  const problems: string[] = [];
  if (stats.jobs !== committed)
    problems.push(`${fmt(committed)} sales committed but ${fmt(stats.jobs)} job rows found`);
  if (stats.ledgerRows !== stats.succeeded)
    problems.push(`${fmt(stats.ledgerRows)} ledger rows for ${fmt(stats.succeeded)} sales`);
  if (phase.unreconciled > 0) problems.push(`${phase.unreconciled} sellers do not reconcile`);
  return { problems, warnings: phase.refused > 0 ? [`${phase.refused} sales refused`] : [] };
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

export async function unreconciledSellers(db: Database, ledgerKey: string): Promise<number> {
  return (await retrying(() => reconcile(db, { ledgerKey }))).filter((r) => !r.isReconciled).length;
}

/** A sample of sellers through the public endpoint, while the API runs. */
export async function checkThroughApi(apiUrl: string, sellers: BenchSeller[]): Promise<string[]> {
  const problems: string[] = [];
  const sample = [sellers[0], ...sellers.slice(1).filter((_, i) => i % 100 === 0)].filter(
    (s): s is BenchSeller => s !== undefined,
  );
  for (const seller of sample) {
    const res = await callApi<{ is_reconciled: boolean }>(
      apiUrl,
      'GET',
      `/api/sellers/${seller.id}/reconcile`,
      seller.key,
    );
    if (res.status !== 200 || !res.body.is_reconciled)
      problems.push(`GET /api/sellers/${seller.id}/reconcile: ${res.status} ${JSON.stringify(res.body)}`);
  }
  log(
    `  ${sample.length} sellers checked through GET /api/sellers/{id}/reconcile: ${problems.length > 0 ? 'FAILED' : 'ok'}`,
  );
  return problems;
}

/** Every seller against its ledger once more, after the last phase. */
export async function reconcileAll(db: Database, ledgerKey: string): Promise<string[]> {
  const all = await retrying(() => reconcile(db, { ledgerKey }));
  const bad = all.filter((r) => !r.isReconciled);
  log(
    `\nreconcile: ${all.length - bad.length} of ${all.length} sellers reconcile (reconcile(db) after the last phase)`,
  );
  return bad.length > 0 ? [`${bad.length} of ${all.length} sellers do not reconcile`] : [];
}
