/**
 * Waiting for the work a load left behind before its phase is read: the product's queued jobs,
 * and the sync server's requests still in flight.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Sql } from './direct-sale.ts';
import { elapsed, fmt, log } from './output.ts';
import { retrying } from './storage.ts';

/** Jobs accepted and not yet final. */
export async function backlog(sql: Sql): Promise<number> {
  const [row] = await retrying(
    () => sql<{ n: number }[]>`select count(*)::int as n from jobs where status in ('queued', 'processing')`,
  );
  return row?.n ?? 0;
}

/** Waits for every accepted job to be final; returns how many were still unfinished at the timeout. */
export async function drain(sql: Sql, label: string, timeoutMs: number): Promise<number> {
  const started = Date.now();
  let lastPrint = Date.now();
  for (;;) {
    const left = await backlog(sql);
    if (left === 0) return 0;
    if (Date.now() - started > timeoutMs) return left;
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
export async function settleSync(syncUrl: string, timeoutMs: number): Promise<number> {
  const started = Date.now();
  for (;;) {
    const res = await fetch(`${syncUrl}/in-flight`);
    const { in_flight: left } = (await res.json()) as { in_flight: number };
    if (left === 0 || Date.now() - started > timeoutMs) return left;
    await sleep(20);
  }
}
