import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createSeller, fundSeller, type TestSeller } from '../support/factories.ts';
import { Client } from '../support/http.ts';
import { ADMIN_TOKEN, System } from '../support/system.ts';

/**
 * A seller's key rotated through one API process is refused by every API process within a
 * second: the other process has just used the old key (so it remembers whose it is) and must
 * forget it as soon as the change reaches it. The new key works on both at once.
 */

const WITHIN_MS = 1000;

describe('seller key rotation across two API processes', () => {
  let a: System;
  let b: System;
  let onA: Client;
  let onB: Client;

  beforeAll(async () => {
    a = await System.start({ workers: 1 });
    // The same Redis prefix: one system, two API processes.
    b = await System.start({ workers: 0, env: { REDIS_PREFIX: String(a.env.REDIS_PREFIX) } });
    onA = new Client(a.baseUrl);
    onB = new Client(b.baseUrl);
  });
  afterAll(async () => {
    await b?.stop();
    await a?.stop();
  });

  const balance = (client: Client, seller: TestSeller, key: string) =>
    client.get(`/api/sellers/${seller.id}/balance`, { token: key });

  /**
   * Polls `client` with the old key until it is refused; fails if that takes longer than a second
   * from `since`, or if it is ever let in again afterwards. Returns how long it took.
   */
  async function refusedWithinASecond(client: Client, seller: TestSeller, oldKey: string, since: number) {
    let status = 0;
    let refusedAfter = -1;
    while (Date.now() - since <= WITHIN_MS) {
      status = (await balance(client, seller, oldKey)).status;
      if (status === 401) {
        refusedAfter = Date.now() - since;
        break;
      }
      expect(status).toBe(200);
      await sleep(10);
    }
    expect(
      refusedAfter,
      `the old key still answered ${status} ${Date.now() - since} ms after the rotation`,
    ).toBeGreaterThanOrEqual(0);
    for (let i = 0; i < 5; i++) {
      const res = await balance(client, seller, oldKey);
      expect(res.status).toBe(401);
      expect(res.body.code).toBe('unauthorized');
    }
    return refusedAfter;
  }

  it('rotated by the seller through process A: the old key is 401 on A at once and on B within a second', async () => {
    const seller = await createSeller(onA, 'Rotating');
    await fundSeller(onA, seller, 50_000);
    // Both processes have read who the key belongs to.
    expect((await balance(onA, seller, seller.apiKey)).status).toBe(200);
    expect((await balance(onB, seller, seller.apiKey)).status).toBe(200);

    // No body and no Content-Type: a bodiless POST.
    const rotated = await onA.post(`/api/sellers/${seller.id}/api-key`, { token: seller.apiKey });
    const at = Date.now();
    expect(rotated.status, JSON.stringify(rotated.body)).toBe(201);
    const newKey = String(rotated.body.api_key);
    expect(newKey).not.toBe(seller.apiKey);
    expect(newKey.length).toBeGreaterThanOrEqual(32);

    expect((await balance(onA, seller, seller.apiKey)).status).toBe(401);
    const took = await refusedWithinASecond(onB, seller, seller.apiKey, at);
    console.log(`old key refused by the other API process ${took} ms after the rotation`);

    for (const client of [onA, onB]) {
      const res = await balance(client, seller, newKey);
      expect(res.status).toBe(200);
      expect(res.body.credit_balance).toBe('50000');
    }
    const sale = await onB.post('/api/charge-sales', {
      token: newKey,
      headers: { prefer: 'wait=20' },
      body: { seller_id: seller.id, phone_number: '09121234567', amount: 1000 },
    });
    expect(sale.status, JSON.stringify(sale.body)).toBe(200);
    expect(sale.body).toMatchObject({ status: 'succeeded', result: { new_balance: '49000' } });
    const refusedSale = await onB.post('/api/charge-sales', {
      token: seller.apiKey,
      body: { seller_id: seller.id, phone_number: '09121234567', amount: 1000 },
    });
    expect(refusedSale.status).toBe(401);
  });

  it('rotated by an admin through process B, with an empty JSON body: refused on A within a second', async () => {
    const seller = await createSeller(onA, 'Rotated by admin');
    expect((await balance(onA, seller, seller.apiKey)).status).toBe(200);
    expect((await balance(onB, seller, seller.apiKey)).status).toBe(200);

    const rotated = await onB.post(`/api/sellers/${seller.id}/api-key`, {
      token: ADMIN_TOKEN,
      rawBody: '',
      headers: { 'content-type': 'application/json' },
    });
    const at = Date.now();
    expect(rotated.status, JSON.stringify(rotated.body)).toBe(201);
    await refusedWithinASecond(onA, seller, seller.apiKey, at);
    for (const client of [onA, onB]) expect((await balance(client, seller, rotated.body.api_key)).status).toBe(200);
  });

  it('rotated twice in a row: only the last key works anywhere', async () => {
    const seller = await createSeller(onA, 'Twice');
    expect((await balance(onB, seller, seller.apiKey)).status).toBe(200);
    const first = await onA.post(`/api/sellers/${seller.id}/api-key`, { token: seller.apiKey });
    expect(first.status).toBe(201);
    // The second rotation, through the other process, with the key the first one gave.
    const second = await onB.post(`/api/sellers/${seller.id}/api-key`, { token: first.body.api_key });
    const at = Date.now();
    expect(second.status).toBe(201);
    for (const client of [onA, onB]) {
      for (const old of [seller.apiKey, first.body.api_key]) await refusedWithinASecond(client, seller, old, at);
      expect((await balance(client, seller, second.body.api_key)).status).toBe(200);
    }
  });

  it("refuses another seller's rotation (403) and leaves the key working everywhere", async () => {
    const seller = await createSeller(onA, 'Kept');
    const other = await createSeller(onA, 'Intruder');
    const res = await onB.post(`/api/sellers/${seller.id}/api-key`, { token: other.apiKey });
    expect(res.status).toBe(403);
    await sleep(200);
    for (const client of [onA, onB]) expect((await balance(client, seller, seller.apiKey)).status).toBe(200);
  });

  it('a deactivated seller rotates too: its new key reads on both processes, and still cannot sell', async () => {
    const seller = await createSeller(onA, 'Inactive rotating');
    expect((await balance(onB, seller, seller.apiKey)).status).toBe(200);
    expect(
      (await onA.patch(`/api/sellers/${seller.id}`, { token: ADMIN_TOKEN, body: { is_active: false } })).status,
    ).toBe(200);
    const rotated = await onA.post(`/api/sellers/${seller.id}/api-key`, { token: seller.apiKey });
    const at = Date.now();
    expect(rotated.status).toBe(201);
    await refusedWithinASecond(onB, seller, seller.apiKey, at);
    expect((await balance(onB, seller, rotated.body.api_key)).status).toBe(200);
    const sale = await onB.post('/api/charge-sales', {
      token: rotated.body.api_key,
      body: { seller_id: seller.id, phone_number: '09121234567', amount: 1 },
    });
    expect(sale.status).toBe(403);
    expect(sale.body.code).toBe('seller_inactive');
  });
});
