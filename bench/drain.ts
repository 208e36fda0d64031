/**
 * Waiting for the work a load left behind before its phase is read: the product's queued jobs and
 * the deliveries of the sales it debited, and the sync server's requests still in flight.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Sql } from './direct-sale.ts';
import { elapsed, fmt, log } from './output.ts';
import { retrying } from './storage.ts';

/**
 * What is still to do: jobs accepted and not yet applied, and top-ups debited and not yet settled
 * (absent where there are none to wait for: the sync server, the bare pipeline).
 */
export interface Backlog {
  jobs: number;
  deliveries?: number;
}

export const backlogSize = (b: Backlog) => b.jobs + (b.deliveries ?? 0);

/** How a backlog reads in the progress lines: `12 jobs queued, 340 deliveries pending`. */
export const describeBacklog = (b: Backlog) =>
  `${fmt(b.jobs)} jobs queued${b.deliveries === undefined ? '' : `, ${fmt(b.deliveries)} deliveries pending`}`;

/**
 * The product's backlog. A delivery is pending while the stage still asks the provider about it
 * (`watching`: pending, unresolved), its refund waits for the partition (`refund_due`), or, for a
 * sale with no delivery row yet, while its job is still `delivering` (`held`: the sales of the
 * batches' holds, `delivery_holds`). The first counts read a partial index (jobs_unfinished_idx,
 * deliveries_due_idx) and the refund_due entries of the status index, so polling them during the
 * load does not scan the tables whose CPU the phase counts; the held sales are one lookup each,
 * so they are counted only by the drain, and only once nothing else is left.
 */
export async function backlog(sql: Sql, { held = false } = {}): Promise<Required<Backlog>> {
  const [row] = await retrying(
    () => sql<{ jobs: number; deliveries: number }[]>`
      select (select count(*) from jobs where applied_at is null and error is null)::int as jobs,
             ((select count(*) from deliveries where watching)
               + (select count(*) from deliveries where status = 'refund_due'))::int as deliveries`,
  );
  const left = { jobs: row?.jobs ?? 0, deliveries: row?.deliveries ?? 0 };
  if (held && left.jobs === 0 && left.deliveries === 0) {
    const [h] = await retrying(
      () => sql<{ n: number }[]>`
        select count(*)::int as n from delivery_holds h cross join unnest(h.job_ids) as u(id)
        join jobs j on j.id = u.id
        where j.status = 'delivering' and not exists (select 1 from deliveries d where d.job_id = j.id)`,
    );
    left.deliveries = h?.n ?? 0;
  }
  return left;
}

/**
 * Waits until every accepted job is applied and every delivery settled, so that the phase is read
 * whole and the next one starts clean; returns what was still left at the timeout.
 */
export async function drain(sql: Sql, label: string, timeoutMs: number): Promise<Required<Backlog>> {
  const started = Date.now();
  let lastPrint = Date.now();
  for (;;) {
    const left = await backlog(sql, { held: true });
    if (backlogSize(left) === 0) return left;
    if (Date.now() - started > timeoutMs) return left;
    if (Date.now() - lastPrint >= 1000) {
      lastPrint = Date.now();
      log(`    ${label}: draining, ${describeBacklog(left)} (${elapsed(started)})`);
    }
    await sleep(100);
  }
}

/**
 * The sync server's drain: waits until it has finished the requests the load left in flight (the
 * load generator does not wait for its last answers), so that nothing commits while the phase is
 * read; returns how many were still in flight at the timeout.
 */
export async function settleSync(syncUrl: string, timeoutMs: number): Promise<number> {
  const started = Date.now();
  for (;;) {
    const res = await fetch(`${syncUrl}/in-flight`);
    const { in_flight: left } = (await res.json()) as { in_flight: number };
    if (left === 0 || Date.now() - started > timeoutMs) return left;
    await sleep(20);
  }
}
