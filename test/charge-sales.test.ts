import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { balanceOf, createSeller, fundSeller, waitForJob } from './support/factories.ts';
import { Client } from './support/http.ts';
import { ADMIN_TOKEN, System } from './support/system.ts';

describe('charge sales', () => {
  let system: System;
  let client: Client;

  beforeAll(async () => {
    system = await System.start({ workers: 1 });
    client = new Client(system.baseUrl);
  });
  afterAll(() => system?.stop());

  const sell = (seller: { id: string; apiKey: string }, amount: unknown, headers: Record<string, string> = {}) =>
    client.post('/api/charge-sales', {
      token: seller.apiKey,
      headers,
      body: { seller_id: seller.id, phone_number: '+989121234567', amount },
    });

  it('sells from the balance: 202, then the job succeeds with the new balance and one ledger row', async () => {
    const seller = await createSeller(client);
    await fundSeller(client, seller, 50_000);
    const res = await sell(seller, '20000');
    expect(res.status).toBe(202);
    expect(res.body).toMatchObject({ status: 'queued', status_url: `/api/jobs/${res.body.job_id}` });
    const job = await waitForJob(client, res.body.job_id, seller.apiKey);
    expect(job).toMatchObject({
      type: 'charge_sale',
      seller_id: seller.id,
      status: 'succeeded',
      result: { seller_id: seller.id, phone_number: '09121234567', amount: '20000', new_balance: '30000' },
      error: null,
    });
    expect(await balanceOf(client, seller.id)).toBe(30_000n);
    const ledger = await client.get(`/api/sellers/${seller.id}/transactions`, { token: seller.apiKey });
    expect(ledger.body.items[0]).toMatchObject({
      id: job.result.transaction_id,
      type: 'charge_sale',
      amount: '-20000',
      balance_after: '30000',
      phone_number: '09121234567',
    });
    const phone = await client.get('/api/phone-numbers/09121234567', { token: ADMIN_TOKEN });
    expect(phone.status).toBe(200);
    expect(BigInt(phone.body.total_charged)).toBeGreaterThanOrEqual(20_000n);
  });

  it('rejects a sale larger than the balance with the shortage, and changes nothing', async () => {
    const seller = await createSeller(client);
    await fundSeller(client, seller, 10_000);
    const res = await sell(seller, 15_000);
    const job = await waitForJob(client, res.body.job_id);
    expect(job.status).toBe('rejected');
    expect(job.error).toEqual({
      error: 'Insufficient balance',
      code: 'insufficient_balance',
      available_balance: '10000',
      required_amount: '15000',
      shortage: '5000',
    });
    expect(await balanceOf(client, seller.id)).toBe(10_000n);
    const ledger = await client.get(`/api/sellers/${seller.id}/transactions`, { token: ADMIN_TOKEN });
    expect(ledger.body.items).toHaveLength(1);
  });

  it('answers with the finished job at once when the client asks to wait', async () => {
    const seller = await createSeller(client);
    await fundSeller(client, seller, 10_000);
    const res = await sell(seller, 4000, { prefer: 'wait=10' });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ status: 'succeeded', result: { new_balance: '6000' } });
  });

  it('refuses a sale by an inactive seller with 403 at once, while its key still reads', async () => {
    const seller = await createSeller(client);
    await fundSeller(client, seller, 10_000);
    const patch = await client.patch(`/api/sellers/${seller.id}`, { token: ADMIN_TOKEN, body: { is_active: false } });
    expect(patch.status).toBe(200);
    expect(patch.body.is_active).toBe(false);
    const res = await sell(seller, 1000);
    expect(res.status).toBe(403);
    expect(res.body.code).toBe('seller_inactive');
    expect((await client.get(`/api/sellers/${seller.id}/balance`, { token: seller.apiKey })).status).toBe(200);
    expect(await balanceOf(client, seller.id)).toBe(10_000n);
  });

  it('refuses at once a sale sent to another API process after the seller was deactivated through this one', async () => {
    const other = await System.start({ workers: 0, env: { REDIS_PREFIX: String(system.env.REDIS_PREFIX) } });
    try {
      const otherClient = new Client(other.baseUrl);
      const seller = await createSeller(client);
      await fundSeller(client, seller, 10_000);
      const body = { seller_id: seller.id, phone_number: '09121234567', amount: 1000 };
      // The other process has now read (and remembers) who this key belongs to, and that it is active.
      expect((await otherClient.post('/api/charge-sales', { token: seller.apiKey, body })).status).toBe(202);
      await client.patch(`/api/sellers/${seller.id}`, { token: ADMIN_TOKEN, body: { is_active: false } });
      const refused = await otherClient.post('/api/charge-sales', { token: seller.apiKey, body });
      expect(refused.status).toBe(403);
      expect(refused.body.code).toBe('seller_inactive');
      await client.patch(`/api/sellers/${seller.id}`, { token: ADMIN_TOKEN, body: { is_active: true } });
      expect((await otherClient.post('/api/charge-sales', { token: seller.apiKey, body })).status).toBe(202);
    } finally {
      await other.stop();
    }
  });

  it('processes a credit request once: a second processing is 409, a rejection writes nothing', async () => {
    const seller = await createSeller(client);
    const approved = await fundSeller(client, seller, 7_000);
    const again = await client.post(`/api/credit-requests/${approved}/process`, {
      token: ADMIN_TOKEN,
      body: { action: 'approve' },
    });
    expect(again.status).toBe(409);
    expect(again.body.code).toBe('already_processed');
    const request = await client.post('/api/credit-requests', {
      token: seller.apiKey,
      body: { seller: seller.id, amount: 9000 },
    });
    const rejected = await client.post(`/api/credit-requests/${request.body.id}/process`, {
      token: ADMIN_TOKEN,
      headers: { prefer: 'wait=10' },
      body: { action: 'reject' },
    });
    expect(rejected.status).toBe(200);
    expect(rejected.body).toMatchObject({ status: 'succeeded', result: { status: 'rejected' } });
    expect(await balanceOf(client, seller.id)).toBe(7_000n);
    const list = await client.get(`/api/credit-requests?seller=${seller.id}&status=rejected`, { token: ADMIN_TOKEN });
    expect(list.body.items).toHaveLength(1);
    expect(list.body.items[0]).toMatchObject({ status: 'rejected', processed_by: 'bootstrap' });
  });
});
