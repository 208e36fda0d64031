import { setTimeout as sleep } from 'node:timers/promises';
import { partitionLeaseKey } from '@cs/queue';
import { Redis } from 'ioredis';
import type postgres from 'postgres';
import { expect } from 'vitest';
import { balanceOf, createSeller, fundSeller, inParallel, type TestSeller } from './factories.ts';
import type { Answer, Client } from './http.ts';
import { ADMIN_TOKEN } from './system.ts';

type Sql = postgres.Sql<{ bigint: bigint }>;

export const FINAL_STATUSES = ['succeeded', 'rejected', 'failed'] as const;

/**
 * A small seeded generator (mulberry32): a failing run can be replayed with the seed it printed.
 */
export function seededRandom(seed: number) {
  let state = seed >>> 0;
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    next,
    /** An integer in [min, max]. */
    int: (min: number, max: number) => min + Math.floor(next() * (max - min + 1)),
    shuffle: <T>(items: T[]): T[] => {
      for (let i = items.length - 1; i > 0; i--) {
        const j = Math.floor(next() * (i + 1));
        [items[i], items[j]] = [items[j] as T, items[i] as T];
      }
      return items;
    },
  };
}
export type Random = ReturnType<typeof seededRandom>;

/** The seed of this run: CONCURRENCY_SEED replays one, otherwise a fresh one. */
export function runSeed(): number {
  const given = Number(process.env.CONCURRENCY_SEED);
  return Number.isInteger(given) && given > 0 ? given : Math.floor(Math.random() * 2 ** 31) + 1;
}

export function phoneFor(index: number): string {
  return `0912${String(index % 10_000_000).padStart(7, '0')}`;
}

export function sell(
  client: Client,
  seller: TestSeller,
  amount: number | string,
  phone: string,
  headers: Record<string, string> = {},
): Promise<Answer> {
  return client.post('/api/charge-sales', {
    token: seller.apiKey,
    headers,
    body: { seller_id: seller.id, phone_number: phone, amount },
  });
}

export interface JobRecord {
  id: string;
  seller_id: string;
  type: string;
  status: string;
  result: Record<string, any> | null;
  error: Record<string, any> | null;
  started_at: Date | null;
  finished_at: Date | null;
}

/**
 * Waits until every job is final in PostgreSQL, the record the API reads, and returns the rows.
 * One query per poll instead of one request per job keeps the observer from becoming the load.
 */
export async function waitForJobsFinal(sql: Sql, ids: readonly string[], timeoutMs = 90_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const rows = await sql<JobRecord[]>`
      select id::text, seller_id::text, type, status, result, error, started_at, finished_at
      from jobs where id = any(${ids as string[]}::uuid[])`;
    const pending = rows.filter((r) => !(FINAL_STATUSES as readonly string[]).includes(r.status));
    if (rows.length === ids.length && pending.length === 0) return new Map(rows.map((r) => [r.id, r]));
    if (Date.now() > deadline) {
      throw new Error(
        `${pending.length + ids.length - rows.length} of ${ids.length} jobs not final after ${timeoutMs} ms`,
      );
    }
    await sleep(100);
  }
}

/** Reads every job over HTTP, as a client would, once they are known to be final. */
export async function readJobs(client: Client, ids: readonly string[], concurrency = 32) {
  const answers = await inParallel([...ids], concurrency, (id) =>
    client.get(`/api/jobs/${id}`, { token: ADMIN_TOKEN }),
  );
  for (const answer of answers) expect(answer.status, JSON.stringify(answer.body)).toBe(200);
  return new Map(answers.map((a) => [a.body.job_id as string, a.body]));
}

export interface LedgerRow {
  id: bigint;
  seller_id: string;
  type: 'charge_sale' | 'credit_increase';
  amount: bigint;
  balance_after: bigint;
  job_id: string;
  credit_request_id: string | null;
}

export function ledgerOf(sql: Sql, sellerId: string) {
  return sql<LedgerRow[]>`
    select id, seller_id::text, type, amount, balance_after, job_id::text, credit_request_id::text
    from transactions where seller_id = ${sellerId} order by id`;
}

/**
 * The ledger as a chain: every row leaves a balance of at least zero, and each row's balance is
 * the previous one plus its amount. Returns the balance the chain ends on.
 */
export function expectUnbrokenChain(rows: readonly LedgerRow[]): bigint {
  let balance = 0n;
  for (const row of rows) {
    expect(row.balance_after, `ledger row ${row.id} leaves a negative balance`).toBeGreaterThanOrEqual(0n);
    expect(row.balance_after, `ledger row ${row.id} does not follow from the one before`).toBe(balance + row.amount);
    balance = row.balance_after;
  }
  return balance;
}

export async function expectReconciled(client: Client, sellerId: string, balance: bigint) {
  const res = await client.get(`/api/sellers/${sellerId}/reconcile`, { token: ADMIN_TOKEN });
  expect(res.status).toBe(200);
  expect(res.body).toMatchObject({
    current_balance: balance.toString(),
    calculated_from_transactions: balance.toString(),
    is_reconciled: true,
    difference: '0',
  });
}

/**
 * Each seller's ledger is one unbroken chain (never below zero, each row following from the one
 * before) that ends on the seller's balance, and the API's reconcile agrees. Returns the balances.
 */
export async function expectLedgersReconcile(client: Client, sql: Sql, sellerIds: readonly string[]) {
  const balances = new Map<string, bigint>();
  await inParallel([...sellerIds], 8, async (id) => {
    const balance = expectUnbrokenChain(await ledgerOf(sql, id));
    expect(await balanceOf(client, id), `seller ${id}: balance = ledger`).toBe(balance);
    await expectReconciled(client, id, balance);
    balances.set(id, balance);
  });
  return balances;
}

/** One database transaction as seen on its jobs: they share its start and its finish. */
export interface Span {
  sellerId: string;
  start: Date;
  end: Date;
  jobs: number;
}

/**
 * The transactions that held each seller, from the jobs they decided. A transaction stamps its
 * jobs with its start (now()) and the clock after its writes, so two of them sharing both stamps
 * are one transaction.
 */
export async function transactionSpans(sql: Sql, sellerIds: readonly string[]): Promise<Span[]> {
  const rows = await sql<{ seller_id: string; started_at: Date; applied_at: Date; jobs: bigint }[]>`
    select seller_id::text, started_at, applied_at, count(*)::bigint as jobs
    from jobs
    where seller_id = any(${sellerIds as string[]}::uuid[]) and started_at is not null
    group by seller_id, started_at, applied_at
    order by seller_id, started_at, applied_at`;
  return rows.map((r) => ({ sellerId: r.seller_id, start: r.started_at, end: r.applied_at, jobs: Number(r.jobs) }));
}

/** Pairs of one seller's transactions whose spans overlap: two transactions held it at once. */
export function overlappingSpans(spans: readonly Span[]): [Span, Span][] {
  const bySeller = new Map<string, Span[]>();
  for (const span of spans) bySeller.set(span.sellerId, [...(bySeller.get(span.sellerId) ?? []), span]);
  const overlaps: [Span, Span][] = [];
  for (const list of bySeller.values()) {
    list.sort((a, b) => a.start.getTime() - b.start.getTime());
    let latest: Span | undefined;
    for (const span of list) {
      if (latest && span.start < latest.end) overlaps.push([latest, span]);
      if (!latest || span.end > latest.end) latest = span;
    }
  }
  return overlaps;
}

/** Counts answers by status, and remembers any 5xx for the failure message. */
export class StatusTally {
  readonly counts = new Map<number, number>();
  readonly serverErrors: string[] = [];

  add(path: string, answer: Answer): Answer {
    this.counts.set(answer.status, (this.counts.get(answer.status) ?? 0) + 1);
    if (answer.status >= 500) this.serverErrors.push(`${path} → ${answer.status} ${JSON.stringify(answer.body)}`);
    return answer;
  }

  toString(): string {
    return [...this.counts]
      .sort(([a], [b]) => a - b)
      .map(([status, n]) => `${status}×${n}`)
      .join(' ');
  }
}

export interface MixedLoadOptions {
  sales: number;
  clients: number;
  sellers: number;
  /** Credit requests made and processed while the sales run, per 100 sales. */
  creditsPer100Sales: number;
  random: Random;
  log?: (line: string) => void;
}

interface SaleSubmission {
  seller: number;
  amount: bigint;
  jobId: string;
}

interface CreditSubmission {
  seller: number;
  amount: bigint;
  action: 'approve' | 'reject';
  requestId: string;
  jobId: string;
}

/**
 * Many clients at once: sales of random amounts to random phones, interleaved with credit
 * requests made by the sellers and approved or rejected by the operator. The first sellers are
 * funded generously; the last ones get far less than their sales ask for, so they run out.
 * Everything a client was told is kept, so the balances can be predicted from the answers alone.
 */
export async function runMixedLoad(client: Client, options: MixedLoadOptions) {
  const { random, log = () => {} } = options;
  const tally = new StatusTally();
  const sellers = await inParallel(
    Array.from({ length: options.sellers }, (_, i) => i),
    options.sellers,
    (i) => createSeller(client, `Mixed ${i}`),
  );
  const salesPerSeller = options.sales / options.sellers;
  // Sales average 25,500 rials: the first seller can pay for all of its sales with a margin
  // no random draw uses up, the last for about a tenth of them, before the credits made during
  // the run.
  const opening = sellers.map((_, i) =>
    BigInt(Math.round(salesPerSeller * 25_500 * (1.2 - (1.1 * i) / Math.max(1, options.sellers - 1)))),
  );

  // Everything random is drawn here, before any request, so a seed replays the same operations.
  type Operation =
    | { kind: 'sale'; seller: number; amount: bigint; phone: string; byOperator: boolean }
    | { kind: 'credit'; seller: number; amount: bigint; action: 'approve' | 'reject' };
  const operations: Operation[] = [
    ...Array.from(
      { length: options.sales },
      (_, i): Operation => ({
        kind: 'sale',
        seller: i % options.sellers,
        amount: BigInt(random.int(1, 50) * 1000 + random.int(0, 999)),
        phone: phoneFor(random.int(0, 9_999_999)),
        // The operator may sell on a seller's behalf too; both go through the same queue.
        byOperator: random.next() < 0.1,
      }),
    ),
    ...Array.from(
      { length: Math.round((options.sales * options.creditsPer100Sales) / 100) },
      (): Operation => ({
        kind: 'credit',
        seller: random.int(0, options.sellers - 1),
        amount: BigInt(random.int(10, 400) * 1000),
        action: random.next() < 0.75 ? 'approve' : 'reject',
      }),
    ),
  ];
  random.shuffle(operations);

  const sales: SaleSubmission[] = [];
  const credits: CreditSubmission[] = [];

  const credit = async (seller: number, amount: bigint, action: 'approve' | 'reject') => {
    const owner = sellers[seller] as TestSeller;
    const created = tally.add(
      'POST /api/credit-requests',
      await client.post('/api/credit-requests', {
        token: owner.apiKey,
        body: { seller: owner.id, amount: amount.toString() },
      }),
    );
    expect(created.status, JSON.stringify(created.body)).toBe(201);
    const processed = tally.add(
      'POST /api/credit-requests/{id}/process',
      await client.post(`/api/credit-requests/${created.body.id}/process`, { token: ADMIN_TOKEN, body: { action } }),
    );
    expect(processed.status, JSON.stringify(processed.body)).toBe(202);
    credits.push({ seller, amount, action, requestId: created.body.id, jobId: processed.body.job_id });
  };

  await inParallel(opening, options.sellers, (amount, i) => credit(i, amount, 'approve'));
  log(`opening credits queued: ${opening.join(', ')}`);

  // A reader watching the balances while the load runs: none may ever be seen below zero.
  const observedBalances: bigint[] = [];
  let loading = true;
  const watcher = (async () => {
    while (loading) {
      for (const seller of sellers) {
        const res = tally.add(
          'GET /api/sellers/{id}/balance',
          await client.get(`/api/sellers/${seller.id}/balance`, { token: ADMIN_TOKEN }),
        );
        if (res.status === 200) observedBalances.push(BigInt(res.body.credit_balance));
      }
      await sleep(20);
    }
  })();

  const started = performance.now();
  let submitted = 0;
  try {
    await inParallel(operations, options.clients, async (op) => {
      if (op.kind === 'credit') {
        await credit(op.seller, op.amount, op.action);
        return;
      }
      const seller = sellers[op.seller] as TestSeller;
      const res = tally.add(
        'POST /api/charge-sales',
        await client.post('/api/charge-sales', {
          token: op.byOperator ? ADMIN_TOKEN : seller.apiKey,
          body: { seller_id: seller.id, phone_number: op.phone, amount: op.amount.toString() },
        }),
      );
      expect(res.status, JSON.stringify(res.body)).toBe(202);
      sales.push({ seller: op.seller, amount: op.amount, jobId: res.body.job_id });
      if (++submitted % 500 === 0) log(`${submitted} sales accepted after ${msSince(started)} ms`);
    });
  } finally {
    loading = false;
    await watcher.catch(() => {});
  }
  const submittedMs = msSince(started);
  log(`all ${sales.length} sales and ${credits.length} credit processings accepted in ${submittedMs} ms`);

  return { sellers, sales, credits, tally, started, submittedMs, observedBalances };
}

export function msSince(start: number): number {
  return Math.round(performance.now() - start);
}

export type MixedLoad = Awaited<ReturnType<typeof runMixedLoad>>;

/**
 * Checks a mixed load against what its clients were told: every accepted job final, every sale
 * either sold or refused for want of balance, each credit processed as asked, and every seller's
 * balance, ledger and reconciliation equal to what the answers add up to.
 */
export async function verifyMixedLoad(client: Client, sql: Sql, load: MixedLoad, timeoutMs = 120_000) {
  const { sellers, sales, credits, tally } = load;
  expect(tally.serverErrors, tally.serverErrors.slice(0, 5).join('\n')).toEqual([]);
  expect(load.observedBalances.length).toBeGreaterThan(0);
  expect(load.observedBalances.filter((b) => b < 0n)).toEqual([]);

  const allIds = [...sales.map((s) => s.jobId), ...credits.map((c) => c.jobId)];
  await waitForJobsFinal(sql, allIds, timeoutMs);
  const finishedMs = msSince(load.started);
  const jobs = await readJobs(client, allIds);

  const approved = sellers.map(() => 0n);
  const sold = sellers.map(() => 0n);
  const expectedLedgerJobs = sellers.map(() => new Map<string, Record<string, any>>());
  let succeeded = 0;
  let refused = 0;
  const refusedBySeller = sellers.map(() => 0);

  for (const sale of sales) {
    const job = jobs.get(sale.jobId);
    expect(job?.type).toBe('charge_sale');
    if (job?.status === 'succeeded') {
      succeeded++;
      sold[sale.seller] = (sold[sale.seller] ?? 0n) + sale.amount;
      expect(job.result.amount).toBe(sale.amount.toString());
      expectedLedgerJobs[sale.seller]?.set(sale.jobId, job);
    } else {
      expect(job?.status, JSON.stringify(job)).toBe('rejected');
      expect(job?.error.code).toBe('insufficient_balance');
      expect(BigInt(job?.error.available_balance)).toBeLessThan(sale.amount);
      refused++;
      refusedBySeller[sale.seller] = (refusedBySeller[sale.seller] ?? 0) + 1;
    }
  }
  expect(succeeded + refused).toBe(sales.length);

  for (const credit of credits) {
    const job = jobs.get(credit.jobId);
    expect(job, JSON.stringify(job)).toMatchObject({ type: 'credit_approval', status: 'succeeded' });
    expect(job?.result.status).toBe(credit.action === 'approve' ? 'approved' : 'rejected');
    if (credit.action === 'approve') {
      approved[credit.seller] = (approved[credit.seller] ?? 0n) + credit.amount;
      expectedLedgerJobs[credit.seller]?.set(credit.jobId, job as Record<string, any>);
    }
  }

  const balances: bigint[] = [];
  for (const [i, seller] of sellers.entries()) {
    const expected = (approved[i] ?? 0n) - (sold[i] ?? 0n);
    const ledger = await ledgerOf(sql, seller.id);
    expect(expectUnbrokenChain(ledger)).toBe(expected);
    const expectedJobs = expectedLedgerJobs[i] ?? new Map();
    expect(ledger).toHaveLength(expectedJobs.size);
    for (const row of ledger) {
      const job = expectedJobs.get(row.job_id);
      expect(job, `ledger row ${row.id} belongs to no successful job`).toBeDefined();
      if (row.type === 'charge_sale') {
        expect(job?.result.transaction_id).toBe(row.id.toString());
        expect(job?.result.new_balance).toBe(row.balance_after.toString());
      }
    }
    const balance = await client.get(`/api/sellers/${seller.id}/balance`, { token: seller.apiKey });
    expect(balance.body.credit_balance).toBe(expected.toString());
    await expectReconciled(client, seller.id, expected);
    balances.push(expected);
  }

  // Whatever the batching, no seller was ever held by two transactions at once.
  const spans = await transactionSpans(
    sql,
    sellers.map((s) => s.id),
  );
  expect(overlappingSpans(spans).map(describeOverlap)).toEqual([]);

  return { succeeded, refused, refusedBySeller, balances, finishedMs, transactions: spans.length };
}

export interface SerialOptions {
  sellers: number;
  /** Sellers that submit one sale after another, each 202 awaited before the next. */
  sequentialSellers: number;
  sequentialSales: number;
  /** Sales flooded by `clients` concurrent clients over the other sellers. */
  floodSales: number;
  clients: number;
  partitions: number;
  redisUrl: string;
  redisPrefix: string;
  log?: (line: string) => void;
}

/**
 * Many sellers sharing few partitions, with sequential sellers among a flood. Checks that no two
 * transactions of one seller ever overlapped in time, that sequential sales reached the ledger
 * in submission order, and that the partitions were in fact spread over several processes.
 */
export async function runSerialPerSeller(client: Client, sql: Sql, options: SerialOptions) {
  const { log = () => {} } = options;
  const funding = 100_000_000n;
  const sellers = await inParallel(
    Array.from({ length: options.sellers }, (_, i) => i),
    10,
    (i) => createSeller(client, `Serial ${i}`),
  );
  await inParallel(sellers, 10, async (seller) => {
    const request = await client.post('/api/credit-requests', {
      token: seller.apiKey,
      body: { seller: seller.id, amount: funding.toString() },
    });
    expect(request.status).toBe(201);
    const processed = await client.post(`/api/credit-requests/${request.body.id}/process`, {
      token: ADMIN_TOKEN,
      headers: { prefer: 'wait=30' },
      body: { action: 'approve' },
    });
    expect(processed.body.status, JSON.stringify(processed.body)).toBe('succeeded');
  });
  const sequential = sellers.slice(0, options.sequentialSellers);
  const flooded = sellers.slice(options.sequentialSellers);
  const tally = new StatusTally();
  const started = performance.now();

  const sequentialRuns = sequential.map(async (seller) => {
    const ids: string[] = [];
    for (let i = 0; i < options.sequentialSales; i++) {
      const res = tally.add('POST /api/charge-sales', await sell(client, seller, 1000 + i, phoneFor(i)));
      expect(res.status, JSON.stringify(res.body)).toBe(202);
      ids.push(res.body.job_id);
    }
    return { seller, ids };
  });
  let accepted = 0;
  const flood = inParallel(
    Array.from({ length: options.floodSales }, (_, i) => flooded[i % flooded.length] as TestSeller),
    options.clients,
    async (seller, i) => {
      const res = tally.add('POST /api/charge-sales', await sell(client, seller, 500 + (i % 97), phoneFor(i)));
      expect(res.status, JSON.stringify(res.body)).toBe(202);
      if (++accepted % 1000 === 0) log(`${accepted} flooded sales accepted after ${msSince(started)} ms`);
      return res.body.job_id as string;
    },
  );
  const [floodIds, runs] = await Promise.all([flood, Promise.all(sequentialRuns)]);
  const allIds = [...floodIds, ...runs.flatMap((r) => r.ids)];
  const jobs = await waitForJobsFinal(sql, allIds, 300_000);
  const elapsedMs = msSince(started);
  expect(tally.serverErrors.slice(0, 3), `answers ${tally}`).toEqual([]);
  expect([...jobs.values()].filter((j) => j.status !== 'succeeded')).toEqual([]);

  const spans = await transactionSpans(
    sql,
    sellers.map((s) => s.id),
  );
  const overlaps = overlappingSpans(spans);
  expect(overlaps.map(describeOverlap)).toEqual([]);
  // Transactions of different sellers did run at the same time: the check above could have failed.
  const acrossSellers = overlappingSpans(spans.map((s) => ({ ...s, sellerId: 'any' }))).length;
  expect(acrossSellers).toBeGreaterThan(0);

  const sum = (options.sequentialSales * (2000 + options.sequentialSales - 1)) / 2;
  for (const { seller, ids } of runs) {
    const ledger = await ledgerOf(sql, seller.id);
    const sales = ledger.filter((r) => r.type === 'charge_sale');
    expect(sales.map((r) => r.job_id)).toEqual(ids);
    expect(sales.map((r) => -r.amount)).toEqual(ids.map((_, i) => BigInt(1000 + i)));
    expect(expectUnbrokenChain(ledger)).toBe(funding - BigInt(sum));
    await expectReconciled(client, seller.id, funding - BigInt(sum));
  }

  // The partitions were spread over more than one process while this ran.
  const redis = new Redis(options.redisUrl);
  const owners = await Promise.all(
    Array.from({ length: options.partitions }, (_, p) => redis.get(partitionLeaseKey(options.redisPrefix, p))),
  );
  await redis.quit();
  expect(new Set(owners.filter(Boolean)).size).toBeGreaterThanOrEqual(2);

  log(
    `${allIds.length} sales in ${elapsedMs} ms (${((allIds.length / elapsedMs) * 1000).toFixed(0)} sales/s); ` +
      `${spans.length} seller-transactions, none overlapping for one seller, ${acrossSellers} overlapping across sellers; ` +
      `partition owners ${owners.map((o) => o?.slice(0, 8)).join(' ')}`,
  );
  return { sales: allIds.length, elapsedMs, spans: spans.length, acrossSellers };
}

function describeOverlap([a, b]: [Span, Span]): string {
  return `${a.sellerId}: ${a.start.toISOString()}–${a.end.toISOString()} and ${b.start.toISOString()}–${b.end.toISOString()}`;
}

/**
 * Funds a fresh seller, fires `attempts` sales of `amount` at once, and checks that exactly
 * floor(balance / amount) of them sold, the rest were refused for want of balance, and the
 * balance, ledger and reconciliation agree.
 */
export async function exhaustBalance(
  client: Client,
  sql: Sql,
  { balance, amount, attempts }: { balance: bigint; amount: bigint; attempts: number },
) {
  const seller = await createSeller(client, `Exhaust ${balance}/${amount}`);
  await fundSeller(client, seller, balance.toString());
  const tally = new StatusTally();
  const answers = await Promise.all(
    Array.from({ length: attempts }, async (_, i) =>
      tally.add('POST /api/charge-sales', await sell(client, seller, amount.toString(), phoneFor(i))),
    ),
  );
  expect(tally.serverErrors).toEqual([]);
  for (const answer of answers) expect(answer.status, JSON.stringify(answer.body)).toBe(202);
  const ids = answers.map((a) => a.body.job_id as string);
  await waitForJobsFinal(sql, ids);
  const jobs = [...(await readJobs(client, ids)).values()];

  const expectedSold = balance / amount;
  const sold = jobs.filter((j) => j.status === 'succeeded');
  const refused = jobs.filter((j) => j.status === 'rejected');
  expect(sold).toHaveLength(Number(expectedSold));
  expect(refused).toHaveLength(attempts - Number(expectedSold));
  for (const job of refused) {
    expect(job.error).toMatchObject({ code: 'insufficient_balance', required_amount: amount.toString() });
    expect(BigInt(job.error.available_balance)).toBeLessThan(amount);
    expect(BigInt(job.error.shortage)).toBe(amount - BigInt(job.error.available_balance));
  }
  // Each sale saw the balance its predecessors left: the new balances are one strict sequence.
  const left = sold.map((j) => BigInt(j.result.new_balance)).sort((a, b) => (a < b ? 1 : a > b ? -1 : 0));
  expect(left).toEqual(Array.from({ length: left.length }, (_, k) => balance - BigInt(k + 1) * amount));

  const remaining = balance - expectedSold * amount;
  expect(await balanceOf(client, seller.id)).toBe(remaining);
  const ledger = await ledgerOf(sql, seller.id);
  expect(ledger.filter((r) => r.type === 'charge_sale')).toHaveLength(Number(expectedSold));
  expect(expectUnbrokenChain(ledger)).toBe(remaining);
  await expectReconciled(client, seller.id, remaining);
  return { sold: sold.length, remaining };
}

export type CreditAction = 'approve' | 'reject';

export async function requestCredit(client: Client, seller: TestSeller, amount: number): Promise<string> {
  const res = await client.post('/api/credit-requests', { token: seller.apiKey, body: { seller: seller.id, amount } });
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  return res.body.id;
}

/**
 * Fires `actions` at one credit request at once and checks that exactly one took effect: every
 * other attempt was refused, either at once by the API (409) or by its job (already_processed).
 * Returns the action that won.
 */
export async function raceCreditRequest(client: Client, sql: Sql, requestId: string, actions: CreditAction[]) {
  // Connections opened beforehand, so the attempts leave together rather than one handshake apart.
  await Promise.all(actions.map(() => client.get('/healthz')));
  const tally = new StatusTally();
  const answers = await Promise.all(
    actions.map(async (action) => ({
      action,
      answer: tally.add(
        'POST /api/credit-requests/{id}/process',
        await client.post(`/api/credit-requests/${requestId}/process`, { token: ADMIN_TOKEN, body: { action } }),
      ),
    })),
  );
  expect(tally.serverErrors).toEqual([]);
  const queued = answers.filter((a) => a.answer.status === 202);
  for (const { answer } of answers.filter((a) => a.answer.status !== 202)) {
    expect(answer.status, JSON.stringify(answer.body)).toBe(409);
    expect(answer.body.code).toBe('already_processed');
  }
  const ids = queued.map((q) => q.answer.body.job_id as string);
  await waitForJobsFinal(sql, ids);
  const jobs = await readJobs(client, ids);
  const winners = queued.filter((q) => jobs.get(q.answer.body.job_id)?.status === 'succeeded');
  expect(winners, `one transition, not ${winners.length}`).toHaveLength(1);
  for (const q of queued) {
    const job = jobs.get(q.answer.body.job_id);
    if (job?.status === 'succeeded') continue;
    expect(job, JSON.stringify(job)).toMatchObject({ status: 'rejected', error: { code: 'already_processed' } });
  }
  const winner = winners[0]?.action as CreditAction;
  expect(jobs.get(winners[0]?.answer.body.job_id)?.result).toMatchObject({
    credit_request_id: requestId,
    status: winner === 'approve' ? 'approved' : 'rejected',
  });
  return { winner, queued: queued.length, refusedAtOnce: answers.length - queued.length };
}

/** The request ended as the winner asked, says who processed it, and is in the ledger at most once. */
export async function expectOneTransition(
  client: Client,
  sql: Sql,
  sellerId: string,
  requestId: string,
  winner: CreditAction,
) {
  const list = await client.get(`/api/credit-requests?seller=${sellerId}&limit=500`, { token: ADMIN_TOKEN });
  expect(list.status).toBe(200);
  const request = list.body.items.find((r: { id: string }) => r.id === requestId);
  expect(request).toMatchObject({
    status: winner === 'approve' ? 'approved' : 'rejected',
    processed_by: expect.any(String),
  });
  expect(request.processed_at).not.toBeNull();
  const rows = await sql`select count(*)::int as n from transactions where credit_request_id = ${requestId}`;
  expect(rows[0]?.n).toBe(winner === 'approve' ? 1 : 0);
}
