import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testSql } from '../support/db.ts';
import { createSeller, fundSeller, type TestSeller, waitForJob } from '../support/factories.ts';
import {
  cleanUp,
  type ThrowawayPostgres,
  type ThrowawayRedis,
  throwawayPostgres,
  throwawayRedis,
  until,
} from '../support/faults.ts';
import { type Answer, Client } from '../support/http.ts';
import { ADMIN_TOKEN, System } from '../support/system.ts';

/** Small limits, so that each is reached in a moment and recovered from in seconds. */
const SALES_A_SECOND = 20;
const AUTH_FAILURES = 20;
const AUTH_WINDOW_S = 4;
const STREAMS_PER_CALLER = 2;
const STREAM_LIFETIME_S = 6;

const sale = (seller: TestSeller, amount = 1000) => ({
  token: seller.apiKey,
  body: { seller_id: seller.id, phone_number: '09121234567', amount },
});

/** A 429 as the contract gives it: `rate_limited`, and Retry-After in whole seconds, at least 1. */
function expectRateLimited(answer: Answer, maxRetryAfterS: number): number {
  expect(answer.status, JSON.stringify(answer.body)).toBe(429);
  expect(answer.body).toMatchObject({ code: 'rate_limited', error: expect.any(String) });
  const retryAfter = answer.headers.get('retry-after') ?? '';
  expect(retryAfter).toMatch(/^[1-9][0-9]*$/);
  expect(Number(retryAfter)).toBeLessThanOrEqual(maxRetryAfterS);
  return Number(retryAfter);
}

/** A gauge of the API's /metrics, as a number. */
async function gauge(client: Client, name: string): Promise<number> {
  const res = await client.get('/metrics');
  const match = new RegExp(`^${name} (\\S+)$`, 'm').exec(String(res.body));
  if (!match) throw new Error(`no ${name} in /metrics`);
  return Number(match[1]);
}

describe('limits on abuse, over two API processes', () => {
  let system: System;
  /** The two API processes of one deployment, as behind a load balancer. */
  let apis: [Client, Client];
  let client: Client;
  const sql = testSql();

  beforeAll(async () => {
    system = await System.start({
      workers: 1,
      env: {
        SELLER_RATE_LIMIT: String(SALES_A_SECOND),
        AUTH_FAILURE_LIMIT: String(AUTH_FAILURES),
        AUTH_FAILURE_WINDOW_SECONDS: String(AUTH_WINDOW_S),
        EVENT_STREAMS_PER_CALLER: String(STREAMS_PER_CALLER),
        EVENT_STREAM_MAX_SECONDS: String(STREAM_LIFETIME_S),
      },
    });
    client = new Client(system.baseUrl);
    apis = [client, new Client(await system.startApi())];
  });
  afterAll(async () => {
    await system?.stop();
    await sql.end();
  });

  const jobsOf = async (seller: TestSeller) =>
    (await sql<{ n: number }[]>`select count(*)::int as n from jobs where seller_id = ${seller.id}`)[0]?.n;

  describe('sales per second per seller (SELLER_RATE_LIMIT)', () => {
    it('refuses sales past the limit in a second with 429 and Retry-After, counted across both processes, recording nothing for them; sells again the next second', async () => {
      // 15 sales to each process, each under the limit of 20 on its own: only a count both share
      // refuses any. A burst that took longer than a second could span two windows and prove
      // nothing, so it is tried again (with a fresh seller) until one fits in a second.
      let seller: TestSeller | undefined;
      let answers: Answer[] = [];
      for (let attempt = 0; attempt < 3; attempt++) {
        seller = await createSeller(client, 'Rate limited');
        await fundSeller(client, seller, 1_000_000);
        const started = Date.now();
        const current = seller;
        answers = await Promise.all(
          Array.from({ length: 30 }, (_, i) => (apis[i % 2] as Client).post('/api/charge-sales', sale(current))),
        );
        if (Date.now() - started < 900) break;
      }
      const limited = seller as TestSeller;
      const accepted = answers.filter((a) => a.status === 202);
      const refused = answers.filter((a) => a.status !== 202);
      expect(accepted).toHaveLength(SALES_A_SECOND);
      expect(refused).toHaveLength(30 - SALES_A_SECOND);
      let retryAfter = 1;
      for (const answer of refused) retryAfter = Math.max(retryAfter, expectRateLimited(answer, 1));
      // Nothing recorded for a refused sale: the jobs are the accepted ones (and the funding's).
      expect(await jobsOf(limited)).toBe(SALES_A_SECOND + 1);

      // The operator selling for the seller is not a seller's key: not limited.
      expect((await client.post('/api/charge-sales', { ...sale(limited), token: ADMIN_TOKEN })).status).toBe(202);

      await sleep(retryAfter * 1000 + 100);
      for (const api of apis) {
        const again = await api.post('/api/charge-sales', sale(limited));
        expect(again.status, JSON.stringify(again.body)).toBe(202);
      }
      for (const answer of accepted) expect((await waitForJob(client, answer.body.job_id)).status).toBe('succeeded');
    });
  });

  describe('failed authentications per address', () => {
    /** A wrong token through the operator sign-in form, as a browser sends it. */
    async function signInWith(api: Client, token: string) {
      const form = await fetch(`${api.baseUrl}/admin/login`);
      const cookie = (form.headers.getSetCookie()[0] ?? '').split(';')[0] ?? '';
      const csrf = /name="_csrf" value="([^"]*)"/.exec(await form.text())?.[1] ?? '';
      return fetch(`${api.baseUrl}/admin/login`, {
        method: 'POST',
        redirect: 'manual',
        headers: { cookie, origin: api.baseUrl, 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ token, _csrf: csrf, next: '/admin' }),
      });
    }

    it('past 20 wrong tokens within the window, refuses the address with 429 everywhere, a valid token included, logs it, and lets it in again after the window', async () => {
      const seller = await createSeller(client, 'Behind the same address');
      // 20 wrong tokens, on both processes and through every way in: the API, the pages' bearer
      // token, the sign-in form. At the limit, not past it: still let in.
      for (let i = 0; i < 18; i++) {
        const wrong = await (apis[i % 2] as Client).get('/api/sellers', { token: `cs_wrong_${i}` });
        expect(wrong.status).toBe(401);
      }
      expect(
        (await fetch(`${system.baseUrl}/admin`, { headers: { authorization: 'Bearer cs_wrong_pages' } })).status,
      ).toBe(401);
      expect((await signInWith(apis[1], 'not-the-admin-token')).status).toBe(401);
      expect((await apis[0].get('/api/sellers', { token: ADMIN_TOKEN })).status).toBe(200);

      // The 21st: the address is refused, whatever it sends, on both processes.
      expectRateLimited(await apis[1].get('/api/sellers', { token: 'cs_wrong_21' }), AUTH_WINDOW_S);
      const since = Date.now();
      for (const api of apis) {
        expectRateLimited(await api.get('/api/sellers', { token: ADMIN_TOKEN }), AUTH_WINDOW_S);
        expectRateLimited(await api.get(`/api/sellers/${seller.id}/balance`, { token: seller.apiKey }), AUTH_WINDOW_S);
        expectRateLimited(await api.get('/api/sellers'), AUTH_WINDOW_S);
        const pages = await fetch(`${api.baseUrl}/admin`, { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
        expect(pages.status).toBe(429);
        const signIn = await signInWith(api, ADMIN_TOKEN);
        expect(signIn.status).toBe(429);
        expect(signIn.headers.get('retry-after')).toMatch(/^[1-9][0-9]*$/);
      }
      const logs = system.recentLogs(400);
      expect(logs).toMatch(/"address":"127\.0\.0\.1".*failed authentication past the limit/);
      expect(logs).toMatch(/"address":"127\.0\.0\.1".*refused: too many failed authentications/);

      // After the window, in again, on both processes; and the count starts afresh.
      await until(
        'the address let in again',
        async () => (await apis[0].get('/api/sellers', { token: ADMIN_TOKEN })).status === 200,
        (AUTH_WINDOW_S + 3) * 1000,
        200,
      );
      expect(Date.now() - since).toBeGreaterThanOrEqual((AUTH_WINDOW_S - 1) * 1000);
      expect((await apis[1].get(`/api/sellers/${seller.id}/balance`, { token: seller.apiKey })).status).toBe(200);
      expect((await apis[1].get('/api/sellers', { token: 'cs_wrong_again' })).status).toBe(401);
      expect((await apis[0].get('/api/sellers', { token: ADMIN_TOKEN })).status).toBe(200);
    });
  });

  describe('open credit requests per seller', () => {
    it('30 requests at once over both processes: exactly 10 recorded, the others 409 too_many_pending; processing one makes room for one more', async () => {
      const seller = await createSeller(client, 'Many requests');
      const answers = await Promise.all(
        Array.from({ length: 30 }, (_, i) =>
          (apis[i % 2] as Client).post('/api/credit-requests', {
            token: seller.apiKey,
            body: { seller: seller.id, amount: 1000 + i },
          }),
        ),
      );
      const created = answers.filter((a) => a.status === 201);
      const refused = answers.filter((a) => a.status === 409);
      expect(created).toHaveLength(10);
      expect(refused).toHaveLength(20);
      for (const answer of refused) expect(answer.body).toMatchObject({ code: 'too_many_pending', limit: 10 });
      const rows = await sql<{ id: string; status: string }[]>`
        select id, status from credit_requests where seller_id = ${seller.id}`;
      expect(rows.map((r) => r.id).sort()).toEqual(created.map((a) => a.body.id).sort());
      expect(new Set(rows.map((r) => r.status))).toEqual(new Set(['pending']));

      // Another seller is not held back by this one.
      const other = await createSeller(client, 'Few requests');
      const own = await apis[1].post('/api/credit-requests', {
        token: other.apiKey,
        body: { seller: other.id, amount: 5 },
      });
      expect(own.status).toBe(201);

      // One processed (rejected here): one more may wait, and no more than that.
      const processed = await client.post(`/api/credit-requests/${created[0]?.body.id}/process`, {
        token: ADMIN_TOKEN,
        headers: { prefer: 'wait=10' },
        body: { action: 'reject' },
      });
      expect(processed.body.status).toBe('succeeded');
      const next = [
        await apis[1].post('/api/credit-requests', { token: seller.apiKey, body: { seller: seller.id, amount: 7 } }),
        await apis[0].post('/api/credit-requests', { token: ADMIN_TOKEN, body: { seller: seller.id, amount: 8 } }),
      ];
      expect(next.map((a) => a.status)).toEqual([201, 409]);
      const [open] = await sql<{ n: number }[]>`
        select count(*)::int as n from credit_requests where seller_id = ${seller.id} and status = 'pending'`;
      expect(open?.n).toBe(10);
    });
  });

  describe('with no worker running, so that jobs stay open', () => {
    let seller: TestSeller;
    let other: TestSeller;
    let jobId: string;

    beforeAll(async () => {
      seller = await createSeller(client, 'Streams');
      other = await createSeller(client, 'Other streams');
      await system.stopWorker(0);
      const queued = await client.post('/api/charge-sales', sale(seller));
      expect(queued.status).toBe(202);
      jobId = queued.body.job_id;
    });

    /** Opens an event stream and reads until its first event; `ended` resolves when the server closes it. */
    async function openStream(api: Client, token: string, id = jobId) {
      const abort = new AbortController();
      const res = await fetch(`${api.baseUrl}/api/jobs/${id}/events`, {
        headers: { authorization: `Bearer ${token}` },
        signal: abort.signal,
      });
      if (res.status !== 200) {
        const refused = { status: res.status, body: await res.json(), headers: res.headers };
        return { res, refused, close: () => abort.abort(), ended: Promise.resolve(0) };
      }
      const reader = (res.body as ReadableStream<Uint8Array>).getReader();
      let text = '';
      while (!text.includes('event: job')) {
        const { value, done } = await reader.read();
        if (done) break;
        text += new TextDecoder().decode(value);
      }
      expect(text).toContain('"status":"queued"');
      const ended = (async () => {
        for (;;) {
          const { done } = await reader.read().catch(() => ({ done: true }));
          if (done) return Date.now();
        }
      })();
      return { res, refused: undefined, close: () => abort.abort(), ended };
    }

    it('caps the open event streams of a caller with 429 and Retry-After; another caller is not held back; a closed stream frees its place', async () => {
      const opened = Date.now();
      const first = await openStream(client, seller.apiKey);
      const second = await openStream(client, seller.apiKey);
      expect([first.res.status, second.res.status]).toEqual([200, 200]);
      expect(await gauge(client, 'event_streams_open')).toBe(2);

      const third = await openStream(client, seller.apiKey);
      third.close();
      expect(third.res.status).toBe(429);
      const retryAfter = expectRateLimited(third.refused as Answer, STREAM_LIFETIME_S);
      // The time until the oldest of the two is closed by the server at the latest.
      expect(retryAfter).toBeGreaterThanOrEqual(STREAM_LIFETIME_S - Math.ceil((Date.now() - opened) / 1000));

      const admin = await openStream(client, ADMIN_TOKEN, jobId);
      expect(admin.res.status).toBe(200);
      admin.close();
      const others = await client.post('/api/charge-sales', sale(other));
      const elsewhere = await openStream(client, other.apiKey, others.body.job_id);
      expect(elsewhere.res.status).toBe(200);
      elsewhere.close();

      first.close();
      await until(
        'the closed stream given back',
        async () => (await gauge(client, 'event_streams_open')) === 1,
        3000,
        50,
      );
      const again = await openStream(client, seller.apiKey);
      expect(again.res.status).toBe(200);
      again.close();
      second.close();
      await until('every stream given back', async () => (await gauge(client, 'event_streams_open')) === 0, 3000, 50);
    });

    it(`closes a stream after EVENT_STREAM_MAX_SECONDS (${STREAM_LIFETIME_S} s here) and gives its place back; a new one starts at the current state`, async () => {
      const opened = Date.now();
      const stream = await openStream(apis[1], seller.apiKey);
      expect(stream.res.status).toBe(200);
      const endedAt = await Promise.race([stream.ended, sleep(STREAM_LIFETIME_S * 1000 + 5000).then(() => Infinity)]);
      stream.close();
      const lived = endedAt - opened;
      expect(lived).toBeGreaterThanOrEqual(STREAM_LIFETIME_S * 1000 - 100);
      expect(lived).toBeLessThan(STREAM_LIFETIME_S * 1000 + 3000);
      expect(await gauge(apis[1], 'event_streams_open')).toBe(0);
      const reconnected = await openStream(apis[1], seller.apiKey);
      expect(reconnected.res.status).toBe(200);
      reconnected.close();
    });

    it('stops waiting for a Prefer: wait sale whose client hung up, and the sale still runs', async () => {
      expect(await gauge(client, 'job_waiters')).toBe(0);
      const hangUp = new AbortController();
      const waiting = fetch(`${system.baseUrl}/api/charge-sales`, {
        method: 'POST',
        signal: hangUp.signal,
        headers: { authorization: `Bearer ${seller.apiKey}`, 'content-type': 'application/json', prefer: 'wait=30' },
        body: JSON.stringify(sale(seller).body),
      }).catch(() => 'hung up');
      await until('the request waiting for its job', async () => (await gauge(client, 'job_waiters')) === 1, 5000, 50);
      hangUp.abort();
      expect(await waiting).toBe('hung up');
      // Freed at once, not when its 30 s are up.
      await until('the wait given up', async () => (await gauge(client, 'job_waiters')) === 0, 2000, 50);

      const [job] = await sql<{ id: string; status: string }[]>`
        select id, status from jobs where seller_id = ${seller.id} and id <> ${jobId}`;
      expect(job?.status).toBe('queued');
      system.startWorker();
      // Unfunded: the sale is refused for the balance, which means it ran.
      const done = await waitForJob(client, job?.id as string);
      expect(done.error?.code).toBe('insufficient_balance');
    });
  });
});

describe('the sale limit while Redis is down', () => {
  let redis: ThrowawayRedis;
  let postgres: ThrowawayPostgres;
  let system: System;
  let client: Client;
  let sql: ReturnType<typeof testSql>;

  beforeAll(async () => {
    redis = await throwawayRedis();
    postgres = await throwawayPostgres();
    sql = testSql(postgres.ownerUrl);
    system = await System.start({
      workers: 1,
      redisUrl: redis.url,
      databaseUrl: postgres.databaseUrl,
      env: { SELLER_RATE_LIMIT: String(SALES_A_SECOND), AUTH_FAILURE_LIMIT: '3' },
    });
    client = new Client(system.baseUrl);
  });
  afterAll(async () => {
    await cleanUp(
      () => system?.stop(),
      () => sql?.end({ timeout: 1 }),
      () => redis?.remove(),
      () => postgres?.remove(),
    );
  });

  it('answers a sale 503 service_unavailable and records nothing, while reads and the failed-authentication count go on in memory', async () => {
    const seller = await createSeller(client, 'Redis down');
    await fundSeller(client, seller, 100_000);
    const jobs = async () =>
      (await sql<{ n: number }[]>`select count(*)::int as n from jobs where seller_id = ${seller.id}`)[0]?.n;
    const before = await jobs();

    await redis.stop();
    try {
      const refused = await client.post('/api/charge-sales', sale(seller));
      expect(refused.status, JSON.stringify(refused.body)).toBe(503);
      expect(refused.body.code).toBe('service_unavailable');
      expect(await jobs()).toBe(before);
      // Reads come from PostgreSQL; authentication still counts failures, in this process alone.
      expect((await client.get(`/api/sellers/${seller.id}/balance`, { token: seller.apiKey })).status).toBe(200);
      for (let i = 0; i < 3; i++)
        expect((await client.get('/api/sellers', { token: `cs_wrong_${i}` })).status).toBe(401);
      expectRateLimited(await client.get('/api/sellers', { token: 'cs_wrong_4' }), 60);
      expectRateLimited(await client.get('/api/sellers', { token: ADMIN_TOKEN }), 60);
    } finally {
      await redis.start();
    }
  });
});
