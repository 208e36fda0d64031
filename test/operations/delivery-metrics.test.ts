import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isolatedDatabase, testSql } from '../support/db.ts';
import { createSeller, fundSeller, type TestSeller, waitForJob } from '../support/factories.ts';
import { Client } from '../support/http.ts';
import { ADMIN_TOKEN, System } from '../support/system.ts';

/**
 * The delivery and webhook metrics of `GET /metrics`, against real processes and the in-process
 * simulator: outcomes and latencies from the workers' job events, and the unresolved, conflict
 * and webhook gauges counted from PostgreSQL at scrape.
 */

/** One scrape: every sample, by name and its labels in a fixed order. */
type Samples = Map<string, number>;

function parse(text: string): Samples {
  const samples: Samples = new Map();
  for (const line of text.split('\n')) {
    const match = /^([a-zA-Z_:][\w:]*)(?:\{([^}]*)\})? (\S+)$/.exec(line);
    if (!match) continue;
    const labels = [...(match[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map(([, k, v]) => `${k}=${v}`).sort();
    samples.set(`${match[1]}{${labels.join(',')}}`, Number(match[3]));
  }
  return samples;
}

/** A sample's value; absent (never counted) is 0. */
function value(samples: Samples, name: string, labels: Record<string, string> = {}): number {
  const key = Object.entries(labels)
    .map(([k, v]) => `${k}=${v}`)
    .sort()
    .join(',');
  return samples.get(`${name}{${key}}`) ?? 0;
}

describe('delivery and webhook metrics', () => {
  let system: System;
  let client: Client;
  let database: Awaited<ReturnType<typeof isolatedDatabase>>;
  let sql: ReturnType<typeof testSql>;
  let seller: TestSeller;

  const scrape = async (): Promise<Samples> => {
    const res = await fetch(`${system.baseUrl}/metrics`);
    expect(res.status).toBe(200);
    return parse(await res.text());
  };

  /** Scrapes until `check` holds (job events reach the API a moment after the jobs' rows change). */
  async function scrapeUntil(what: string, check: (samples: Samples) => boolean, timeoutMs = 20_000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const samples = await scrape();
      if (check(samples)) return samples;
      if (Date.now() > deadline) {
        const delivery = [...samples].filter(([k]) => /^(deliver|webhook)/.test(k));
        throw new Error(`${what}: not seen in /metrics within ${timeoutMs} ms: ${JSON.stringify(delivery)}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  async function sell(phone: string, amount: number): Promise<string> {
    const res = await client.post('/api/charge-sales', {
      token: seller.apiKey,
      body: { seller_id: seller.id, phone_number: phone, amount },
    });
    expect(res.status, JSON.stringify(res.body)).toBe(202);
    return res.body.job_id;
  }

  async function deliveryOf(jobId: string, status: string, timeoutMs = 30_000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const res = await client.get(`/api/deliveries/${jobId}`, { token: ADMIN_TOKEN });
      if (res.body?.status === status) return res.body;
      if (Date.now() > deadline) throw new Error(`delivery ${jobId} not ${status}: ${JSON.stringify(res.body)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  beforeAll(async () => {
    // A database of its own: the gauges count every delivery and webhook delivery there is.
    database = await isolatedDatabase('delivery_metrics');
    sql = testSql(database.ownerUrl);
    system = await System.start({
      workers: 1,
      databaseUrl: database.applicationUrl,
      env: {
        // Past a second without a definite answer a sale is unresolved. A "times out" number's
        // send gives up after 1.5 s (so past the second), and the provider is asked again 3 s
        // later: time enough for an operator to decide first.
        DELIVERY_GIVE_UP_AFTER: '1000',
        PROVIDER_TIMEOUT_MS: '1500',
        DELIVERY_RETRY_FIRST_MS: '3000',
        WEBHOOK_ALLOW_PRIVATE: '1',
      },
    });
    client = new Client(system.baseUrl);
    seller = await createSeller(client, 'Metered');
  });
  afterAll(async () => {
    await system?.stop();
    await sql?.end();
    await database?.drop();
  });

  it('counts delivered sales by provider, with their debit → delivered latency', async () => {
    const before = await scrape();
    expect(value(before, 'deliveries_unresolved')).toBe(0);
    expect(value(before, 'deliveries_in_conflict')).toBe(0);
    await fundSeller(client, seller, 100_000);
    const jobs = await Promise.all([1, 2, 3].map((i) => sell(`0912000000${i}`, 1_000)));
    for (const jobId of jobs) expect((await waitForJob(client, jobId)).status).toBe('succeeded');
    const provider = (await deliveryOf(jobs[0] ?? '', 'delivered')).provider;
    expect(provider).toBe('simulator');

    const delivered = { provider, outcome: 'delivered' };
    const samples = await scrapeUntil('3 delivered', (s) => value(s, 'delivery_outcomes_total', delivered) >= 3);
    expect(value(samples, 'delivery_outcomes_total', delivered)).toBe(3);
    expect(value(samples, 'delivery_latency_seconds_count', delivered)).toBe(3);
    const seconds = value(samples, 'delivery_latency_seconds_sum', delivered);
    expect(seconds).toBeGreaterThan(0);
    expect(seconds).toBeLessThan(30);
    expect(value(samples, 'delivery_latency_seconds_bucket', { ...delivered, le: '+Inf' })).toBe(3);
    // A sale's job is still counted as a finished job, once.
    expect(value(samples, 'jobs_finished_total', { type: 'charge_sale', outcome: 'succeeded' })).toBe(3);
  });

  it('counts a refused top-up, and gauges the unresolved and conflicting ones from PostgreSQL', async () => {
    const declined = await sell('09990000001', 2_000);
    expect((await waitForJob(client, declined)).error?.code).toBe('delivery_failed');
    const stuck = await sell('09990000005', 3_000);
    await deliveryOf(stuck, 'unresolved');
    const lateDelivered = await sell('09990000002', 4_000);
    await deliveryOf(lateDelivered, 'unresolved');

    const simulator = { provider: 'simulator' };
    let samples = await scrapeUntil(
      'a refund due and two unresolved',
      (s) =>
        value(s, 'delivery_outcomes_total', { ...simulator, outcome: 'unresolved' }) >= 2 &&
        value(s, 'delivery_outcomes_total', { ...simulator, outcome: 'refund_due' }) >= 1,
    );
    expect(value(samples, 'delivery_outcomes_total', { ...simulator, outcome: 'refund_due' })).toBe(1);
    expect(value(samples, 'delivery_outcomes_total', { ...simulator, outcome: 'unresolved' })).toBe(2);
    expect(value(samples, 'delivery_latency_seconds_count', { ...simulator, outcome: 'unresolved' })).toBe(2);
    // Unresolved only past DELIVERY_GIVE_UP_AFTER: at least a second after the debit.
    expect(value(samples, 'delivery_latency_seconds_sum', { ...simulator, outcome: 'unresolved' })).toBeGreaterThan(2);
    expect(value(samples, 'deliveries_unresolved')).toBe(2);
    expect(value(samples, 'deliveries_in_conflict')).toBe(0);

    // The operator refunds the one the provider did deliver: its late answer contradicts the decision.
    const resolved = await client.post(`/api/deliveries/${lateDelivered}/resolve`, {
      token: ADMIN_TOKEN,
      body: { outcome: 'refund' },
    });
    expect(resolved.status, JSON.stringify(resolved.body)).toBe(200);
    await deliveryOf(lateDelivered, 'conflict');
    samples = await scrapeUntil('a conflict', (s) => value(s, 'deliveries_in_conflict') === 1);
    expect(value(samples, 'deliveries_unresolved')).toBe(1);
    expect(value(samples, 'delivery_outcomes_total', { ...simulator, outcome: 'conflict' })).toBe(1);

    // Gauges follow the record, not the events: the last unresolved one decided, it is 0.
    const refund = await client.post(`/api/deliveries/${stuck}/resolve`, {
      token: ADMIN_TOKEN,
      body: { outcome: 'refund' },
    });
    expect(refund.status).toBe(200);
    samples = await scrape();
    expect(value(samples, 'deliveries_unresolved')).toBe(0);
    const [counts] = await sql`
      select count(*) filter (where status = 'unresolved')::int as unresolved,
             count(*) filter (where status = 'conflict')::int as conflict
      from deliveries`;
    expect(counts).toEqual({ unresolved: 0, conflict: 1 });
  });

  it('gauges webhook deliveries by status over the recent ones only', async () => {
    const hooked = await createSeller(client, 'Hooked');
    const set = await client.request('PUT', `/api/sellers/${hooked.id}/webhook`, {
      token: hooked.apiKey,
      body: { url: `http://127.0.0.1:9/hooks/${randomUUID()}` },
    });
    expect(set.status, JSON.stringify(set.body)).toBe(200);
    // The outbox writes one for the approval, with the credit itself.
    await fundSeller(client, hooked, 1_000);
    // Two the sender gave up on, as it leaves them; their ids, like the outbox's, start with the
    // milliseconds of their creation. One is three days old: outside the window, never counted.
    const idAt = (ms: number) =>
      `msg_${ms.toString(16).padStart(12, '0')}${randomUUID().replaceAll('-', '').slice(12)}`;
    const old = new Date(Date.now() - 3 * 86_400_000);
    for (const [id, at] of [
      [idAt(Date.now()), new Date()],
      [idAt(old.getTime()), old],
    ] as const) {
      await sql`
        insert into webhook_deliveries (id, seller_id, event_type, payload, status, attempts, last_status_code, created_at)
        values (${id}, ${hooked.id}, 'credit_request.approved', ${sql.json({ id })}, 'failed', 9, 503, ${at})`;
    }

    const samples = await scrape();
    const [recent] = await sql`
      select count(*)::int as all, count(*) filter (where status = 'failed')::int as failed from webhook_deliveries
      where created_at > now() - interval '48 hours'`;
    expect(recent?.all).toBeGreaterThanOrEqual(2);
    const gauged = ['pending', 'delivered', 'failed'].map((status) => value(samples, 'webhook_deliveries', { status }));
    expect(gauged.reduce((a, b) => a + b, 0)).toBe(recent?.all);
    expect(value(samples, 'webhook_deliveries', { status: 'failed' })).toBe(1);
    expect(recent?.failed).toBe(1);
    // Every status is a sample, zero or not, so an alert on it never sees "no data".
    expect(samples.has('webhook_deliveries{status=delivered}')).toBe(true);
  });
});
