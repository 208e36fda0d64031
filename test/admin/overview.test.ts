import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isolatedDatabase, testSql } from '../support/db.ts';
import { createSeller, fundSeller, type TestSeller, waitForJob } from '../support/factories.ts';
import { Client } from '../support/http.ts';
import { BROWSER } from '../support/pages.ts';
import { ADMIN_TOKEN, System } from '../support/system.ts';

const MINUTE = 60_000;

interface Overview {
  window: { from: string; to: string; submitted_since: string };
  sales_per_minute: Array<{ minute: string; count: number }>;
  refusals_by_code: Array<{ code: string; count: number }>;
  open_jobs_by_partition: Array<{ partition: number; open: number; queue_messages: number | null }>;
  submit_to_commit_p99_ms: number | null;
  submit_to_commit_p99_ms_per_minute: Array<{ minute: string; p99_ms: number | null }>;
}

interface FinishedJob {
  job_id: string;
  type: string;
  status: string;
  submitted_at: string;
  finished_at: string;
  error: { code: string } | null;
}

/** PostgreSQL's percentile_cont: linear interpolation between the closest ranks. */
function percentileCont(values: number[], fraction: number): number | null {
  if (values.length === 0) return null;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = fraction * (sorted.length - 1);
  const below = Math.floor(rank);
  const lower = sorted[below] as number;
  const upper = sorted[Math.min(below + 1, sorted.length - 1)] as number;
  return lower + (upper - lower) * (rank - below);
}

const minuteOf = (iso: string) => new Date(Math.floor(Date.parse(iso) / MINUTE) * MINUTE).toISOString();
const latencyOf = (job: FinishedJob) => Date.parse(job.finished_at) - Date.parse(job.submitted_at);

/** A UUIDv7 of the given millisecond, as the API makes them: its first 48 bits are the time (RFC 9562). */
function uuidv7At(ms: number): string {
  const random = randomBytes(10).toString('hex');
  const variant = (8 + (Number.parseInt(random[3] as string, 16) % 4)).toString(16);
  const hex = `${ms.toString(16).padStart(12, '0')}7${random.slice(0, 3)}${variant}${random.slice(4, 19)}`;
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20, 32)}`;
}

/** `data-key` → `data-value` of the bars of the chart whose accessible name starts with `name`. */
function chartValues(html: string, name: string, series?: string): Map<string, number | null> {
  const svg =
    new RegExp(`<svg[^>]*aria-label="${name}[^"]*"[^>]*>([\\s\\S]*?)</svg>`).exec(html)?.[1] ??
    expect.fail(`no chart "${name}" in the page`);
  const values = new Map<string, number | null>();
  for (const [g] of svg.matchAll(/<g data-key="[^"]*"[^>]*>/g)) {
    if (series !== undefined && !g.includes(`data-series="${series}"`)) continue;
    const key = /data-key="([^"]*)"/.exec(g)?.[1] as string;
    const value = /data-value="([^"]*)"/.exec(g)?.[1];
    values.set(key, value === undefined ? null : Number(value));
  }
  return values;
}

/** Waits, if need be, until the clock is well inside a minute: the next steps must not straddle two. */
async function awayFromMinuteEdge(): Promise<void> {
  const intoMinute = Date.now() % MINUTE;
  if (intoMinute > 45_000) await new Promise((r) => setTimeout(r, MINUTE - intoMinute + 500));
}

describe('the last hour at a glance: GET /api/overview and the /admin overview page', () => {
  let database: Awaited<ReturnType<typeof isolatedDatabase>>;
  let system: System;
  let client: Client;
  let sql: ReturnType<typeof testSql>;
  /** Every job this file made, final. */
  const jobs: FinishedJob[] = [];
  let shop: TestSeller;
  let soonInactive: TestSeller;

  const finish = async (jobId: string) => {
    const job = (await waitForJob(client, jobId)) as FinishedJob;
    jobs.push(job);
    return job;
  };
  const sell = (seller: TestSeller, amount: number) =>
    client.post('/api/charge-sales', {
      token: seller.apiKey,
      body: { seller_id: seller.id, phone_number: '09121112233', amount },
    });
  const overview = async () => {
    const res = await client.get<Overview>('/api/overview', { token: ADMIN_TOKEN });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    return res.body;
  };

  beforeAll(async () => {
    // A database of its own: the overview counts every job, and other files make theirs.
    database = await isolatedDatabase('overview');
    sql = testSql(database.ownerUrl);
    system = await System.start({ workers: 1, databaseUrl: database.applicationUrl });
    client = new Client(system.baseUrl);
  });
  afterAll(async () => {
    await system?.stop();
    await sql?.end();
    await database?.drop();
  });

  it('shows a backlog while no worker runs: open jobs per partition from PostgreSQL, messages from Redis', async () => {
    shop = await createSeller(client, 'Overview shop');
    soonInactive = await createSeller(client, 'Soon inactive');
    expect((await fundAndKeep(shop, 100_000)).status).toBe('succeeded');
    expect((await fundAndKeep(soonInactive, 10_000)).status).toBe('succeeded');

    // Seven sales that fit the balance (70,000 of 100,000), then three that do not.
    for (let i = 0; i < 7; i++) {
      const sale = await sell(shop, 10_000);
      expect(sale.status).toBe(202);
      expect((await finish(sale.body.job_id)).status).toBe('succeeded');
    }
    for (const amount of [50_000, 40_000, 31_000]) {
      const sale = await sell(shop, amount);
      expect((await finish(sale.body.job_id)).error?.code).toBe('insufficient_balance');
    }

    // No worker: two sales of a seller deactivated before they are applied, and one credit request
    // approved twice (both accepted while it is still pending; the second finds it approved). Each
    // is submitted alone, so each travels in a message of its own.
    await system.stopWorker(0);
    const queued = [(await sell(soonInactive, 1_000)).body.job_id, (await sell(soonInactive, 2_000)).body.job_id];
    expect(
      (await client.patch(`/api/sellers/${soonInactive.id}`, { token: ADMIN_TOKEN, body: { is_active: false } }))
        .status,
    ).toBe(200);
    const request = await client.post('/api/credit-requests', {
      token: shop.apiKey,
      body: { seller: shop.id, amount: 5_000 },
    });
    for (let i = 0; i < 2; i++) {
      const processed = await client.post(`/api/credit-requests/${request.body.id}/process`, {
        token: ADMIN_TOKEN,
        body: { action: 'approve' },
      });
      expect(processed.status).toBe(202);
      queued.push(processed.body.job_id);
    }
    // And a sale whose message Redis lost (recorded, never delivered): open in PostgreSQL, the
    // record, with nothing in its queue; a worker puts it back once it has waited 10 s.
    const [first] = await sql<
      Array<{ partition: number }>
    >`select partition from jobs where id = ${queued[0] as string}`;
    const lostPartition = (first as { partition: number }).partition;
    const lost = uuidv7At(Date.now() - 20_000);
    await sql`
      insert into jobs (id, type, seller_id, partition, queue_job_id, status, amount, phone_number, submitted_at)
      values (${lost}, 'charge_sale', ${soonInactive.id}, ${lostPartition}, ${lost}, 'queued', 3000, '09121112233',
              now() - interval '20 seconds')`;
    queued.push(lost);

    const rows = await sql<Array<{ partition: number }>>`select partition from jobs where id = any(${queued}::uuid[])`;
    const expected = new Map<number, number>();
    for (const { partition } of rows) expected.set(partition, (expected.get(partition) ?? 0) + 1);
    const backlog = await overview();
    expect(backlog.open_jobs_by_partition.map((p) => p.partition)).toEqual([...Array(16).keys()]);
    for (const p of backlog.open_jobs_by_partition) {
      expect(p.open, `partition ${p.partition}`).toBe(expected.get(p.partition) ?? 0);
      // A message for each job submitted, none for the lost one.
      expect(p.queue_messages, `partition ${p.partition}`).toBe(p.open - (p.partition === lostPartition ? 1 : 0));
    }

    // The page draws the same backlog.
    const page = await client.get<string>('/admin', { token: ADMIN_TOKEN, headers: { accept: BROWSER } });
    expect(page.status).toBe(200);
    const drawn = chartValues(page.body, 'Queue depth per partition', 'open jobs (PostgreSQL)');
    expect(Object.fromEntries(drawn)).toEqual(
      Object.fromEntries(backlog.open_jobs_by_partition.map((p) => [String(p.partition), p.open])),
    );
    expect([...drawn.values()].reduce<number>((sum, v) => sum + (v ?? 0), 0)).toBe(queued.length);
    const drawnMessages = chartValues(page.body, 'Queue depth per partition', 'queue messages (Redis)');
    expect(Object.fromEntries(drawnMessages)).toEqual(
      Object.fromEntries(backlog.open_jobs_by_partition.map((p) => [String(p.partition), p.queue_messages])),
    );
    expect(page.body).toContain(`${queued.length} open jobs in PostgreSQL`);

    system.startWorker();
    const outcomes = await Promise.all(queued.map(finish));
    expect(outcomes.map((j) => j.error?.code ?? j.status)).toEqual([
      'seller_inactive',
      'seller_inactive',
      'succeeded',
      'already_processed',
      'seller_inactive',
    ]);
    // A message completes just after its jobs' outcomes are committed.
    await expect
      .poll(async () => (await overview()).open_jobs_by_partition.filter((p) => p.open !== 0 || p.queue_messages !== 0))
      .toEqual([]);
  });

  it('counts exactly the sales committed and the refusals of the hour, by minute and by code, and the p99', async () => {
    const body = await overview();
    const from = Date.parse(body.window.from);
    expect(from % MINUTE).toBe(0);
    expect(Date.parse(body.window.submitted_since)).toBe(from - 60 * MINUTE);
    expect(Date.parse(body.window.to)).toBeGreaterThanOrEqual(Date.parse(jobs.at(-1)?.finished_at ?? ''));

    // Sixty minutes, oldest first, one after another, the last one the minute now going on.
    const minutes = body.sales_per_minute.map((m) => m.minute);
    expect(minutes).toEqual(Array.from({ length: 60 }, (_, i) => new Date(from + i * MINUTE).toISOString()));
    expect(body.submit_to_commit_p99_ms_per_minute.map((m) => m.minute)).toEqual(minutes);
    expect(Date.parse(minutes.at(-1) as string)).toBe(Math.floor(Date.parse(body.window.to) / MINUTE) * MINUTE);

    // Each minute holds the sales that succeeded in it, by the jobs' own finished_at.
    const sales = jobs.filter((j) => j.type === 'charge_sale' && j.status === 'succeeded');
    expect(sales).toHaveLength(7);
    const perMinute = new Map<string, number>();
    for (const job of sales)
      perMinute.set(minuteOf(job.finished_at), (perMinute.get(minuteOf(job.finished_at)) ?? 0) + 1);
    expect(body.sales_per_minute.reduce((sum, m) => sum + m.count, 0)).toBe(7);
    for (const m of body.sales_per_minute) expect(m.count, m.minute).toBe(perMinute.get(m.minute) ?? 0);

    // Most first; a tie by code.
    expect(body.refusals_by_code).toEqual([
      { code: 'insufficient_balance', count: 3 },
      { code: 'seller_inactive', count: 3 },
      { code: 'already_processed', count: 1 },
    ]);

    // p99 of every job finished (sales, approvals, refusals): what the job resources say, to the
    // millisecond they are given in. The backlog's jobs waited for a worker to start: seconds.
    const expected = percentileCont(jobs.map(latencyOf), 0.99) as number;
    expect(body.submit_to_commit_p99_ms).not.toBeNull();
    expect(Math.abs((body.submit_to_commit_p99_ms as number) - expected)).toBeLessThan(2);
    expect(body.submit_to_commit_p99_ms).toBeGreaterThan(100);
    expect(body.submit_to_commit_p99_ms).toBeLessThan(120_000);
    for (const m of body.submit_to_commit_p99_ms_per_minute) {
      const inMinute = jobs.filter((j) => minuteOf(j.finished_at) === m.minute).map(latencyOf);
      if (inMinute.length === 0) expect(m.p99_ms, m.minute).toBeNull();
      else
        expect(Math.abs((m.p99_ms as number) - (percentileCont(inMinute, 0.99) as number)), m.minute).toBeLessThan(2);
    }
  });

  it('counts by finished_at inside the window, and only jobs submitted since window.submitted_since', async () => {
    await awayFromMinuteEdge();
    const [clock] = await sql<
      Array<{ from: Date }>
    >`select date_trunc('minute', now()) - interval '59 minutes' as from`;
    const from = (clock as { from: Date }).from.getTime();
    const before = await overview();
    expect(Date.parse(before.window.from)).toBe(from);
    // Owner's SQL, around the application: a sale finished just before the window, one just inside
    // its first minute, and one that finished inside but was submitted before the lookback.
    const fakes: string[] = [];
    const fake = async (submitted: number, finished: number) => {
      const id = uuidv7At(submitted);
      fakes.push(id);
      await sql`
        insert into jobs (id, type, seller_id, partition, queue_job_id, status, amount, phone_number, result,
                          submitted_at, started_at, applied_at, finished_at)
        values (${id}, 'charge_sale', ${shop.id}, 0, ${uuidv7At(submitted)}, 'succeeded', 1,
                '09121112233', '{}'::jsonb, ${new Date(submitted)}, ${new Date(finished)}, ${new Date(finished)},
                ${new Date(finished)})`;
    };
    const total = (o: Overview) => o.sales_per_minute.reduce((sum, m) => sum + m.count, 0);
    try {
      await fake(from - 2 * MINUTE, from - 1);
      await fake(from + 500, from + 1_000);
      await fake(from - 62 * MINUTE, from + 2_000);

      const after = await overview();
      expect(after.window.from).toBe(before.window.from);
      const first = new Date(from).toISOString();
      const countAt = (o: Overview, minute: string) => o.sales_per_minute.find((m) => m.minute === minute)?.count;
      expect(countAt(after, first)).toBe((countAt(before, first) ?? 0) + 1);
      expect(total(after)).toBe(total(before) + 1);
      expect(after.submit_to_commit_p99_ms_per_minute.find((m) => m.minute === first)?.p99_ms).toBe(500);
    } finally {
      // The later tests count this file's own jobs only.
      await sql`delete from jobs where id = any(${fakes}::uuid[])`;
    }
    expect(total(await overview())).toBe(total(before));
  });

  it('answers the admin only: 401 without a valid token, 403 to a seller', async () => {
    for (const token of [undefined, 'not-a-token', `${ADMIN_TOKEN}x`]) {
      const res = await client.get('/api/overview', { token });
      expect(res.status).toBe(401);
      expect(res.body.code).toBe('unauthorized');
    }
    const asSeller = await client.get('/api/overview', { token: shop.apiKey });
    expect(asSeller.status).toBe(403);
    expect(asSeller.body.code).toBe('forbidden');
  });

  it('draws the same numbers on /admin: four SVG charts, no script, each bar carrying its number', async () => {
    const [page, body] = await Promise.all([
      client.get<string>('/admin', { token: ADMIN_TOKEN, headers: { accept: BROWSER } }),
      overview(),
    ]);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toMatch(/text\/html/);
    expect(page.headers.get('content-security-policy')).toContain("default-src 'none'");
    const html = page.body;
    expect(html).toContain('<h1>The last hour</h1>');
    expect(html).not.toMatch(/<script/i);
    expect(html).toContain('<a href="/admin" aria-current="page">Overview</a>');
    expect(html.match(/<svg[^>]*role="img"/g)).toHaveLength(4);

    // The page and the API read the clock a moment apart: compare the minutes both show.
    const sales = chartValues(html, 'Committed sales per minute');
    expect(sales.size).toBe(60);
    let shown = 0;
    for (const m of body.sales_per_minute) {
      if (!sales.has(m.minute)) continue;
      expect(sales.get(m.minute), m.minute).toBe(m.count);
      shown += m.count;
    }
    expect([...sales.values()].reduce<number>((sum, v) => sum + (v ?? 0), 0)).toBe(shown);
    expect(shown).toBe(7);
    // Each bar's title says its number too, under the minute it stands for.
    for (const m of body.sales_per_minute.filter((m) => m.count > 0)) {
      expect(html).toContain(
        `<g data-key="${m.minute}" data-value="${m.count}"><title>${m.minute.slice(11, 16)}: ${m.count}</title>`,
      );
    }

    const refusals = chartValues(html, 'Refusals by code');
    expect(Object.fromEntries(refusals)).toEqual(
      Object.fromEntries(body.refusals_by_code.map((r) => [r.code, r.count])),
    );
    expect(refusals.get('insufficient_balance')).toBe(3);

    const open = chartValues(html, 'Queue depth per partition', 'open jobs (PostgreSQL)');
    const messages = chartValues(html, 'Queue depth per partition', 'queue messages (Redis)');
    expect(Object.fromEntries(open)).toEqual(
      Object.fromEntries(body.open_jobs_by_partition.map((p) => [String(p.partition), p.open])),
    );
    expect(Object.fromEntries(messages)).toEqual(
      Object.fromEntries(body.open_jobs_by_partition.map((p) => [String(p.partition), p.queue_messages])),
    );

    const latency = chartValues(html, 'p99 submit to commit latency per minute');
    expect(latency.get('overall')).toBe(body.submit_to_commit_p99_ms);
    for (const m of body.submit_to_commit_p99_ms_per_minute) {
      if (latency.has(m.minute)) expect(latency.get(m.minute), m.minute).toBe(m.p99_ms);
    }
  });

  /** Funds a seller through the credit request path; the approval job is one of this file's jobs. */
  async function fundAndKeep(seller: TestSeller, amount: number) {
    const requestId = await fundSeller(client, seller, amount);
    const [row] = await sql<Array<{ id: string }>>`select id from jobs where credit_request_id = ${requestId}`;
    return finish((row as { id: string }).id);
  }
});
