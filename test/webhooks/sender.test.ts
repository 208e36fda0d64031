import { createDb } from '@cs/db';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { testSql } from '../support/db.ts';
import { createSeller } from '../support/factories.ts';
import { Client } from '../support/http.ts';
import { System } from '../support/system.ts';
import { type Answer, type Received, Receiver, verifies, writeEvents } from './receiver.ts';
import { startSenders, WEBHOOK_ENV } from './senders.ts';

/**
 * The sender's loop on its own: several senders claiming from one outbox at once, as several
 * worker processes do, and a sender stopping. Only the senders of this file run (the system has
 * no worker), so what each one does can be counted.
 */

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe('the webhook sender', () => {
  let system: System;
  let client: Client;
  let receiver: Receiver;
  const sql = testSql();
  const outbox = createDb(inject('databaseUrl'), { max: 2 });

  beforeAll(async () => {
    [system, receiver] = await Promise.all([System.start({ workers: 0, env: WEBHOOK_ENV }), Receiver.start()]);
    client = new Client(system.baseUrl);
  });
  afterAll(async () => {
    await system?.stop();
    await receiver?.stop();
    await sql.end();
    await outbox.close();
  });

  async function sellerWithWebhook(path: string, answer: (r: Received, nth: number) => Answer) {
    const seller = await createSeller(client, `Sender ${path}`);
    const set = await client.request('PUT', `/api/sellers/${seller.id}/webhook`, {
      token: seller.apiKey,
      body: { url: receiver.url(path, answer) },
    });
    expect(set.status, JSON.stringify(set.body)).toBe(200);
    return { seller, secret: set.body.secret as string };
  }

  it('posts each of many deliveries exactly once while four senders claim at the same time', async () => {
    const { seller, secret } = await sellerWithWebhook('/many', () => ({ status: 200, afterMs: 5 }));
    const a = await createSeller(client, 'Second receiver');
    await client.request('PUT', `/api/sellers/${a.id}/webhook`, {
      token: a.apiKey,
      body: { url: receiver.url('/many-too', () => 200) },
    });
    const senders = startSenders(4);
    try {
      const events = (sellerId: string, n: number) =>
        Array.from({ length: n }, (_, i) => ({ sellerId, type: 'charge_sale.succeeded' as const, data: { i } }));
      await writeEvents(outbox.db, [...events(seller.id, 120), ...events(a.id, 40)]);
      await receiver.waitFor('/many', (got) => got.length >= 120, 30_000);
      await receiver.waitFor('/many-too', (got) => got.length >= 40, 30_000);
      await sleep(300);
      for (const [path, n] of [
        ['/many', 120],
        ['/many-too', 40],
      ] as const) {
        const ids = receiver.at(path).map((p) => String(p.headers['webhook-id']));
        expect(ids, path).toHaveLength(n);
        expect(new Set(ids).size, path).toBe(n);
      }
      expect(receiver.at('/many').every((p) => verifies(p, secret))).toBe(true);
      // Four senders, each holding at most two posts to one receiver at once.
      const posts = receiver.at('/many');
      const open = (t: number) => posts.filter((p) => p.at <= t && t < p.at + 4).length;
      expect(Math.max(...posts.map((p) => open(p.at)))).toBeLessThanOrEqual(8);
      const rows = await sql`
        select count(*)::int as n, count(*) filter (where status = 'delivered' and attempts = 1)::int as once
        from webhook_deliveries where seller_id in (${seller.id}, ${a.id})`;
      expect(rows[0]).toEqual({ n: 160, once: 160 });
      const [attempts] = await sql`
        select count(*)::int as n from webhook_attempts a join webhook_deliveries d on d.id = a.delivery_id
        where d.seller_id in (${seller.id}, ${a.id})`;
      expect(attempts?.n).toBe(160);
    } finally {
      await senders.stop();
    }
  });

  it('stops claiming at stop(), lets the posts in flight finish and records them; the rest stay pending for others', async () => {
    const { seller } = await sellerWithWebhook('/slow', () => ({ status: 200, afterMs: 200 }));
    const senders = startSenders(1);
    await writeEvents(
      outbox.db,
      Array.from({ length: 5 }, (_, i) => ({
        sellerId: seller.id,
        type: 'credit_request.approved' as const,
        data: { i },
      })),
    );
    await receiver.waitFor('/slow', (got) => got.length >= 2);
    const stopping = Date.now();
    await senders.stop();
    // The two in flight were answered after their 200 ms, not cut short.
    expect(Date.now() - stopping).toBeGreaterThanOrEqual(100);
    await sleep(300);
    expect(receiver.at('/slow')).toHaveLength(2);
    const rows = await sql`
      select status, attempts, claimed_until from webhook_deliveries where seller_id = ${seller.id} order by id`;
    expect(rows.filter((r) => r.status === 'delivered' && r.attempts === 1)).toHaveLength(2);
    expect(rows.filter((r) => r.status === 'pending' && r.attempts === 0 && r.claimed_until === null)).toHaveLength(3);

    // Another sender takes the rest at once.
    const next = startSenders(1);
    try {
      await receiver.waitFor('/slow', (got) => got.length >= 5);
    } finally {
      await next.stop();
    }
  });
});
