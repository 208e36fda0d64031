import { type Database, jobs, openJobCondition } from '@cs/db';
import { count, sql } from 'drizzle-orm';
import type { JobQueues } from '../services/job-queues.ts';

/** Bars of the overview: the current minute and the 59 before it. */
export const MINUTES = 60;

/**
 * How long before the window a job may have been submitted and still be counted when it finishes
 * in it. `jobs` has no index on `finished_at`; its primary key is a UUIDv7, whose first 48 bits
 * are the submission's millisecond, so "submitted since" is a range of `jobs_pkey`. The statement
 * reads the jobs submitted in the last two hours instead of the whole table, and a job that waited
 * longer than this before it finished is not counted (see the README's operator pages).
 */
export const SUBMITTED_LOOKBACK_MINUTES = 60;

/** How long the queue counts may take before the page is drawn without them. */
const REDIS_TIMEOUT_MS = 1000;

export interface LastHour {
  /** The start of the oldest minute shown. */
  from: Date;
  /** PostgreSQL's clock when the numbers were read; the newest minute is still going on. */
  to: Date;
  /** Jobs submitted before this are not counted (SUBMITTED_LOOKBACK_MINUTES before `from`). */
  submittedSince: Date;
  /** `charge_sale` jobs that succeeded, by the minute of `finished_at`, oldest first: MINUTES of them. */
  salesPerMinute: Array<{ minute: Date; count: number }>;
  /** Jobs of either type `rejected` in the window, by their error code, most first. */
  refusalsByCode: Array<{ code: string; count: number }>;
  /** Every partition: its open jobs in PostgreSQL, and its messages in Redis (null if Redis did not answer). */
  partitions: Array<{ partition: number; open: number; queueMessages: number | null }>;
  /** 99th percentile of finished_at − submitted_at of the jobs finished in the window (any final status). */
  p99Ms: number | null;
  /** The same, per minute of `finished_at`, oldest first: MINUTES of them, null where no job finished. */
  p99PerMinute: Array<{ minute: Date; p99Ms: number | null }>;
}

interface FinishedRow extends Record<string, unknown> {
  /** grouping(minute, code): 1 per minute, 2 per code, 3 the whole window. */
  grouping_set: number;
  minute: Date | string | null;
  code: string | null;
  sales: number;
  refusals: number;
  p99_ms: number | string | null;
  since: Date | string;
  until: Date | string;
}

const MINUTE_MS = 60_000;
const asDate = (value: Date | string) => (value instanceof Date ? value : new Date(value));
/** Milliseconds to a tenth: the database measures microseconds, the page shows no more. */
const asMs = (value: number | string | null) => (value === null ? null : Math.round(Number(value) * 10) / 10);

/**
 * One statement, one scan of `jobs_pkey` over the jobs submitted since the lookback, one snapshot:
 * the sales and the latency of each minute, the refusals by code, and the latency of the whole
 * window, as the grouping sets (minute), (code) and (). The window is PostgreSQL's clock, the
 * one `finished_at` is written with. The id bound is the smallest UUID of its millisecond.
 */
async function readFinished(db: Database) {
  const rows = await db.execute<FinishedRow>(sql`
    with w as (
      select date_trunc('minute', now()) - make_interval(mins => ${MINUTES - 1}) as since, now() as until
    ),
    finished as (
      select j.type, j.status, j.error ->> 'code' as code,
             date_trunc('minute', j.finished_at) as minute,
             extract(epoch from j.finished_at - j.submitted_at) * 1000 as latency_ms
      from jobs j, w
      where j.id >= (lpad(to_hex(floor(extract(epoch from w.since - make_interval(mins => ${SUBMITTED_LOOKBACK_MINUTES})) * 1000)::bigint), 12, '0')
                     || repeat('0', 20))::uuid
        and j.finished_at >= w.since
    )
    select grouping(minute, code)::int as grouping_set, minute, code,
           (count(*) filter (where type = 'charge_sale' and status = 'succeeded'))::int as sales,
           (count(*) filter (where status = 'rejected'))::int as refusals,
           percentile_cont(0.99) within group (order by latency_ms) as p99_ms,
           (select since from w) as since, (select until from w) as until
    from finished
    group by grouping sets ((minute), (code), ())
  `);
  return [...rows];
}

/**
 * Open (not yet applied) jobs per partition: an index-only scan of the partial index
 * `jobs_unfinished_idx`, whose condition names no status (the CHECK `jobs_open_iff_unapplied` holds
 * it equal to the open statuses).
 */
async function readOpenJobs(db: Database): Promise<Map<number, number>> {
  const rows = await db
    .select({ partition: jobs.partition, open: count() })
    .from(jobs)
    .where(sql.raw(openJobCondition))
    .groupBy(jobs.partition);
  return new Map(rows.map((row) => [row.partition, row.open]));
}

/**
 * Waiting, active and delayed messages of each partition queue, as `/metrics` reads them. A
 * message carries the jobs of a partition accepted together, so this counts messages, not jobs;
 * and Redis is only the courier: PostgreSQL's open jobs are the depth of record.
 */
async function readQueueMessages(queues: Pick<JobQueues, 'partitions' | 'queue'>): Promise<Map<number, number> | null> {
  let timer: NodeJS.Timeout | undefined;
  const counts = Promise.all(
    Array.from({ length: queues.partitions }, async (_, partition) => {
      const states = await queues.queue(partition).getJobCounts('wait', 'active', 'delayed');
      return [partition, Object.values(states).reduce((sum, n) => sum + n, 0)] as const;
    }),
  );
  const timeout = new Promise<null>((resolve) => {
    timer = setTimeout(() => resolve(null), REDIS_TIMEOUT_MS);
  });
  try {
    const found = await Promise.race([counts, timeout]);
    return found && new Map(found);
  } catch {
    return null;
  } finally {
    clearTimeout(timer);
    counts.catch(() => {});
  }
}

/** The last hour at a glance, from the jobs table (and the queues' own counts beside it). */
export async function readLastHour(db: Database, queues: Pick<JobQueues, 'partitions' | 'queue'>): Promise<LastHour> {
  const [finished, open, messages] = await Promise.all([readFinished(db), readOpenJobs(db), readQueueMessages(queues)]);
  const window = finished.find((row) => row.grouping_set === 3) ?? finished[0];
  if (!window) throw new Error('the grouping set () always gives one row');
  const from = asDate(window.since);
  const byMinute = new Map(
    finished
      .filter((row) => row.grouping_set === 1 && row.minute !== null)
      .map((row) => [asDate(row.minute as Date | string).getTime(), row]),
  );
  const minutes = Array.from({ length: MINUTES }, (_, i) => new Date(from.getTime() + i * MINUTE_MS));

  const partitionIds = new Set([...Array.from({ length: queues.partitions }, (_, i) => i), ...open.keys()]);
  return {
    from,
    to: asDate(window.until),
    submittedSince: new Date(from.getTime() - SUBMITTED_LOOKBACK_MINUTES * MINUTE_MS),
    salesPerMinute: minutes.map((minute) => ({ minute, count: byMinute.get(minute.getTime())?.sales ?? 0 })),
    refusalsByCode: finished
      .filter((row) => row.grouping_set === 2 && row.refusals > 0)
      .map((row) => ({ code: row.code ?? 'unknown', count: row.refusals }))
      .sort((a, b) => b.count - a.count || a.code.localeCompare(b.code)),
    partitions: [...partitionIds]
      .sort((a, b) => a - b)
      .map((partition) => ({
        partition,
        open: open.get(partition) ?? 0,
        queueMessages: messages ? (messages.get(partition) ?? 0) : null,
      })),
    p99Ms: asMs(window.p99_ms),
    p99PerMinute: minutes.map((minute) => ({ minute, p99Ms: asMs(byMinute.get(minute.getTime())?.p99_ms ?? null) })),
  };
}
