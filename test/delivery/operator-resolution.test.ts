import { setTimeout as sleep } from 'node:timers/promises';
import { SIMULATOR_NUMBERS } from '@cs/delivery';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isolatedDatabase, testSql } from '../support/db.ts';
import { balanceOf, createSeller, fundSeller, type TestSeller, waitForJob } from '../support/factories.ts';
import { until } from '../support/faults.ts';
import { Client } from '../support/http.ts';
import {
  createOperator,
  deliveryIdsWithStatus,
  deliveryOf,
  jobOf,
  type TestOperator,
  TestProvider,
} from '../support/provider.ts';
import { ADMIN_TOKEN, System } from '../support/system.ts';

/**
 * A sale the provider never knows about (09990000005) waits for an operator once
 * DELIVERY_GIVE_UP_AFTER has passed: listed as unresolved, decided by an approver (refund: the
 * partition writes the refund; delivered: the sale succeeds), audited with who decided, decided
 * once only, and never before the give-up. The provider is still asked afterwards, and a late
 * "delivered" that contradicts a refund is kept as a conflict, never dropped.
 */

const FUNDING = 500_000n;
const GIVE_UP_MS = 1500;

describe('deliveries that wait for an operator', () => {
  let database: Awaited<ReturnType<typeof isolatedDatabase>>;
  let sql: ReturnType<typeof testSql>;
  let provider: TestProvider;
  let system: System;
  let client: Client;
  let seller: TestSeller;
  let viewer: TestOperator;
  let approver: TestOperator;
  /** Two sales to 09990000005: one to be refunded, one to be declared delivered. */
  let toRefund: string;
  let toDeliver: string;

  beforeAll(async () => {
    // A database of its own: the lists by status must hold this file's deliveries only.
    database = await isolatedDatabase('delivery_resolution');
    sql = testSql(database.ownerUrl);
    provider = await TestProvider.start({ hangMs: 1000 });
    system = await System.start({
      workers: 1,
      databaseUrl: database.applicationUrl,
      env: provider.env({
        PROVIDER_TIMEOUT_MS: '400',
        DELIVERY_RETRY_FIRST_MS: '100',
        DELIVERY_RETRY_MAX_MS: '300',
        DELIVERY_POLL_MS: '100',
        DELIVERY_GIVE_UP_AFTER: String(GIVE_UP_MS),
      }),
    });
    client = new Client(system.baseUrl);
    [viewer, approver] = [await createOperator(client, 'viewer'), await createOperator(client, 'approver')];
    seller = await createSeller(client, 'Unresolved');
    await fundSeller(client, seller, FUNDING.toString());
  });
  afterAll(async () => {
    await system?.stop();
    await provider?.close();
    await sql?.end({ timeout: 1 });
    await database?.drop();
  });

  const resolve = (jobId: string, outcome: string, token = approver.token) =>
    client.post(`/api/deliveries/${jobId}/resolve`, { token, body: { outcome } });

  async function sellNeverKnows(amount: bigint): Promise<string> {
    const res = await client.post('/api/charge-sales', {
      token: seller.apiKey,
      body: { seller_id: seller.id, phone_number: SIMULATOR_NUMBERS.neverKnows, amount: amount.toString() },
    });
    expect(res.status).toBe(202);
    const jobId = res.body.job_id as string;
    await until('the sale debited', async () => (await jobOf(client, jobId)).status === 'delivering', 10_000, 20);
    return jobId;
  }

  async function auditOf(jobId: string) {
    const res = await client.get(`/api/audit?action=delivery.resolved&target_id=${jobId}`, { token: ADMIN_TOKEN });
    expect(res.status).toBe(200);
    return res.body.items as any[];
  }

  const ledger = () =>
    sql<{ id: bigint; type: string; amount: bigint; balance_after: bigint; job_id: string; refund_of: bigint }[]>`
      select id, type, amount, balance_after, job_id, refund_of from transactions
      where seller_id = ${seller.id} order by id`;

  it('refuses to resolve a delivery the provider is still being asked about: 409 delivery_pending, nothing changes', async () => {
    // A sale of its own: should the refusal fail, the sales below still start from a clean state.
    const early = await sellNeverKnows(10_000n);
    const debitedAt = new Date((await deliveryOf(client, early)).debited_at).getTime();
    const answers = [];
    for (const outcome of ['refund', 'delivered']) answers.push(await resolve(early, outcome));
    // Still inside the give-up time, or the test proved nothing.
    expect(Date.now() - debitedAt).toBeLessThan(GIVE_UP_MS);
    for (const res of answers) {
      expect(res.status, JSON.stringify(res.body)).toBe(409);
      expect(res.body).toMatchObject({ code: 'delivery_pending' });
    }
    expect(await deliveryOf(client, early)).toMatchObject({ status: 'pending', resolution: null, resolved_by: null });
    expect((await jobOf(client, early)).status).toBe('delivering');
    expect(await auditOf(early)).toEqual([]);
    expect((await ledger()).filter((r) => r.job_id === early).map((r) => r.type)).toEqual(['charge_sale']);
  });

  it('lists it under ?status=unresolved after DELIVERY_GIVE_UP_AFTER, for operators only; the sale stays delivering', async () => {
    toRefund = await sellNeverKnows(60_000n);
    toDeliver = await sellNeverKnows(70_000n);
    for (const jobId of [toRefund, toDeliver]) {
      await until(
        'the delivery unresolved',
        async () => (await deliveryOf(client, jobId)).status === 'unresolved',
        GIVE_UP_MS + 5000,
      );
    }
    const unresolved = await deliveryOf(client, toRefund);
    expect(unresolved).toMatchObject({
      status: 'unresolved',
      phone_number: SIMULATOR_NUMBERS.neverKnows,
      amount: '60000',
      provider: 'http',
      resolution: null,
      gave_up_at: expect.any(String),
      // Still asked about.
      next_attempt_at: expect.any(String),
    });
    expect(
      new Date(unresolved.gave_up_at).getTime() - new Date(unresolved.debited_at).getTime(),
    ).toBeGreaterThanOrEqual(GIVE_UP_MS);
    // Newest first; the earlier sale above is listed as well once it too is given up on.
    const listed = await deliveryIdsWithStatus(client, 'unresolved');
    expect(listed.slice(0, 2)).toEqual([toDeliver, toRefund]);
    // A viewer reads the list too; the sale's own seller does not.
    expect(await deliveryIdsWithStatus(client, 'unresolved', viewer.token)).toEqual(listed);
    expect(await deliveryIdsWithStatus(client, 'pending')).not.toContain(toRefund);
    for (const path of ['/api/deliveries?status=unresolved', `/api/deliveries/${toRefund}`]) {
      const res = await client.get(path, { token: seller.apiKey });
      expect(res.status, path).toBe(403);
    }
    expect((await jobOf(client, toRefund)).status).toBe('delivering');
  });

  it('lets neither a viewer nor the seller resolve it: 403, and nothing changes', async () => {
    for (const token of [viewer.token, seller.apiKey]) {
      const res = await resolve(toRefund, 'refund', token);
      expect(res.status, JSON.stringify(res.body)).toBe(403);
    }
    expect(await deliveryOf(client, toRefund)).toMatchObject({ status: 'unresolved', resolution: null });
    expect(await auditOf(toRefund)).toEqual([]);
    expect((await ledger()).filter((r) => r.job_id === toRefund).map((r) => r.type)).toEqual(['charge_sale']);
  });

  it('an approver resolves it refund: the partition refunds the sale, the job is rejected delivery_failed, audited once', async () => {
    const balanceBefore = await balanceOf(client, seller.id);
    const res = await resolve(toRefund, 'refund');
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body).toMatchObject({ id: toRefund, resolution: 'refund', resolved_by: approver.email });
    expect(['refund_due', 'refunded']).toContain(res.body.status);

    const job = await waitForJob(client, toRefund, ADMIN_TOKEN, 10_000);
    expect(job).toMatchObject({
      status: 'rejected',
      error: {
        code: 'delivery_failed',
        provider: 'http',
        provider_reason: 'resolved_by_operator',
        refund_transaction_id: expect.stringMatching(/^\d+$/),
        attempts: expect.any(Number),
      },
    });
    const rows = await ledger();
    const sale = rows.find((r) => r.job_id === toRefund && r.type === 'charge_sale');
    const refunds = rows.filter((r) => r.type === 'charge_refund' && r.job_id === toRefund);
    expect(refunds).toHaveLength(1);
    expect(refunds[0]).toMatchObject({ job_id: toRefund, amount: 60_000n, refund_of: sale?.id });
    expect(refunds[0]?.id.toString()).toBe(job.error.refund_transaction_id);
    // The refund is the newest row, its balance_after following from the row before.
    expect(rows.at(-1)?.id).toBe(refunds[0]?.id);
    expect(refunds[0]?.balance_after).toBe((rows.at(-2)?.balance_after ?? 0n) + 60_000n);
    expect(await balanceOf(client, seller.id)).toBe(balanceBefore + 60_000n);
    expect(await deliveryOf(client, toRefund)).toMatchObject({
      status: 'refunded',
      resolution: 'refund',
      resolved_by: approver.email,
      resolved_at: expect.any(String),
      refund_transaction_id: job.error.refund_transaction_id,
    });

    const audit = await auditOf(toRefund);
    expect(audit).toEqual([
      expect.objectContaining({
        action: 'delivery.resolved',
        actor: expect.objectContaining({ type: 'operator', id: approver.id, email: approver.email }),
        target_type: 'delivery',
        target_id: toRefund,
        details: expect.objectContaining({ outcome: 'refund' }),
      }),
    ]);
  });

  it('a second resolution is 409 already_resolved, whatever its outcome, and changes nothing', async () => {
    for (const outcome of ['refund', 'delivered']) {
      const res = await resolve(toRefund, outcome);
      expect(res.status, JSON.stringify(res.body)).toBe(409);
      expect(res.body).toMatchObject({ code: 'already_resolved' });
    }
    // The bootstrap admin is refused the same.
    expect((await resolve(toRefund, 'refund', ADMIN_TOKEN)).status).toBe(409);
    expect(await auditOf(toRefund)).toHaveLength(1);
    expect((await ledger()).filter((r) => r.type === 'charge_refund' && r.job_id === toRefund)).toHaveLength(1);
    expect((await jobOf(client, toRefund)).status).toBe('rejected');
  });

  it('a late "delivered" from the provider after the refund is kept: the delivery becomes a conflict, nothing is undone', async () => {
    const before = await ledger();
    const settled = await provider.settle(toRefund, 'delivered');
    expect(settled.status, JSON.stringify(settled.body)).toBe(200);
    // The worker keeps asking after a resolution (every DELIVERY_RETRY_MAX_MS) and hears it.
    await until(
      'the refunded delivery in conflict',
      async () => (await deliveryOf(client, toRefund)).status === 'conflict',
      10_000,
    );
    const conflict = await deliveryOf(client, toRefund);
    expect(conflict).toMatchObject({
      status: 'conflict',
      resolution: 'refund',
      conflict_at: expect.any(String),
      provider_reference: expect.stringMatching(/^sim-/),
      // Asking has ended: the provider knows.
      next_attempt_at: null,
    });
    expect(await deliveryIdsWithStatus(client, 'conflict')).toEqual([toRefund]);
    expect(await deliveryIdsWithStatus(client, 'conflict', viewer.token)).toEqual([toRefund]);
    // Neither the refund nor the job is undone, nor anything written twice; a third resolution is refused.
    expect(await ledger()).toEqual(before);
    expect((await jobOf(client, toRefund)).status).toBe('rejected');
    expect((await resolve(toRefund, 'delivered')).status).toBe(409);
    expect((await provider.stats()).deliveriesByReference[toRefund]).toBe(1);
  });

  it('an approver resolves the other one delivered: the sale succeeds, the phone totals count it, audited', async () => {
    const balanceBefore = await balanceOf(client, seller.id);
    const res = await resolve(toDeliver, 'delivered');
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    expect(res.body).toMatchObject({
      id: toDeliver,
      status: 'delivered',
      resolution: 'delivered',
      resolved_by: approver.email,
    });
    const job = await jobOf(client, toDeliver);
    expect(job).toMatchObject({
      status: 'succeeded',
      error: null,
      result: {
        amount: '70000',
        delivery: { status: 'delivered', provider: 'http', delivered_at: expect.any(String) },
      },
    });
    expect((await ledger()).filter((r) => r.job_id === toDeliver).map((r) => r.type)).toEqual(['charge_sale']);
    expect(await balanceOf(client, seller.id)).toBe(balanceBefore);
    const phone = await client.get(`/api/phone-numbers/${SIMULATOR_NUMBERS.neverKnows}`, { token: ADMIN_TOKEN });
    expect(phone.body).toMatchObject({ total_charged: '70000', charge_count: 1 });
    expect(await auditOf(toDeliver)).toEqual([
      expect.objectContaining({
        actor: expect.objectContaining({ type: 'operator', id: approver.id }),
        target_id: toDeliver,
        details: expect.objectContaining({ outcome: 'delivered' }),
      }),
    ]);
    expect((await resolve(toDeliver, 'refund')).status).toBe(409);
    const unresolved = await deliveryIdsWithStatus(client, 'unresolved');
    expect(unresolved).not.toContain(toDeliver);
    expect(unresolved).not.toContain(toRefund);
    const reconciled = await client.get(`/api/sellers/${seller.id}/reconcile`, { token: ADMIN_TOKEN });
    expect(reconciled.body).toMatchObject({ is_reconciled: true, difference: '0' });
  });

  it('stops asking about a resolution the provider never confirmed, DELIVERY_WATCH_AFTER_RESOLUTION (7 d) after it', async () => {
    // The provider still says "pending" about the one declared delivered: asked every 300 ms here.
    const asked = (await deliveryOf(client, toDeliver)).attempts as number;
    await until('still asked', async () => (await deliveryOf(client, toDeliver)).attempts > asked, 5_000, 50);
    expect((await deliveryOf(client, toDeliver)).next_attempt_at).not.toBeNull();
    // Eight days on, as far as the delivery knows.
    await sql`update deliveries set resolved_at = resolved_at - interval '8 days' where job_id = ${toDeliver}`;
    await until('no longer asked', async () => (await deliveryOf(client, toDeliver)).next_attempt_at === null, 5_000);
    expect(await deliveryOf(client, toDeliver)).toMatchObject({
      status: 'delivered',
      resolution: 'delivered',
      last_error: expect.stringMatching(/never confirmed/),
    });
    const stopped = (await deliveryOf(client, toDeliver)).attempts as number;
    await sleep(1_000);
    expect((await deliveryOf(client, toDeliver)).attempts, 'nobody asks about it any more').toBe(stopped);
    expect((await jobOf(client, toDeliver)).status).toBe('succeeded');
  });

  it('a "delivered" resolution of a top-up the provider never received becomes a conflict once it says so', async () => {
    // The provider is down: the sale's sends are refused and recorded nowhere, until the give-up.
    await provider.outage(60_000);
    let lost = '';
    try {
      const res = await client.post('/api/charge-sales', {
        token: seller.apiKey,
        body: { seller_id: seller.id, phone_number: '09123456789', amount: '5000' },
      });
      expect(res.status).toBe(202);
      lost = res.body.job_id as string;
      await until('the sale debited', async () => (await jobOf(client, lost)).status === 'delivering', 10_000, 20);
      await until('given up on', async () => (await deliveryOf(client, lost)).status === 'unresolved', 20_000, 100);
      const resolved = await resolve(lost, 'delivered');
      expect(resolved.status, JSON.stringify(resolved.body)).toBe(200);
      expect((await jobOf(client, lost)).status).toBe('succeeded');
    } finally {
      await provider.outage(0);
    }
    // Back, the provider answers the next question: never received. The operator was wrong.
    await until('in conflict', async () => (await deliveryOf(client, lost)).status === 'conflict', 10_000, 100);
    expect(await deliveryOf(client, lost)).toMatchObject({
      resolution: 'delivered',
      conflict_at: expect.any(String),
      next_attempt_at: null,
    });
    expect(await deliveryIdsWithStatus(client, 'conflict')).toContain(lost);
    expect((await provider.stats()).deliveriesByReference[lost]).toBeUndefined();
  });

  it('a resolution for a delivery that does not exist is 404; a malformed outcome is 400', async () => {
    expect((await resolve('01a00000-0000-7000-8000-000000000000', 'refund')).status).toBe(404);
    expect((await resolve(toDeliver, 'maybe')).status).toBe(400);
  });
});
