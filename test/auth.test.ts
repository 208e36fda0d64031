import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { balanceOf, createSeller, fundSeller, type TestSeller } from './support/factories.ts';
import { Client } from './support/http.ts';
import { ADMIN_TOKEN, System } from './support/system.ts';

describe('authentication and access', () => {
  let system: System;
  let client: Client;
  let alice: TestSeller;
  let bob: TestSeller;
  let bobRequest: string;

  beforeAll(async () => {
    system = await System.start({ workers: 1 });
    client = new Client(system.baseUrl);
    alice = await createSeller(client, 'Alice');
    bob = await createSeller(client, 'Bob');
    await fundSeller(client, bob, 100_000);
    const pending = await client.post('/api/credit-requests', {
      token: bob.apiKey,
      body: { seller: bob.id, amount: 5000 },
    });
    bobRequest = pending.body.id;
  });
  afterAll(() => system?.stop());

  it('answers 401 with the JSON error shape without a token or with a wrong one', async () => {
    for (const token of [undefined, 'not-a-key', `${ADMIN_TOKEN}x`]) {
      const res = await client.get('/api/sellers', { token });
      expect(res.status).toBe(401);
      expect(res.body).toMatchObject({ code: 'unauthorized' });
    }
    const sale = await client.post('/api/charge-sales', {
      body: { seller_id: bob.id, phone_number: '09121234567', amount: 1 },
    });
    expect(sale.status).toBe(401);
  });

  it("refuses a seller reading another seller's data with 403", async () => {
    for (const path of [
      `/api/sellers/${bob.id}`,
      `/api/sellers/${bob.id}/balance`,
      `/api/sellers/${bob.id}/transactions`,
      `/api/sellers/${bob.id}/reconcile`,
      `/api/transactions?seller_id=${bob.id}`,
      `/api/credit-requests?seller=${bob.id}`,
    ]) {
      const res = await client.get(path, { token: alice.apiKey });
      expect(res.status, path).toBe(403);
      expect(res.body.code).toBe('forbidden');
    }
  });

  it("only lists a seller's own data", async () => {
    const sellers = await client.get('/api/sellers', { token: alice.apiKey });
    expect(sellers.body.items.map((s: { id: string }) => s.id)).toEqual([alice.id]);
    const ledger = await client.get('/api/transactions', { token: alice.apiKey });
    expect(ledger.body.items).toEqual([]);
  });

  it('refuses a seller selling from another seller with 403, and moves no money', async () => {
    const res = await client.post('/api/charge-sales', {
      token: alice.apiKey,
      body: { seller_id: bob.id, phone_number: '09121234567', amount: 1000 },
    });
    expect(res.status).toBe(403);
    expect(await balanceOf(client, bob.id)).toBe(100_000n);
  });

  it('refuses a seller approving a credit request, even its own, with 403', async () => {
    const res = await client.post(`/api/credit-requests/${bobRequest}/process`, {
      token: bob.apiKey,
      body: { action: 'approve' },
    });
    expect(res.status).toBe(403);
    const list = await client.get('/api/credit-requests?status=pending', { token: bob.apiKey });
    expect(list.body.items.map((r: { id: string }) => r.id)).toContain(bobRequest);
    expect(await balanceOf(client, bob.id)).toBe(100_000n);
  });

  it('refuses admin-only operations to sellers with 403', async () => {
    const create = await client.post('/api/sellers', {
      token: alice.apiKey,
      body: { name: 'X', email: `${randomUUID()}@x.test`, phone: '09120000000' },
    });
    expect(create.status).toBe(403);
    const patch = await client.patch(`/api/sellers/${alice.id}`, { token: alice.apiKey, body: { is_active: false } });
    expect(patch.status).toBe(403);
    expect((await client.get('/api/phone-numbers', { token: alice.apiKey })).status).toBe(403);
  });

  it('answers 404 for ids that match nothing, malformed ones included', async () => {
    for (const path of [
      `/api/sellers/${randomUUID()}`,
      '/api/sellers/not-an-id',
      `/api/jobs/${randomUUID()}`,
      '/api/jobs/42',
    ]) {
      const res = await client.get(path, { token: ADMIN_TOKEN });
      expect(res.status, path).toBe(404);
      expect(res.body.code).toBe('not_found');
    }
  });
});
