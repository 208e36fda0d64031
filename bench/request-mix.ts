/**
 * What the load offers, shared by both load generators (autocannon in bench/load.ts, wrk through
 * bench/load-wrk.ts), so that a workload is the same requests whichever drives it.
 */

/** 10,000 distinct numbers: phone totals get both new rows and updates, as in real traffic. */
export const phones = Array.from({ length: 10_000 }, (_, i) => `0912${String(i * 7 + 1_000_000).padStart(7, '0')}`);
export const amounts = [1_000, 2_000, 5_000, 10_000, 20_000];
/** What a seller asks for in a credit request of the `mixed` workload. */
export const creditAmount = 1_000_000;
/** A request id that matches nothing, for an approval whose credit request was refused. */
export const nilUuid = '00000000-0000-0000-0000-000000000000';
/** `mixed`: of every 20 requests, this many sales, then a credit request and its approval. */
export const MIXED_SALES = 18;
