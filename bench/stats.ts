/**
 * What a phase did, read from the database rather than believed from the load generator: job
 * counts, transactions and latencies from the jobs table, the checks that turn them into problems
 * (which fail the run) and warnings, and the reconciliation of the sellers' balances and ledgers.
 */
import type { Database } from '@cs/db';
import { reconcile, reconcileDeliveries, saleDeliveryStatusSql } from '@cs/ledger';
import type postgres from 'postgres';
import { callApi } from './api-client.ts';
import type { Sql } from './direct-sale.ts';
import type { Backlog } from './drain.ts';
import type { BenchSeller, LoadResult } from './load.ts';
import { fmt, log } from './output.ts';
import { retrying } from './storage.ts';

export interface JobStats {
  jobs: number;
  succeeded: number;
  rejected: number;
  failed: number;
  /** Not yet applied: no debit and no outcome. */
  unfinished: number;
  sales: number;
  approvals: number;
  /** Sales debited (a `charge_sale` ledger row) whose top-up is not settled yet: jobs `delivering`. */
  delivering: number;
  /** The jobs' own ledger rows (a sale's debit, an approval's credit); refunds apart. */
  ledgerRows: number;
  /** Sales with a `charge_sale` row: each must have its delivery, and end delivered. */
  debited: number;
  /** Applying transactions (batches) that committed the phase's jobs, and their mean span in ms. */
  batches: number;
  batchMs: number;
  spanSeconds: number;
  /** Submission → commit (a sale's debit, another job's outcome), ms. */
  p50: number;
  p95: number;
  p99: number;
  max: number;
  /** The delivery stage of the phase's sales; absent where there is none (the references). */
  delivery?: DeliveryStats;
}

/** The delivery stage's figures: debit (the batch's write of the sale) → delivered. */
export interface DeliveryStats {
  /** Deliveries of the phase's jobs, by row or by job: one per debited sale. */
  records: number;
  delivered: number;
  /** Still on their way when read: pending, unresolved, refund due. */
  pending: number;
  refunded: number;
  /** Ended otherwise (a conflict). */
  other: number;
  /** delivered_at − debited_at over the delivered ones, ms; NaN when none was delivered. */
  p50: number;
  p95: number;
  p99: number;
  max: number;
}

/**
 * Figures of a phase from the jobs table: the jobs carry the load's request ids (`<phase>-<n>`).
 * Latency is submission (the API's insert) to the commit of the batch that applied the job. A
 * sale's batch debits it (`jobs.applied_at`, the batch's clock at its write of the jobs, next to
 * the ledger row; `deliveries.debited_at`, the same, where a delivery row was written); its job is final (`finished_at`) only once the delivery
 * stage has settled the top-up, so a sale's commit is its debit, as it was before deliveries
 * existed. Jobs without a delivery (refused sales, approvals, the references') keep
 * `finished_at`, set by the batch's last statement before COMMIT. The delivery stage is measured
 * apart: debited_at → delivered_at (the row's, or the job's `result.delivery.delivered_at`).
 */
export async function jobStats(sql: Sql, tag: string, since: Date): Promise<JobStats> {
  type Row = Omit<JobStats, 'delivery'> & {
    dRecords: number;
    dDelivered: number;
    dPending: number;
    dRefunded: number;
    dP50: number | null;
    dP95: number | null;
    dP99: number | null;
    dMax: number | null;
  };
  const query = (filter: postgres.PendingQuery<postgres.Row[]>) => sql<Row[]>`
    with phase as (
      select j.type, j.status, j.submitted_at, j.started_at, j.finished_at, t.id as ledger_id, t.type as ledger_type,
             x.delivery_status, x.debited_at, x.delivered_at, coalesce(x.debited_at, j.finished_at) as committed_at
      from jobs j
        left join transactions t on t.job_id = j.id and t.type <> 'charge_refund'
        left join deliveries d on d.job_id = j.id
        -- A sale delivered at the first answer has no delivery row: its job records the delivery.
        cross join lateral (
          select ${sql.unsafe(saleDeliveryStatusSql)} as delivery_status,
                 coalesce(d.debited_at, case when j.status = 'delivering' or j.result ? 'delivery' then j.applied_at end)
                   as debited_at,
                 coalesce(d.delivered_at, (j.result -> 'delivery' ->> 'delivered_at')::timestamptz) as delivered_at
        ) x
      where ${filter}
    ), batches as (
      -- started_at is the applying transaction's now(): the same for every job of one batch.
      select started_at, max(committed_at) as committed_at from phase where started_at is not null group by started_at
    )
    select count(*)::int as jobs,
           count(*) filter (where status = 'succeeded')::int as succeeded,
           count(*) filter (where status = 'rejected')::int as rejected,
           count(*) filter (where status = 'failed')::int as failed,
           count(*) filter (where committed_at is null)::int as unfinished,
           count(*) filter (where type = 'charge_sale' and status = 'succeeded')::int as sales,
           count(*) filter (where type = 'credit_approval')::int as approvals,
           count(*) filter (where status = 'delivering')::int as delivering,
           count(ledger_id)::int as "ledgerRows",
           count(*) filter (where ledger_type = 'charge_sale')::int as debited,
           (select count(*) from batches)::int as batches,
           coalesce((select 1000 * extract(epoch from avg(committed_at - started_at)) from batches), 0)::float8 as "batchMs",
           coalesce(extract(epoch from max(committed_at) - min(submitted_at)), 0)::float8 as "spanSeconds",
           coalesce(1000 * percentile_cont(0.5) within group (order by extract(epoch from committed_at - submitted_at)), 0)::float8 as p50,
           coalesce(1000 * percentile_cont(0.95) within group (order by extract(epoch from committed_at - submitted_at)), 0)::float8 as p95,
           coalesce(1000 * percentile_cont(0.99) within group (order by extract(epoch from committed_at - submitted_at)), 0)::float8 as p99,
           coalesce(1000 * extract(epoch from max(committed_at - submitted_at)), 0)::float8 as max,
           count(debited_at)::int as "dRecords",
           count(*) filter (where delivery_status = 'delivered')::int as "dDelivered",
           count(*) filter (where delivery_status in ('pending', 'unresolved', 'refund_due'))::int as "dPending",
           count(*) filter (where delivery_status = 'refunded')::int as "dRefunded",
           (1000 * percentile_cont(0.5) within group (order by extract(epoch from delivered_at - debited_at)))::float8 as "dP50",
           (1000 * percentile_cont(0.95) within group (order by extract(epoch from delivered_at - debited_at)))::float8 as "dP95",
           (1000 * percentile_cont(0.99) within group (order by extract(epoch from delivered_at - debited_at)))::float8 as "dP99",
           (1000 * extract(epoch from max(delivered_at - debited_at)))::float8 as "dMax"
    from phase`;
  const toStats = ({ dRecords, dDelivered, dPending, dRefunded, dP50, dP95, dP99, dMax, ...job }: Row): JobStats => ({
    ...job,
    delivery:
      dRecords === 0
        ? undefined
        : {
            records: dRecords,
            delivered: dDelivered,
            pending: dPending,
            refunded: dRefunded,
            other: dRecords - dDelivered - dPending - dRefunded,
            p50: dP50 ?? Number.NaN,
            p95: dP95 ?? Number.NaN,
            p99: dP99 ?? Number.NaN,
            max: dMax ?? Number.NaN,
          },
  });
  const [tagged] = await retrying(() => query(sql`starts_with(coalesce(j.request_id, ''), ${`${tag}-`})`));
  if (tagged && tagged.jobs > 0) return toStats(tagged);
  // Request ids not carried through: phases run one after another, so the time window is exact.
  const [windowed] = await retrying(() => query(sql`j.submitted_at >= ${since}`));
  if (!windowed) throw new Error('job statistics returned nothing');
  return toStats(windowed);
}

export interface Verdict {
  /** Each fails the run. */
  problems: string[];
  warnings: string[];
}

/**
 * The checks of an HTTP phase: every accepted job recorded and applied, none failed, one ledger
 * row per job that took effect; for the product, every debited sale with its delivery, and every
 * delivery ended delivered (the simulator delivers every ordinary number) within the drain.
 */
export function judgeHttpPhase(phase: {
  /** The product's API counts approvals among its jobs; the sync server and the bare pipeline take sales only. */
  kind: 'api' | 'sync' | 'ceiling';
  load: LoadResult;
  stats: JobStats;
  /** What was still left when the drain timed out (jobs, or sync requests; deliveries). */
  left: Backlog;
  drainTimeoutMs: number;
  unreconciled: number;
}): Verdict {
  const { kind, load, stats, left } = phase;
  const problems: string[] = [];
  const warnings: string[] = [];
  const after = `${phase.drainTimeoutMs / 1000} s after the load`;
  if (load.ok === 0) problems.push('no request succeeded');
  if (left.jobs > 0) problems.push(`${fmt(left.jobs)} accepted jobs still unfinished ${after}`);
  if ((left.deliveries ?? 0) > 0) problems.push(`${fmt(left.deliveries ?? 0)} deliveries still pending ${after}`);
  const acceptedJobs = kind === 'api' ? okCount(load, 'sale') + okCount(load, 'approval') : okCount(load, 'sale');
  if (stats.jobs < acceptedJobs)
    problems.push(`${fmt(acceptedJobs)} jobs accepted but only ${fmt(stats.jobs)} recorded`);
  if (stats.failed > 0) problems.push(`${fmt(stats.failed)} jobs failed`);
  // A debited sale keeps its ledger row while it is delivered, and after a refund (then `rejected`).
  const refunded = stats.delivery?.refunded ?? 0;
  const tookEffect = stats.succeeded + stats.delivering + refunded;
  if (stats.ledgerRows !== tookEffect)
    problems.push(`${fmt(tookEffect)} jobs took effect but ${fmt(stats.ledgerRows)} ledger rows were written`);
  if (kind === 'api') {
    const d = stats.delivery;
    const records = d?.records ?? 0;
    if (records !== stats.debited)
      problems.push(`${fmt(stats.debited)} sales debited but ${fmt(records)} of them with a delivery (row or job)`);
    // Pending ones are the drain's line above (or were settled between the drain and the read).
    const ended = records - (d?.pending ?? 0);
    if (d && d.delivered < ended)
      problems.push(
        `${fmt(ended - d.delivered)} of ${fmt(records)} deliveries ended other than delivered ` +
          `(${fmt(d.refunded)} refunded, ${fmt(d.other)} otherwise)`,
      );
    if (d && d.pending > 0 && (left.deliveries ?? 0) === 0)
      problems.push(`${fmt(d.pending)} deliveries pending when the phase was read, after its drain`);
  }
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

/**
 * Every seller against its ledger once more, after the last phase, and every debited sale
 * against its top-up (`reconcileDeliveries`): delivered, none refunded, none still on its way. The
 * references' sales have no delivery (they are counted apart, as sales from before deliveries).
 */
export async function reconcileAll(db: Database, ledgerKey: string): Promise<string[]> {
  const all = await retrying(() => reconcile(db, { ledgerKey }));
  const bad = all.filter((r) => !r.isReconciled);
  log(
    `\nreconcile: ${all.length - bad.length} of ${all.length} sellers reconcile (reconcile(db) after the last phase)`,
  );
  const problems = bad.length > 0 ? [`${bad.length} of ${all.length} sellers do not reconcile`] : [];
  const d = await retrying(() => reconcileDeliveries(db, { pendingTooLongMs: 60_000 }));
  const withDelivery = d.sales - d.withoutDelivery;
  log(
    `reconcile deliveries: ${fmt(d.delivered)} of ${fmt(withDelivery)} debited sales delivered, ` +
      `${fmt(d.inProgress)} on their way, ${fmt(d.refunded)} refunded, ${fmt(d.conflicts)} conflicts ` +
      `(${fmt(d.withoutDelivery)} sales of the references, without a delivery; reconcileDeliveries(db))`,
  );
  if (!d.ok) problems.push(`reconcileDeliveries: ${JSON.stringify(d)}`);
  if (d.delivered !== withDelivery)
    problems.push(`${fmt(withDelivery - d.delivered)} of ${fmt(withDelivery)} debited sales not delivered at the end`);
  return problems;
}
