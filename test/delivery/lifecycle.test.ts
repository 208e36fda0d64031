import { randomInt } from 'node:crypto';
import { SIMULATOR_NUMBERS } from '@cs/delivery';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isolatedDatabase, testSql } from '../support/db.ts';
import { balanceOf, createSeller, fundSeller, type TestSeller, waitForJob } from '../support/factories.ts';
import { until } from '../support/faults.ts';
import { Client } from '../support/http.ts';
import { deliveryOf, jobOf, readJobEvents, TestProvider } from '../support/provider.ts';
import { runReconcile } from '../support/reconcile.ts';
import { ADMIN_TOKEN, System } from '../support/system.ts';

/**
 * A sale's top-up from the debit to its end, over `PROVIDER=http` against the simulator served
 * from this test: every line of API.md's phone-number table, as the seller sees it (the job, its
 * Prefer: wait answer and its event stream), as the ledger records it (the sale's debit, the
 * refund that gives it back whole, the balance_after chain), and as the provider counts it (no
 * reference delivered twice). A database of its own: the phone totals and `npm run reconcile`
 * cover everything in it.
 */

const FUNDING = 1_000_000n;
/** Short enough that the "times out" numbers (held for HANG_MS) are unclear within the test. */
const PROVIDER_TIMEOUT_MS = 400;
const HANG_MS = 1500;

describe("a sale's top-up delivered by an HTTP provider", () => {
  let database: Awaited<ReturnType<typeof isolatedDatabase>>;
  let sql: ReturnType<typeof testSql>;
  let provider: TestProvider;
  let system: System;
  let client: Client;
  /** Every sale this file made, by job id, and how it must end. */
  const sales = new Map<string, { seller: TestSeller; phone: string; amount: bigint; delivered: boolean | null }>();

  beforeAll(async () => {
    database = await isolatedDatabase('delivery_lifecycle');
    sql = testSql(database.ownerUrl);
    provider = await TestProvider.start({ hangMs: HANG_MS });
    system = await System.start({
      workers: 1,
      databaseUrl: database.applicationUrl,
      env: provider.env({
        PROVIDER_TIMEOUT_MS: String(PROVIDER_TIMEOUT_MS),
        DELIVERY_RETRY_FIRST_MS: '100',
        DELIVERY_RETRY_MAX_MS: '500',
        DELIVERY_POLL_MS: '100',
      }),
    });
    client = new Client(system.baseUrl);
  });
  afterAll(async () => {
    await system?.stop();
    await provider?.close();
    await sql?.end({ timeout: 1 });
    await database?.drop();
  });

  async function fundedSeller(name: string): Promise<TestSeller> {
    const seller = await createSeller(client, name);
    await fundSeller(client, seller, FUNDING.toString());
    return seller;
  }

  /** A sale by the seller itself; `delivered`: true, false (refunded) or null (left delivering). */
  async function sell(
    seller: TestSeller,
    phone: string,
    amount: bigint,
    delivered: boolean | null,
    headers: Record<string, string> = {},
  ) {
    const res = await client.post('/api/charge-sales', {
      token: seller.apiKey,
      headers,
      body: { seller_id: seller.id, phone_number: phone, amount: amount.toString() },
    });
    expect([200, 202], JSON.stringify(res.body)).toContain(res.status);
    sales.set(res.body.job_id, { seller, phone, amount, delivered });
    return res;
  }

  async function ledgerOf(sellerId: string) {
    return sql<
      { id: bigint; type: string; amount: bigint; balance_after: bigint; job_id: string; refund_of: bigint }[]
    >`
      select id, type, amount, balance_after, job_id, refund_of from transactions
      where seller_id = ${sellerId} order by id`;
  }

  async function phoneTotals(number: string) {
    return client.get(`/api/phone-numbers/${number}`, { token: ADMIN_TOKEN });
  }

  /**
   * A refunded sale, as the contract says: the job rejected with delivery_failed naming the refund
   * row; the ledger's funding, the sale's debit and a refund of the same amount that names it, each
   * balance_after following from the row before; the balance whole again; the delivery refunded;
   * the phone's totals untouched; the provider never delivered it.
   */
  async function expectRefunded(seller: TestSeller, jobId: string, amount: bigint, reason: string) {
    const job = await jobOf(client, jobId);
    expect(job).toMatchObject({
      status: 'rejected',
      result: null,
      error: {
        code: 'delivery_failed',
        provider: 'http',
        provider_reason: reason,
        refund_transaction_id: expect.stringMatching(/^\d+$/),
        attempts: expect.any(Number),
      },
    });
    expect(job.finished_at).not.toBeNull();
    const ledger = await ledgerOf(seller.id);
    expect(ledger.map((r) => [r.type, r.amount, r.balance_after])).toEqual([
      ['credit_increase', FUNDING, FUNDING],
      ['charge_sale', -amount, FUNDING - amount],
      ['charge_refund', amount, FUNDING],
    ]);
    const [, sale, refund] = ledger;
    expect(sale?.job_id).toBe(jobId);
    expect(refund?.job_id).toBe(jobId);
    expect(refund?.refund_of).toBe(sale?.id);
    expect(refund?.id.toString()).toBe(job.error.refund_transaction_id);
    expect(await balanceOf(client, seller.id)).toBe(FUNDING);
    // The API's ledger agrees: the refund on top, amount positive.
    const api = await client.get(`/api/transactions?seller_id=${seller.id}&type=charge_refund`, {
      token: seller.apiKey,
    });
    expect(api.body.items).toEqual([
      expect.objectContaining({ id: job.error.refund_transaction_id, amount: amount.toString() }),
    ]);
    const delivery = await deliveryOf(client, jobId);
    expect(delivery).toMatchObject({
      status: 'refunded',
      provider: 'http',
      provider_reason: reason,
      refund_transaction_id: job.error.refund_transaction_id,
      attempts: job.error.attempts,
      delivered_at: null,
      next_attempt_at: null,
    });
    expect((await provider.stats()).deliveriesByReference[jobId]).toBeUndefined();
    return job;
  }

  /** A delivered sale: the job succeeded with its delivery, one debit and no refund, the provider's reference. */
  async function expectDelivered(seller: TestSeller, jobId: string, amount: bigint) {
    const job = await jobOf(client, jobId);
    expect(job).toMatchObject({
      status: 'succeeded',
      error: null,
      result: {
        seller_id: seller.id,
        amount: amount.toString(),
        new_balance: (FUNDING - amount).toString(),
        delivery: {
          status: 'delivered',
          provider: 'http',
          provider_reference: expect.stringMatching(/^sim-/),
          delivered_at: expect.any(String),
          attempts: expect.any(Number),
        },
      },
    });
    // The reference is the provider's own for this sale.
    const told = await provider.topUp(jobId);
    expect(told.body).toMatchObject({
      status: 'delivered',
      provider_reference: job.result.delivery.provider_reference,
    });
    expect((await provider.stats()).deliveriesByReference[jobId]).toBe(1);
    const ledger = await ledgerOf(seller.id);
    expect(ledger.map((r) => [r.type, r.amount, r.balance_after])).toEqual([
      ['credit_increase', FUNDING, FUNDING],
      ['charge_sale', -amount, FUNDING - amount],
    ]);
    expect(await balanceOf(client, seller.id)).toBe(FUNDING - amount);
    expect(await deliveryOf(client, jobId)).toMatchObject({
      status: 'delivered',
      provider_reference: job.result.delivery.provider_reference,
      refund_transaction_id: null,
      next_attempt_at: null,
    });
    return job;
  }

  it('09990000001 is declined at once: the sale is refunded whole, and the phone totals never count it', async () => {
    const seller = await fundedSeller('Declined');
    const res = await sell(seller, SIMULATOR_NUMBERS.declines, 25_000n, false, { prefer: 'wait=10' });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ status: 'rejected', error: { code: 'delivery_failed' } });
    const job = await expectRefunded(seller, res.body.job_id, 25_000n, 'number_not_supported');
    expect(job.error.attempts).toBe(1);
    expect((await phoneTotals(SIMULATOR_NUMBERS.declines)).status).toBe(404);
  });

  it('09990000002 times out and its status then says delivered: succeeded, asked twice at least, no refund', async () => {
    const seller = await fundedSeller('Times out, delivered');
    const res = await sell(seller, SIMULATOR_NUMBERS.timesOutThenDelivered, 30_000n, true, { prefer: 'wait=10' });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    const job = await expectDelivered(seller, res.body.job_id, 30_000n);
    // The send (timed out) and at least one status question.
    expect(job.result.delivery.attempts).toBeGreaterThanOrEqual(2);
    expect(new Date(job.result.delivery.delivered_at).getTime()).toBeGreaterThanOrEqual(
      new Date(job.submitted_at).getTime() + PROVIDER_TIMEOUT_MS,
    );
    const phone = await phoneTotals(SIMULATOR_NUMBERS.timesOutThenDelivered);
    expect(phone.body).toMatchObject({ total_charged: '30000', charge_count: 1 });
  });

  it('09990000003 times out and its status then says failed: refunded, never taken as failed on the timeout alone', async () => {
    const seller = await fundedSeller('Times out, failed');
    const res = await sell(seller, SIMULATOR_NUMBERS.timesOutThenFailed, 40_000n, false, { prefer: 'wait=10' });
    expect(res.status).toBe(200);
    const job = await expectRefunded(seller, res.body.job_id, 40_000n, 'operator_declined');
    expect(job.error.attempts).toBeGreaterThanOrEqual(2);
    expect((await phoneTotals(SIMULATOR_NUMBERS.timesOutThenFailed)).status).toBe(404);
  });

  it('09990000004 is delivered after 2 s; its event stream shows delivering, then succeeded', async () => {
    const seller = await fundedSeller('Delivers later');
    const submitted = Date.now();
    const res = await sell(seller, SIMULATOR_NUMBERS.deliversLater, 45_000n, true);
    expect(res.status).toBe(202);
    const events = await readJobEvents(system.baseUrl, res.body.job_id, seller.apiKey);
    const tookMs = Date.now() - submitted;
    const statuses = events.map((e) => e.data.status);
    expect(statuses).toContain('delivering');
    expect(statuses.at(-1)).toBe('succeeded');
    expect(statuses.indexOf('delivering')).toBe(statuses.length - 2);
    expect(new Set(statuses).size).toBe(statuses.length);
    // While delivering the sale is debited already: the result has its transaction and new balance.
    const delivering = events.find((e) => e.data.status === 'delivering')?.data;
    expect(delivering).toMatchObject({ result: { new_balance: (FUNDING - 45_000n).toString() }, finished_at: null });
    expect(events.at(-1)?.data.result.delivery).toMatchObject({ status: 'delivered', provider: 'http' });
    expect(tookMs).toBeGreaterThanOrEqual(2000);
    expect(tookMs).toBeLessThan(6000);
    const job = await expectDelivered(seller, res.body.job_id, 45_000n);
    expect(job.result.delivery.attempts).toBeGreaterThanOrEqual(2);
  });

  it('any other number is delivered at once; the phone totals count delivered top-ups only', async () => {
    const seller = await fundedSeller('Ordinary');
    const phone = `0912${String(randomInt(10_000_000)).padStart(7, '0')}`;
    const started = Date.now();
    const res = await sell(seller, phone, 5_000n, true, { prefer: 'wait=10' });
    expect(res.status).toBe(200);
    expect(Date.now() - started).toBeLessThan(2000);
    const job = await expectDelivered(seller, res.body.job_id, 5_000n);
    expect(job.result.delivery.attempts).toBe(1);
    expect(job.result.phone_number).toBe(phone);
    // Delivered at the first answer: no delivery row was written, the job records it, and the
    // delivery reads the same from there.
    expect(await sql`select 1 from deliveries where job_id = ${job.job_id}`).toHaveLength(0);
    const delivery = await client.get(`/api/deliveries/${job.job_id}`, { token: ADMIN_TOKEN });
    expect(delivery.body).toMatchObject({
      id: job.job_id,
      seller_id: seller.id,
      phone_number: phone,
      amount: '5000',
      provider: 'http',
      status: 'delivered',
      attempts: 1,
      provider_reference: job.result.delivery.provider_reference,
      delivered_at: new Date(job.result.delivery.delivered_at).toISOString(),
      next_attempt_at: null,
    });
    // A second seller's sale to the same number, and a refused one (more than its balance) beside them.
    const other = await fundedSeller('Ordinary too');
    const second = await sell(other, phone, 7_000n, true, { prefer: 'wait=10' });
    expect(second.body.status).toBe('succeeded');
    const tooMuch = await client.post('/api/charge-sales', {
      token: other.apiKey,
      headers: { prefer: 'wait=10' },
      body: { seller_id: other.id, phone_number: phone, amount: (FUNDING * 2n).toString() },
    });
    expect(tooMuch.body).toMatchObject({ status: 'rejected', error: { code: 'insufficient_balance' } });
    expect((await phoneTotals(phone)).body).toMatchObject({ number: phone, total_charged: '12000', charge_count: 2 });
  });

  it("a row written beside its sale's settlement (a sweep that read the job first) ends as the job says, unasked", async () => {
    const seller = await fundedSeller('Swept beside');
    const phone = `0912${String(randomInt(10_000_000)).padStart(7, '0')}`;
    const res = await sell(seller, phone, 4_000n, true, { prefer: 'wait=10' });
    const job = await expectDelivered(seller, res.body.job_id, 4_000n);
    const before = await provider.stats();
    // What such a sweep leaves: a pending row, due at once, beside a job already succeeded.
    await sql`
      insert into deliveries (job_id, seller_id, partition, sale_transaction_id, phone_number, amount, provider, debited_at)
      select j.id, j.seller_id, j.partition, t.id, j.phone_number, j.amount, 'http', j.applied_at
      from jobs j join transactions t on t.job_id = j.id and t.type = 'charge_sale' where j.id = ${job.job_id}`;
    await until(
      'the row ended as its job says',
      async () => (await sql`select status from deliveries where job_id = ${job.job_id}`)[0]?.status === 'delivered',
      10_000,
    );
    const [row] = await sql`
      select watching, provider_reference, attempts, delivered_at from deliveries where job_id = ${job.job_id}`;
    expect(row).toMatchObject({
      watching: false,
      provider_reference: job.result.delivery.provider_reference,
      attempts: 1,
    });
    expect(row?.delivered_at.toISOString()).toBe(new Date(job.result.delivery.delivered_at).toISOString());
    // Nobody asked the provider about it, and the sale and its phone's totals moved once.
    const after = await provider.stats();
    expect([after.sends, after.statusQueries]).toEqual([before.sends, before.statusQueries]);
    expect(await jobOf(client, job.job_id)).toMatchObject({ status: 'succeeded', result: job.result });
    expect((await phoneTotals(phone)).body).toMatchObject({ total_charged: '4000', charge_count: 1 });
  });

  it('09990000005 never knows: a waiting client gets 202 delivering, and the sale stays debited and delivering', async () => {
    const seller = await fundedSeller('Never knows');
    const res = await sell(seller, SIMULATOR_NUMBERS.neverKnows, 50_000n, null, { prefer: 'wait=2' });
    expect(res.status).toBe(202);
    expect(res.body).toMatchObject({ status: 'delivering', status_url: `/api/jobs/${res.body.job_id}` });
    const jobId = res.body.job_id as string;
    // Asked again and again, never given up on (DELIVERY_GIVE_UP_AFTER is a day), never refunded.
    await until('the provider asked about 09990000005 several times', async () => {
      return (await deliveryOf(client, jobId)).attempts >= 4;
    });
    const job = await jobOf(client, jobId);
    expect(job).toMatchObject({ status: 'delivering', finished_at: null, error: null });
    expect(job.result).toMatchObject({ amount: '50000', new_balance: (FUNDING - 50_000n).toString() });
    expect(job.result.delivery).toBeUndefined();
    expect(await deliveryOf(client, jobId)).toMatchObject({
      status: 'pending',
      provider: 'http',
      resolution: null,
      gave_up_at: null,
      refund_transaction_id: null,
      next_attempt_at: expect.any(String),
    });
    const ledger = await ledgerOf(seller.id);
    expect(ledger.map((r) => r.type)).toEqual(['credit_increase', 'charge_sale']);
    expect(await balanceOf(client, seller.id)).toBe(FUNDING - 50_000n);
    expect((await phoneTotals(SIMULATOR_NUMBERS.neverKnows)).status).toBe(404);
    expect((await provider.stats()).deliveriesByReference[jobId]).toBeUndefined();
    // The seller's own view agrees, and a plain poll says the same.
    expect((await client.get(`/api/jobs/${jobId}`, { token: seller.apiKey })).body.status).toBe('delivering');
  });

  it('a waiting client of an ordinary sale gets 200 succeeded; its event stream ends at once on the final state', async () => {
    const seller = await fundedSeller('Waiter');
    const res = await sell(seller, '09351234567', 3_000n, true, { prefer: 'wait=10' });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ status: 'succeeded', result: { delivery: { status: 'delivered' } } });
    const events = await readJobEvents(system.baseUrl, res.body.job_id, seller.apiKey);
    expect(events.map((e) => e.data.status)).toEqual(['succeeded']);
  });

  it('every sale ended as its number says, none delivered twice, and every seller reconciles (API and npm run reconcile)', async () => {
    // Every final sale is final for good; 09990000005 alone is still on its way.
    for (const [jobId, sale] of sales) {
      const job = await waitForJob(client, jobId, ADMIN_TOKEN, sale.delivered === null ? 1 : 30_000).catch(() => null);
      if (sale.delivered === null) expect(job).toBeNull();
      else expect(job?.status, jobId).toBe(sale.delivered ? 'succeeded' : 'rejected');
    }
    const stats = await provider.stats();
    expect(Object.values(stats.deliveriesByReference).every((n) => n === 1)).toBe(true);
    const deliveredIds = [...sales].filter(([, s]) => s.delivered === true).map(([id]) => id);
    expect(Object.keys(stats.deliveriesByReference).sort()).toEqual(deliveredIds.sort());

    const sellers = new Map([...sales.values()].map((s) => [s.seller.id, s.seller]));
    for (const seller of sellers.values()) {
      const res = await client.get(`/api/sellers/${seller.id}/reconcile`, { token: seller.apiKey });
      expect(res.body, seller.id).toMatchObject({ is_reconciled: true, difference: '0', chain_broken_at: null });
    }
    // Where a sale has no delivery row (delivered at the first answer), its job says where it stands.
    const counts = await sql<{ status: string; n: number }[]>`
      select coalesce(d.status, case when j.status = 'delivering' then 'pending'
                                     when j.result ? 'delivery' then 'delivered' end) as status, count(*)::int as n
      from transactions t join jobs j on j.id = t.job_id left join deliveries d on d.job_id = j.id
      where t.type = 'charge_sale' group by 1 order by 1`;
    const refunded = [...sales.values()].filter((s) => s.delivered === false).length;
    expect(counts).toEqual(
      [
        { status: 'delivered', n: deliveredIds.length },
        { status: 'pending', n: 1 },
        { status: 'refunded', n: refunded },
      ].sort((a, b) => a.status.localeCompare(b.status)),
    );

    const run = await runReconcile(system.env);
    expect(run.stdout, run.stderr).toContain('all sellers reconcile');
    expect(run.stdout).toContain(
      `deliveries: ${sales.size} sales: ${deliveredIds.length} delivered, ${refunded} refunded, 1 on their way ` +
        '(0 waiting for an operator), 0 in conflict',
    );
    expect(run.stdout).not.toContain('FAULT');
    expect(run.status).toBe(0);
  });
});
