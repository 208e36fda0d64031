import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testSql } from '../support/db.ts';
import { balanceOf, createSeller, fundSeller, type TestSeller, waitForJob } from '../support/factories.ts';
import { Client } from '../support/http.ts';
import { ADMIN_TOKEN, System } from '../support/system.ts';
import { MAX_BODY_BYTES, waitForQuiet } from './hostile.ts';

/**
 * The other side of refusing bad input: everything at the edge of what the contract allows is
 * accepted, and means what it says.
 */

const MAX = 1_000_000_000_000;

describe('valid input at the edges', () => {
  let system: System;
  let client: Client;
  const sql = testSql();

  beforeAll(async () => {
    system = await System.start({ workers: 1 });
    client = new Client(system.baseUrl);
  });
  afterAll(async () => {
    await system?.stop();
    await sql.end();
  });

  it('accepts amounts of 1 and 10^12 rials, as a JSON integer or a string of digits, to the rial', async () => {
    const shop = await createSeller(client, 'Edges');
    const amounts = [1, '1', MAX, String(MAX)];
    for (const amount of amounts) {
      const res = await client.post('/api/credit-requests', { token: shop.apiKey, body: { seller: shop.id, amount } });
      expect(res.status, JSON.stringify(res.body)).toBe(201);
      expect(res.body.amount).toBe(String(amount));
      const processed = await client.post(`/api/credit-requests/${res.body.id}/process`, {
        token: ADMIN_TOKEN,
        body: { action: 'approve' },
      });
      expect(processed.status).toBe(202);
      expect((await waitForJob(client, processed.body.job_id)).status).toBe('succeeded');
    }
    expect(await balanceOf(client, shop.id)).toBe(2n * BigInt(MAX) + 2n);

    for (const amount of amounts) {
      const res = await client.post('/api/charge-sales', {
        token: shop.apiKey,
        body: { seller_id: shop.id, phone_number: '09121234567', amount },
      });
      expect(res.status, JSON.stringify(res.body)).toBe(202);
      const job = await waitForJob(client, res.body.job_id);
      expect(job.status).toBe('succeeded');
      expect(job.result.amount).toBe(String(amount));
    }
    expect(await balanceOf(client, shop.id)).toBe(0n);
    const ledger = await client.get(`/api/sellers/${shop.id}/transactions`, { token: shop.apiKey });
    expect(ledger.body.items.map((t: { amount: string }) => t.amount)).toEqual([
      `-${MAX}`,
      `-${MAX}`,
      '-1',
      '-1',
      String(MAX),
      String(MAX),
      '1',
      '1',
    ]);
    const check = await client.get(`/api/sellers/${shop.id}/reconcile`, { token: shop.apiKey });
    expect(check.body).toMatchObject({ is_reconciled: true, current_balance: '0', total_transactions: 8 });
  });

  it('stores +989…, 989… and 09… as the same 09… number, for sellers and for sales', async () => {
    const forms = ['+989351112233', '989351112233', '09351112233'];
    for (const phone of forms) {
      const res = await client.post('/api/sellers', {
        token: ADMIN_TOKEN,
        body: { name: 'Phone forms', email: `${randomUUID()}@shops.test`, phone },
      });
      expect(res.status).toBe(201);
      expect(res.body.phone).toBe('09351112233');
    }

    const shop = await createSeller(client, 'Phone forms');
    await fundSeller(client, shop, 3000);
    for (const phone of forms) {
      const res = await client.post('/api/charge-sales', {
        token: shop.apiKey,
        body: { seller_id: shop.id, phone_number: phone, amount: 1000 },
      });
      expect(res.status).toBe(202);
      const job = await waitForJob(client, res.body.job_id);
      expect(job.status).toBe('succeeded');
      expect(job.result.phone_number).toBe('09351112233');
    }
    const ledger = await client.get(`/api/transactions?seller_id=${shop.id}&type=charge_sale`, { token: shop.apiKey });
    expect(ledger.body.items.map((t: { phone_number: string }) => t.phone_number)).toEqual(
      Array(3).fill('09351112233'),
    );
    for (const form of forms) {
      const res = await client.get(`/api/phone-numbers/${encodeURIComponent(form)}`, { token: ADMIN_TOKEN });
      expect(res.status, form).toBe(200);
      expect(res.body).toMatchObject({ number: '09351112233', total_charged: '3000', charge_count: 3 });
    }
  });

  describe('paths with a trailing slash', () => {
    let shop: TestSeller;
    beforeAll(async () => {
      shop = await createSeller(client, 'Slash');
      await fundSeller(client, shop, 10_000);
      await waitForQuiet(sql);
    });

    it('reads the same answer with and without it', async () => {
      const sale = await client.post('/api/charge-sales', {
        token: shop.apiKey,
        body: { seller_id: shop.id, phone_number: '09121234567', amount: 100 },
      });
      await waitForJob(client, sale.body.job_id);
      for (const path of [
        '/api/sellers',
        `/api/sellers/${shop.id}`,
        `/api/sellers/${shop.id}/balance`,
        `/api/sellers/${shop.id}/transactions`,
        `/api/sellers/${shop.id}/reconcile`,
        '/api/credit-requests',
        '/api/transactions',
        `/api/jobs/${sale.body.job_id}`,
        '/api/phone-numbers',
        '/api/phone-numbers/09121234567',
      ]) {
        const token = path.startsWith('/api/phone-numbers') ? ADMIN_TOKEN : shop.apiKey;
        const plain = await client.get(path, { token });
        const slashed = await client.get(`${path}/`, { token });
        expect(plain.status, path).toBe(200);
        expect(slashed.status, `${path}/`).toBe(200);
        expect(slashed.body, `${path}/`).toEqual(plain.body);
      }
      const withQuery = await client.get(`/api/transactions/?seller_id=${shop.id}&limit=1`, { token: shop.apiKey });
      expect(withQuery.status).toBe(200);
      expect(withQuery.body.items).toHaveLength(1);
    });

    it('takes every write with it', async () => {
      const seller = await client.post('/api/sellers/', {
        token: ADMIN_TOKEN,
        body: { name: 'Slash', email: `${randomUUID()}@shops.test`, phone: '09121234567' },
      });
      expect(seller.status).toBe(201);
      const patch = await client.patch(`/api/sellers/${shop.id}/`, { token: ADMIN_TOKEN, body: { is_active: true } });
      expect(patch.status).toBe(200);
      const request = await client.post('/api/credit-requests/', {
        token: shop.apiKey,
        body: { seller: shop.id, amount: 700 },
      });
      expect(request.status).toBe(201);
      const processed = await client.post(`/api/credit-requests/${request.body.id}/process/`, {
        token: ADMIN_TOKEN,
        body: { action: 'approve' },
      });
      expect(processed.status).toBe(202);
      expect((await waitForJob(client, processed.body.job_id)).status).toBe('succeeded');
      const before = await balanceOf(client, shop.id);
      const sale = await client.post('/api/charge-sales/', {
        token: shop.apiKey,
        body: { seller_id: shop.id, phone_number: '09121234567', amount: 200 },
      });
      expect(sale.status).toBe(202);
      expect((await waitForJob(client, sale.body.job_id)).status).toBe('succeeded');
      expect(await balanceOf(client, shop.id)).toBe(before - 200n);
    });
  });

  it('reads JSON declared with a charset or in capitals', async () => {
    const shop = await createSeller(client, 'Types');
    for (const type of ['application/json; charset=utf-8', 'application/json;charset=UTF-8', 'Application/JSON']) {
      const res = await client.post('/api/credit-requests', {
        token: shop.apiKey,
        rawBody: JSON.stringify({ seller: shop.id, amount: 10 }),
        headers: { 'content-type': type },
      });
      expect(res.status, type).toBe(201);
    }
  });

  it('reads a body of exactly 64 KiB', async () => {
    const shop = await createSeller(client, 'Large');
    const text = JSON.stringify({ seller: shop.id, amount: 10 });
    const body = `${text.slice(0, -1)}${' '.repeat(MAX_BODY_BYTES - Buffer.byteLength(text))}}`;
    expect(Buffer.byteLength(body)).toBe(MAX_BODY_BYTES);
    const res = await client.post('/api/credit-requests', {
      token: shop.apiKey,
      rawBody: body,
      headers: { 'content-type': 'application/json' },
    });
    expect(res.status).toBe(201);
  });

  it('takes names in any script, emoji included, exactly as written', async () => {
    for (const name of ['فروشگاه شارژ ۱۲۳', 'Shop 🛒', 'Магазин', '  Trimmed  ']) {
      const res = await client.post('/api/sellers', {
        token: ADMIN_TOKEN,
        body: { name, email: `${randomUUID()}@shops.test`, phone: '09121234567' },
      });
      expect(res.status, name).toBe(201);
      expect(res.body.name).toBe(name.trim());
    }
  });

  it('accepts an Idempotency-Key of 255 characters, and replays it as the same sale', async () => {
    const shop = await createSeller(client, 'Key');
    await fundSeller(client, shop, 1000);
    const key = 'k'.repeat(254) + randomUUID().slice(0, 1);
    const sale = { seller_id: shop.id, phone_number: '09121234567', amount: 400 };
    const first = await client.post('/api/charge-sales', {
      token: shop.apiKey,
      body: sale,
      headers: { 'idempotency-key': key },
    });
    expect(first.status).toBe(202);
    const again = await client.post('/api/charge-sales', {
      token: shop.apiKey,
      body: { ...sale, amount: '400', phone_number: '+989121234567' },
      headers: { 'idempotency-key': key },
    });
    expect(again.status).toBe(202);
    expect(again.body.job_id).toBe(first.body.job_id);
    await waitForJob(client, first.body.job_id);
    expect(await balanceOf(client, shop.id)).toBe(600n);
  });

  it('pages with limit 1 through the same rows one limit of 500 shows', async () => {
    const shop = await createSeller(client, 'Pages');
    for (const amount of [10, 20, 30]) await fundSeller(client, shop, amount);
    const all = await client.get(`/api/sellers/${shop.id}/transactions?limit=500`, { token: shop.apiKey });
    expect(all.body.next_cursor).toBeNull();
    const seen: unknown[] = [];
    let cursor: string | null = null;
    do {
      const query: string = cursor ? `&cursor=${cursor}` : '';
      const page = await client.get(`/api/sellers/${shop.id}/transactions?limit=1${query}`, { token: shop.apiKey });
      expect(page.status).toBe(200);
      expect(page.body.items.length).toBeLessThanOrEqual(1);
      seen.push(...page.body.items);
      cursor = page.body.next_cursor;
    } while (cursor);
    expect(seen).toEqual(all.body.items);
    expect(seen).toHaveLength(3);
  });

  it("reads a seller's own id written in capitals as theirs", async () => {
    const shop = await createSeller(client, 'Capitals');
    await fundSeller(client, shop, 500);
    const upper = shop.id.toUpperCase();
    for (const path of [
      `/api/sellers/${upper}`,
      `/api/sellers/${upper}/balance`,
      `/api/transactions?seller_id=${upper}`,
      `/api/credit-requests?seller=${upper}`,
    ]) {
      const res = await client.get(path, { token: shop.apiKey });
      expect(res.status, `${path}: ${JSON.stringify(res.body)}`).toBe(200);
    }
    const ledger = await client.get(`/api/transactions?seller_id=${upper}`, { token: shop.apiKey });
    expect(ledger.body.items).toHaveLength(1);
    const sale = await client.post('/api/charge-sales', {
      token: shop.apiKey,
      body: { seller_id: upper, phone_number: '09121234567', amount: 500 },
    });
    expect(sale.status).toBe(202);
    expect((await waitForJob(client, sale.body.job_id)).status).toBe('succeeded');
  });
});
