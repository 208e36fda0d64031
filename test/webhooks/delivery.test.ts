import { createDb } from '@cs/db';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { testSql } from '../support/db.ts';
import { createSeller, fundSeller, type TestSeller, waitForJob } from '../support/factories.ts';
import { Client } from '../support/http.ts';
import { ADMIN_TOKEN, System } from '../support/system.ts';
import { type Answer, type Received, Receiver, verified, verifies, writeEvents } from './receiver.ts';
import { WEBHOOK_ENV } from './senders.ts';

/**
 * Webhooks end to end: a seller sets its webhook through the API, its sales and credit requests
 * run through the real API and workers, and a receiver of the test's own gets each event, signed
 * the Standard Webhooks way, at least once, with the same webhook-id on every attempt. Retries,
 * timeouts and the retry window run on short settings (WEBHOOK_ENV).
 */

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('webhook deliveries', () => {
  let system: System;
  let client: Client;
  let receiver: Receiver;
  const sql = testSql();
  const outbox = createDb(inject('databaseUrl'), { max: 2 });

  beforeAll(async () => {
    // Two workers: each posts from the outbox, and each delivery is posted by one of them at a time.
    [system, receiver] = await Promise.all([System.start({ workers: 2, env: WEBHOOK_ENV }), Receiver.start()]);
    client = new Client(system.baseUrl);
  });
  afterAll(async () => {
    await system?.stop();
    await receiver?.stop();
    await sql.end();
    await outbox.close();
  });

  /** A seller whose webhook is `path` on the receiver; resolves with its secret. */
  async function sellerWithWebhook(path: string, answer?: (r: Received, nth: number) => Answer) {
    const seller = await createSeller(client, `Hooked ${path}`);
    const set = await client.request('PUT', `/api/sellers/${seller.id}/webhook`, {
      token: seller.apiKey,
      body: { url: receiver.url(path, answer) },
    });
    expect(set.status, JSON.stringify(set.body)).toBe(200);
    return { seller, secret: set.body.secret as string };
  }

  const deliveriesOf = async (seller: TestSeller, query = '') => {
    const res = await client.get(`/api/sellers/${seller.id}/webhook/deliveries${query}`, { token: seller.apiKey });
    expect(res.status, JSON.stringify(res.body)).toBe(200);
    return res.body.items as Array<Record<string, any>>;
  };

  async function waitForDeliveries(seller: TestSeller, done: (items: Array<Record<string, any>>) => boolean) {
    const deadline = Date.now() + 15_000;
    for (;;) {
      const items = await deliveriesOf(seller);
      if (done(items)) return items;
      if (Date.now() > deadline) throw new Error(`deliveries never settled: ${JSON.stringify(items)}`);
      await sleep(50);
    }
  }

  it("tells a seller's server of each event, signed: standardwebhooks verifies every post with the secret", async () => {
    const { seller, secret } = await sellerWithWebhook('/events');
    await fundSeller(client, seller, 10_000);
    const sold = await client.post('/api/charge-sales', {
      token: seller.apiKey,
      headers: { prefer: 'wait=20' },
      body: { seller_id: seller.id, phone_number: '09121110000', amount: 4000 },
    });
    const sale = await waitForJob(client, sold.body.job_id, seller.apiKey);
    expect(sale.status).toBe('succeeded');
    const short = await client.post('/api/charge-sales', {
      token: seller.apiKey,
      body: { seller_id: seller.id, phone_number: '09121110000', amount: 999_999 },
    });
    expect((await waitForJob(client, short.body.job_id, seller.apiKey)).status).toBe('rejected');
    const request = await client.post('/api/credit-requests', {
      token: seller.apiKey,
      body: { seller: seller.id, amount: 500 },
    });
    const rejecting = await client.post(`/api/credit-requests/${request.body.id}/process`, {
      token: ADMIN_TOKEN,
      body: { action: 'reject' },
    });
    expect((await waitForJob(client, rejecting.body.job_id)).status).toBe('succeeded');

    const posts = await receiver.waitFor('/events', (got) => got.length >= 4);
    const events = posts.map((post) => verified(post, secret));
    expect(events.map((e) => e.type).sort()).toEqual([
      'charge_sale.rejected',
      'charge_sale.succeeded',
      'credit_request.approved',
      'credit_request.rejected',
    ]);
    for (const [i, post] of posts.entries()) {
      expect(post.headers['content-type']).toBe('application/json');
      expect(post.headers['webhook-id']).toBe(events[i]?.id);
      expect(events[i]?.id).toMatch(/^msg_[0-9a-f]{32}$/);
      expect(Math.abs(Number(post.headers['webhook-timestamp']) - post.at / 1000)).toBeLessThan(5);
      expect(post.headers['webhook-signature']).toMatch(/^v1,[A-Za-z0-9+/]+=*$/);
      // Only the key of the seller's own secret signs it.
      expect(verifies(post, `whsec_${Buffer.alloc(32, 7).toString('base64')}`)).toBe(false);
      expect(verifies({ ...post, body: post.body.replace('"', ' "') }, secret)).toBe(false);
    }
    const byType = Object.fromEntries(events.map((e) => [e.type, e]));
    expect(byType['credit_request.approved']?.data).toMatchObject({
      seller: seller.id,
      amount: '10000',
      status: 'approved',
    });
    expect(byType['credit_request.rejected']?.data).toMatchObject({ id: request.body.id, status: 'rejected' });
    expect(byType['charge_sale.succeeded']?.data).toMatchObject({
      job_id: sale.job_id,
      seller_id: seller.id,
      status: 'succeeded',
      result: { amount: '4000', phone_number: '09121110000', delivery: { status: 'delivered' } },
    });
    expect(byType['charge_sale.rejected']?.data).toMatchObject({
      job_id: short.body.job_id,
      status: 'rejected',
      error: { code: 'insufficient_balance' },
    });

    const items = await waitForDeliveries(seller, (list) => list.every((d) => d.status === 'delivered'));
    expect(items).toHaveLength(4);
    expect(new Set(items.map((d) => d.id))).toEqual(new Set(events.map((e) => e.id)));
    for (const item of items) {
      expect(item).toMatchObject({ seller_id: seller.id, attempts: 1, last_status_code: 200, next_attempt_at: null });
    }
  });

  it('retries a receiver that fails three times, with the same webhook-id and body, until it answers 2xx', async () => {
    const { seller, secret } = await sellerWithWebhook('/flaky', (_r, nth) => (nth <= 3 ? 503 : 204));
    await fundSeller(client, seller, 1000);
    const posts = await receiver.waitFor('/flaky', (got) => got.length >= 4);
    await sleep(500);
    expect(receiver.at('/flaky')).toHaveLength(4);
    const ids = new Set(posts.map((p) => p.headers['webhook-id']));
    expect(ids.size).toBe(1);
    expect(new Set(posts.map((p) => p.body)).size).toBe(1);
    // A new signature each time, each one good.
    for (const post of posts) expect(verified(post, secret).type).toBe('credit_request.approved');
    // The waits grow: 100, 200, 300 ms.
    const gaps = posts.slice(1).map((p, i) => p.at - (posts[i] as Received).at);
    expect(gaps[0]).toBeGreaterThanOrEqual(90);
    expect(gaps[2]).toBeGreaterThanOrEqual(280);

    const [item] = await waitForDeliveries(seller, (list) => list[0]?.status === 'delivered');
    expect(item).toMatchObject({ id: [...ids][0], status: 'delivered', attempts: 4, last_status_code: 204 });
    const attempts = await sql`
      select status_code, error, duration_ms from webhook_attempts where delivery_id = ${item?.id} order by id`;
    expect(attempts.map((a) => a.status_code)).toEqual([503, 503, 503, 204]);
    expect(attempts.every((a) => a.duration_ms >= 0)).toBe(true);
  });

  it("times out a receiver that never answers, without holding up another seller's events; it ends failed, and an admin's retry sends it again", async () => {
    let dead = true;
    const { seller: stuck, secret } = await sellerWithWebhook('/dead', () => (dead ? 'hang' : 200));
    const { seller: alive } = await sellerWithWebhook('/alive');
    // Enough events to keep every slot of a sender busy, were a receiver not held to its own two.
    const data = { note: 'an event to a dead receiver' };
    await writeEvents(
      outbox.db,
      Array.from({ length: 16 }, () => ({ sellerId: stuck.id, type: 'credit_request.approved' as const, data })),
    );
    await receiver.waitFor('/dead', (got) => got.length >= 4);

    // While the dead receiver's posts hang, the other seller's events go out at once.
    for (let i = 0; i < 3; i++) {
      const written = Date.now();
      await writeEvents(outbox.db, [{ sellerId: alive.id, type: 'credit_request.approved', data: { i } }]);
      const [post] = await receiver.waitFor('/alive', (got) => got.length > i).then((got) => got.slice(i));
      expect(post && post.at - written, 'an event of a live receiver waited for a dead one').toBeLessThan(250);
      await sleep(100);
    }
    // Each of the two senders holds at most two posts to the dead receiver at once.
    const hung = receiver.at('/dead');
    const openAt = (t: number) => hung.filter((p) => p.at <= t && t < p.at + 280).length;
    expect(Math.max(...hung.map((p) => openAt(p.at)))).toBeLessThanOrEqual(4);

    const failed = await waitForDeliveries(
      stuck,
      (list) => list.length === 16 && list.every((d) => d.status === 'failed'),
    );
    for (const item of failed) {
      expect(item).toMatchObject({ status: 'failed', last_status_code: null, next_attempt_at: null });
      expect(item.attempts).toBeGreaterThanOrEqual(2);
      expect(item.last_error).toMatch(/timeout/);
    }
    const triedBefore = receiver.at('/dead').length;
    await sleep(500);
    expect(receiver.at('/dead').length, 'a failed delivery is not tried again by itself').toBe(triedBefore);

    dead = false;
    const target = failed[0] as Record<string, any>;
    const retriedAt = Date.now();
    const retried = await client.post(`/api/webhook-deliveries/${target.id}/retry`, { token: ADMIN_TOKEN });
    expect(retried.status, JSON.stringify(retried.body)).toBe(202);
    expect(retried.body).toMatchObject({ id: target.id, status: 'pending', attempts: target.attempts });
    expect(retried.body.next_attempt_at).not.toBeNull();
    const [again] = await receiver
      .waitFor('/dead', (got) => got.some((p) => p.headers['webhook-id'] === target.id && p.at >= retriedAt))
      .then((got) => got.filter((p) => p.headers['webhook-id'] === target.id).slice(-1));
    expect(verified(again as Received, secret).id).toBe(target.id);
    const [after] = await waitForDeliveries(stuck, (list) =>
      list.some((d) => d.id === target.id && d.status === 'delivered'),
    ).then((list) => list.filter((d) => d.id === target.id));
    expect(after).toMatchObject({ status: 'delivered', attempts: target.attempts + 1, last_status_code: 200 });
    // The others stay failed.
    expect((await deliveriesOf(stuck, '?status=failed')).length).toBe(15);
  });

  it('signs every attempt after a rotation with the new secret: the old one no longer verifies', async () => {
    let failing = true;
    const { seller, secret: old } = await sellerWithWebhook('/rotated', () => (failing ? 500 : 200));
    await fundSeller(client, seller, 1000);
    const [first] = await receiver.waitFor('/rotated', (got) => got.length >= 1);
    expect(verifies(first as Received, old)).toBe(true);
    const rotated = await client.post(`/api/sellers/${seller.id}/webhook/secret`, { token: seller.apiKey });
    expect(rotated.status, JSON.stringify(rotated.body)).toBe(200);
    const fresh = rotated.body.secret as string;
    expect(fresh).toMatch(/^whsec_/);
    expect(fresh).not.toBe(old);
    const rotatedAt = Date.now();
    failing = false;
    await waitForDeliveries(seller, (list) => list[0]?.status === 'delivered');
    const later = receiver.at('/rotated').filter((p) => p.at > rotatedAt + 50);
    expect(later.length).toBeGreaterThan(0);
    for (const post of later) {
      expect(post.headers['webhook-id']).toBe(first?.headers['webhook-id']);
      expect(verifies(post, fresh)).toBe(true);
      expect(verifies(post, old)).toBe(false);
    }
  });

  it('stops deliveries once the webhook is removed: what is pending ends failed, and no new event is written', async () => {
    const { seller } = await sellerWithWebhook('/removed', () => 500);
    await fundSeller(client, seller, 1000);
    await receiver.waitFor('/removed', (got) => got.length >= 1);
    const removed = await client.request('DELETE', `/api/sellers/${seller.id}/webhook`, { token: seller.apiKey });
    expect(removed.status).toBe(204);
    const [item] = await waitForDeliveries(seller, (list) => list[0]?.status === 'failed');
    expect(item).toMatchObject({ status: 'failed', last_error: 'webhook removed' });
    const count = receiver.at('/removed').length;
    await fundSeller(client, seller, 1000);
    await sleep(400);
    expect(await deliveriesOf(seller)).toHaveLength(1);
    expect(receiver.at('/removed')).toHaveLength(count);
  });
});
