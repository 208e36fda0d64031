import { randomUUID } from 'node:crypto';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  b64,
  dbSnapshot,
  expectFieldsNamed,
  expectRefused,
  hostileBody,
  invalidActionJson,
  invalidAmountJson,
  invalidBooleanJson,
  invalidCursor,
  invalidEmailJson,
  invalidEnum,
  invalidLimit,
  invalidNameJson,
  invalidPhoneJson,
  invalidUuid,
  malformedJson,
  nonJsonContentType,
  nonStringIdJson,
  unknownIdSegment,
  waitForQuiet,
} from '../security/hostile.ts';
import { testSql } from '../support/db.ts';
import { balanceOf, createSeller, fundSeller, inParallel, type TestSeller, waitForJob } from '../support/factories.ts';
import type { Answer } from '../support/http.ts';
import { Client } from '../support/http.ts';
import { ADMIN_TOKEN, System } from '../support/system.ts';

/**
 * The hostile-input properties of test/security at scale and all at once: thousands of bad
 * requests from many clients while one honest seller keeps selling and being credited. Every bad
 * request is refused in the contract's shape, none is a 5xx, the honest seller's books come out
 * exactly as its own requests say, and nothing else in the database moves.
 *
 * HOSTILE_RUNS sets the inputs per property (default 1000), HOSTILE_SEED replays a run.
 */

const RUNS = Number(process.env.HOSTILE_RUNS) || 1000;
const SEED = Number(process.env.HOSTILE_SEED) || Math.floor(Math.random() * 2 ** 31);
const CONCURRENCY = 16;
const json = (value: unknown) => JSON.stringify(value);

interface Hostile {
  label: string;
  send: () => Promise<Answer>;
  check: (res: Answer) => void;
}

describe(`hostile input at scale (seed ${SEED}, ${RUNS} per property)`, () => {
  let system: System;
  let client: Client;
  const sql = testSql();
  let target: TestSeller;
  let honest: TestSeller;
  let pendingRequest: string;

  beforeAll(async () => {
    system = await System.start({ workers: 2 });
    client = new Client(system.baseUrl);
    target = await createSeller(client, 'Target');
    honest = await createSeller(client, 'Honest');
    await fundSeller(client, target, 1_000_000);
    await fundSeller(client, honest, 1_000_000);
    const pending = await client.post('/api/credit-requests', {
      token: target.apiKey,
      body: { seller: target.id, amount: 5000 },
    });
    pendingRequest = pending.body.id;
    await waitForQuiet(sql);
  });
  afterAll(async () => {
    await system?.stop();
    await sql.end();
  });

  const sample = <T>(arbitrary: fc.Arbitrary<T>, runs = RUNS, offset = 0) =>
    fc.sample(arbitrary, { numRuns: Math.ceil(runs), seed: SEED + offset });

  const raw = (method: string, path: string, token: string, text: string, contentType = 'application/json') =>
    client.request(method, path, { token, rawBody: text, headers: { 'content-type': contentType } });

  /** Every hostile request of the contract's bodies, queries and paths, drawn from the shared arbitraries. */
  function hostileRequests(): Hostile[] {
    const bodies: Array<{
      method: string;
      path: string;
      token: string;
      valid: Record<string, string>;
      invalid: Record<string, fc.Arbitrary<string>>;
    }> = [
      {
        method: 'POST',
        path: '/api/sellers',
        token: ADMIN_TOKEN,
        valid: { name: json('Shop'), email: json(`${randomUUID()}@shops.test`), phone: json('09121234567') },
        invalid: { name: invalidNameJson, email: invalidEmailJson, phone: invalidPhoneJson },
      },
      {
        method: 'PATCH',
        path: `/api/sellers/${target.id}`,
        token: ADMIN_TOKEN,
        valid: { is_active: 'false' },
        invalid: { is_active: invalidBooleanJson },
      },
      {
        method: 'POST',
        path: '/api/credit-requests',
        token: target.apiKey,
        valid: { seller: json(target.id), amount: '1000' },
        invalid: { seller: nonStringIdJson(target.id), amount: invalidAmountJson },
      },
      {
        method: 'POST',
        path: `/api/credit-requests/${pendingRequest}/process`,
        token: ADMIN_TOKEN,
        valid: { action: json('approve') },
        invalid: { action: invalidActionJson },
      },
      {
        method: 'POST',
        path: '/api/charge-sales',
        token: target.apiKey,
        valid: { seller_id: json(target.id), phone_number: json('09121234567'), amount: '1000' },
        invalid: {
          seller_id: nonStringIdJson(target.id),
          phone_number: invalidPhoneJson,
          amount: invalidAmountJson,
        },
      },
    ];
    const requests: Hostile[] = [];
    bodies.forEach((b, i) => {
      for (const body of sample(hostileBody(b.valid, b.invalid), RUNS, i)) {
        requests.push({
          label: `${b.method} ${b.path} ${body.text.slice(0, 200)}`,
          send: () => raw(b.method, b.path, b.token, body.text),
          check: (res) => expectFieldsNamed(res, body.offending),
        });
      }
      const validText = `{${Object.entries(b.valid)
        .map(([k, v]) => `${json(k)}:${v}`)
        .join(',')}}`;
      for (const text of sample(malformedJson(validText), RUNS / 5, 10 + i)) {
        requests.push({
          label: `${b.method} ${b.path} not JSON: ${text.slice(0, 100)}`,
          send: () => raw(b.method, b.path, b.token, text),
          check: (res) => expectRefused(res, 400, 'invalid_json'),
        });
      }
      for (const type of sample(nonJsonContentType, RUNS / 10, 20 + i)) {
        requests.push({
          label: `${b.method} ${b.path} as ${type}`,
          send: () => raw(b.method, b.path, b.token, validText, type),
          check: (res) => expectRefused(res, 415, 'unsupported_media_type'),
        });
      }
    });

    const lists: Array<[string, Record<string, fc.Arbitrary<string>>]> = [
      ['/api/sellers', { limit: invalidLimit, cursor: invalidCursor('uuid') }],
      [`/api/sellers/${target.id}/transactions`, { limit: invalidLimit, cursor: invalidCursor('bigint') }],
      [
        '/api/credit-requests',
        {
          status: invalidEnum(['pending', 'approved', 'rejected']),
          seller: invalidUuid,
          cursor: invalidCursor('uuid'),
        },
      ],
      [
        '/api/transactions',
        {
          seller_id: invalidUuid,
          type: invalidEnum(['charge_sale', 'credit_increase']),
          cursor: invalidCursor('bigint'),
        },
      ],
      ['/api/phone-numbers', { limit: invalidLimit, cursor: invalidCursor('bigint') }],
    ];
    lists.forEach(([path, params], i) => {
      const names = Object.keys(params);
      const chosen = fc
        .record(
          Object.fromEntries(names.map((n) => [n, fc.option(params[n] as fc.Arbitrary<string>, { nil: undefined })])),
        )
        .map((c) => Object.entries(c).filter((e): e is [string, string] => e[1] !== undefined))
        .filter((given) => given.length > 0);
      for (const given of sample(chosen, RUNS / 2, 30 + i)) {
        const offending = given.map(([n]) => n);
        const first = given.filter(([n, v]) => n !== 'cursor' || v.length > 200).map(([n]) => n);
        const query = new URLSearchParams(given).toString();
        requests.push({
          label: `GET ${path}?${query}`,
          send: () => client.get(`${path}?${query}`, { token: i % 2 ? ADMIN_TOKEN : target.apiKey }),
          check: (res) => expectFieldsNamed(res, first.length > 0 ? first : offending, offending),
        });
      }
    });

    const idPaths: Array<[string, (id: string) => string, unknown]> = [
      ['GET', (id) => `/api/sellers/${id}`, undefined],
      ['PATCH', (id) => `/api/sellers/${id}`, { is_active: false }],
      ['GET', (id) => `/api/sellers/${id}/balance`, undefined],
      ['GET', (id) => `/api/sellers/${id}/reconcile`, undefined],
      ['POST', (id) => `/api/credit-requests/${id}/process`, { action: 'approve' }],
      ['GET', (id) => `/api/jobs/${id}`, undefined],
    ];
    idPaths.forEach(([method, path, body], i) => {
      for (const segment of sample(unknownIdSegment, RUNS / 5, 40 + i)) {
        requests.push({
          label: `${method} ${path(segment)}`,
          send: () => client.request(method, path(segment), { token: ADMIN_TOKEN, body }),
          check: (res) => expectRefused(res, 404, 'not_found'),
        });
      }
    });

    // Bodies built to cost the parser as much as 64 KiB can.
    for (let i = 0; i < 50; i++) {
      requests.push({
        label: 'backtracking body',
        send: () => raw('POST', '/api/charge-sales', target.apiKey, `{"a":"${'\\"'.repeat(32_000)}`),
        check: (res) => expectRefused(res, 400, 'invalid_json'),
      });
    }
    return requests;
  }

  it('refuses every hostile request in the contract shape, amid honest traffic whose books come out exact', async () => {
    const before = await dbSnapshot(sql);
    const targetBalance = await balanceOf(client, target.id);
    const all = hostileRequests();
    const [requests = all] = fc.sample(fc.shuffledSubarray(all, { minLength: all.length }), { numRuns: 1, seed: SEED });

    // The honest seller: sales and credit requests, some repeated under the same idempotency key.
    let honestStop = false;
    const honestJobs: string[] = [];
    const honestCredits: string[] = [];
    const honestLatencies: number[] = [];
    const honestLoop = (async () => {
      let n = 0;
      while (!honestStop) {
        n++;
        const started = Date.now();
        if (n % 10 === 0) {
          const res = await client.post('/api/credit-requests', {
            token: honest.apiKey,
            body: { seller: honest.id, amount: 700 },
          });
          expect(res.status).toBe(201);
          honestCredits.push(res.body.id);
          const processed = await client.post(`/api/credit-requests/${res.body.id}/process`, {
            token: ADMIN_TOKEN,
            body: { action: n % 20 === 0 ? 'reject' : 'approve' },
          });
          expect(processed.status).toBe(202);
          honestJobs.push(processed.body.job_id);
        } else {
          const key = `honest-${Math.floor(n / 2)}`;
          const res = await client.post('/api/charge-sales', {
            token: honest.apiKey,
            headers: { 'idempotency-key': key },
            body: {
              seller_id: honest.id,
              phone_number: '+989350000001',
              amount: String(100 + (Math.floor(n / 2) % 50)),
            },
          });
          expect(res.status).toBe(202);
          if (!honestJobs.includes(res.body.job_id)) honestJobs.push(res.body.job_id);
        }
        honestLatencies.push(Date.now() - started);
      }
    })();

    const failures: string[] = [];
    let fiveHundreds = 0;
    await inParallel(requests, CONCURRENCY, async (request) => {
      const res = await request.send();
      if (res.status >= 500) fiveHundreds++;
      try {
        request.check(res);
      } catch (error) {
        if (failures.length < 20)
          failures.push(
            `${request.label}\n  → ${res.status} ${JSON.stringify(res.body)?.slice(0, 300)}\n  ${(error as Error).message.slice(0, 300)}`,
          );
      }
    });
    honestStop = true;
    await honestLoop;

    expect(fiveHundreds, failures.join('\n')).toBe(0);
    expect(failures, failures.join('\n')).toEqual([]);
    // An honest client is never kept waiting behind the hostile ones for long.
    expect(Math.max(...honestLatencies)).toBeLessThan(10_000);

    // The honest seller's books: exactly what its own jobs say.
    const finals = await Promise.all(honestJobs.map((id) => waitForJob(client, id, honest.apiKey, 120_000)));
    let expectedBalance = 1_000_000n;
    let ledgerRows = 1;
    for (const job of finals) {
      expect(job.status, JSON.stringify(job)).not.toBe('failed');
      if (job.status !== 'succeeded') continue;
      if (job.type === 'charge_sale') {
        expectedBalance -= BigInt(job.result.amount);
        ledgerRows++;
      } else if (job.result.status === 'approved') {
        expectedBalance += BigInt(job.result.amount);
        ledgerRows++;
      }
    }
    await waitForQuiet(sql);
    expect(await balanceOf(client, honest.id)).toBe(expectedBalance);
    const check = await client.get(`/api/sellers/${honest.id}/reconcile`, { token: honest.apiKey });
    expect(check.body).toMatchObject({ is_reconciled: true, total_transactions: ledgerRows });

    // Nothing else moved: the hostile target is as it was, and only the honest requests were recorded.
    const after = await dbSnapshot(sql);
    expect(await balanceOf(client, target.id)).toBe(targetBalance);
    expect(after).toMatchObject({
      sellers: before?.sellers,
      active_sellers: before?.active_sellers,
      jobs: before?.jobs + BigInt(honestJobs.length),
      credit_requests: before?.credit_requests + BigInt(honestCredits.length),
      ledger_rows: before?.ledger_rows + BigInt(ledgerRows - 1),
    });
    const [request] = await sql`select status from credit_requests where id = ${pendingRequest}`;
    expect(request?.status).toBe('pending');
  });

  it('keeps refusing oversized bodies and out-of-range cursors under load', async () => {
    const before = await dbSnapshot(sql);
    const big = `{"seller_id":${json(target.id)},"phone_number":"09121234567","amount":1,"pad":"${'x'.repeat(70_000)}"}`;
    const answers = await inParallel(
      Array.from({ length: 200 }, (_, i) => i),
      CONCURRENCY,
      async (i) =>
        i % 2
          ? raw('POST', '/api/charge-sales', target.apiKey, big).catch(() => ({ status: 0, body: null }) as Answer)
          : client.get(`/api/transactions?cursor=${b64(String(2n ** 63n + BigInt(i)))}`, { token: ADMIN_TOKEN }),
    );
    for (const [i, res] of answers.entries()) {
      // fetch may lose a 413 to the connection the server closes after it; it must never be a 5xx.
      if (i % 2) expect([0, 413]).toContain(res.status);
      else expectFieldsNamed(res, ['cursor']);
    }
    expect(await dbSnapshot(sql)).toEqual(before);
  });
});
