import { randomUUID } from 'node:crypto';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { quoteNonIntegerNumbers } from '../../apps/api/src/middleware/json-body.ts';
import { testSql } from '../support/db.ts';
import { createSeller, fundSeller, type TestSeller, waitForJob } from '../support/factories.ts';
import type { Answer } from '../support/http.ts';
import { Client } from '../support/http.ts';
import { ADMIN_TOKEN, System } from '../support/system.ts';
import {
  b64,
  type CursorKind,
  classicMalformedJson,
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
  isIranMobile,
  MAX_BODY_BYTES,
  malformedJson,
  nonJsonContentType,
  nonObjectBody,
  nonStringIdJson,
  sendEarlyAnswered,
  unknownIdSegment,
  waitForQuiet,
} from './hostile.ts';

/**
 * Bad input, of every kind the contract names, against every body and query parameter: the answer
 * is always a 4xx in the contract's error shape, a 400 names what was wrong, and the database is
 * exactly as it was.
 */

const RUNS = 60;
const json = (value: unknown) => JSON.stringify(value);
const jsonHeaders = { 'content-type': 'application/json' };

interface World {
  seller: TestSeller;
  other: TestSeller;
  pendingRequest: string;
}

interface BodyEndpoint {
  name: string;
  method: 'POST' | 'PATCH';
  path: (w: World) => string;
  token: (w: World) => string;
  valid: (w: World) => Record<string, string>;
  invalid: (w: World) => Record<string, fc.Arbitrary<string>>;
}

/** Every request body of the contract: who may send it, a valid one, and what may be wrong in each field. */
const bodyEndpoints: BodyEndpoint[] = [
  {
    name: 'POST /api/sellers',
    method: 'POST',
    path: () => '/api/sellers',
    token: () => ADMIN_TOKEN,
    valid: () => ({ name: json('Shop'), email: json(`${randomUUID()}@shops.test`), phone: json('09121234567') }),
    invalid: () => ({ name: invalidNameJson, email: invalidEmailJson, phone: invalidPhoneJson }),
  },
  {
    name: 'PATCH /api/sellers/{id}',
    method: 'PATCH',
    path: (w) => `/api/sellers/${w.seller.id}`,
    token: () => ADMIN_TOKEN,
    // Deactivating would show in the snapshot, were an invalid body ever applied.
    valid: () => ({ is_active: 'false' }),
    invalid: () => ({ is_active: invalidBooleanJson }),
  },
  {
    name: 'POST /api/credit-requests',
    method: 'POST',
    path: () => '/api/credit-requests',
    token: (w) => w.seller.apiKey,
    valid: (w) => ({ seller: json(w.seller.id), amount: '1000' }),
    invalid: (w) => ({ seller: nonStringIdJson(w.seller.id), amount: invalidAmountJson }),
  },
  {
    name: 'POST /api/credit-requests/{id}/process',
    method: 'POST',
    path: (w) => `/api/credit-requests/${w.pendingRequest}/process`,
    token: () => ADMIN_TOKEN,
    valid: () => ({ action: json('approve') }),
    invalid: () => ({ action: invalidActionJson }),
  },
  {
    name: 'POST /api/charge-sales',
    method: 'POST',
    path: () => '/api/charge-sales',
    token: (w) => w.seller.apiKey,
    valid: (w) => ({ seller_id: json(w.seller.id), phone_number: json('+989121234567'), amount: json('1000') }),
    invalid: (w) => ({
      seller_id: nonStringIdJson(w.seller.id),
      phone_number: invalidPhoneJson,
      amount: invalidAmountJson,
    }),
  },
];

interface ListEndpoint {
  name: string;
  path: (w: World) => string;
  params: Record<string, fc.Arbitrary<string>>;
}

const cursorOf = (kind: CursorKind) => invalidCursor(kind);

/** Every list of the contract and its query parameters, each with what may be wrong in it. */
const listEndpoints: ListEndpoint[] = [
  { name: 'GET /api/sellers', path: () => '/api/sellers', params: { limit: invalidLimit, cursor: cursorOf('uuid') } },
  {
    name: 'GET /api/sellers/{id}/transactions',
    path: (w) => `/api/sellers/${w.seller.id}/transactions`,
    params: { limit: invalidLimit, cursor: cursorOf('bigint') },
  },
  {
    name: 'GET /api/credit-requests',
    path: () => '/api/credit-requests',
    params: {
      status: invalidEnum(['pending', 'approved', 'rejected']),
      seller: invalidUuid,
      limit: invalidLimit,
      cursor: cursorOf('uuid'),
    },
  },
  {
    name: 'GET /api/transactions',
    path: () => '/api/transactions',
    params: {
      seller_id: invalidUuid,
      type: invalidEnum(['charge_sale', 'credit_increase']),
      limit: invalidLimit,
      cursor: cursorOf('bigint'),
    },
  },
  {
    name: 'GET /api/phone-numbers',
    path: () => '/api/phone-numbers',
    params: { limit: invalidLimit, cursor: cursorOf('bigint') },
  },
];

/** Every route with an id in its path, as the admin (who may see everything) would call it. */
const idRoutes: Array<{ name: string; method: string; path: (id: string) => string; body?: unknown }> = [
  { name: 'GET /api/sellers/{id}', method: 'GET', path: (id) => `/api/sellers/${id}` },
  { name: 'PATCH /api/sellers/{id}', method: 'PATCH', path: (id) => `/api/sellers/${id}`, body: { is_active: false } },
  { name: 'GET /api/sellers/{id}/balance', method: 'GET', path: (id) => `/api/sellers/${id}/balance` },
  { name: 'GET /api/sellers/{id}/transactions', method: 'GET', path: (id) => `/api/sellers/${id}/transactions` },
  { name: 'GET /api/sellers/{id}/reconcile', method: 'GET', path: (id) => `/api/sellers/${id}/reconcile` },
  {
    name: 'POST /api/credit-requests/{id}/process',
    method: 'POST',
    path: (id) => `/api/credit-requests/${id}/process`,
    body: { action: 'approve' },
  },
  { name: 'GET /api/jobs/{id}', method: 'GET', path: (id) => `/api/jobs/${id}` },
];

describe('hostile input', () => {
  let system: System;
  let client: Client;
  const sql = testSql();
  const w = {} as World;

  beforeAll(async () => {
    system = await System.start({ workers: 1 });
    client = new Client(system.baseUrl);
    w.seller = await createSeller(client, 'Target');
    w.other = await createSeller(client, 'Other');
    // Funded, so that a sale that slipped through validation would really move money.
    await fundSeller(client, w.seller, 1_000_000);
    const pending = await client.post('/api/credit-requests', {
      token: w.seller.apiKey,
      body: { seller: w.seller.id, amount: 5000 },
    });
    expect(pending.status).toBe(201);
    w.pendingRequest = pending.body.id;
    await waitForQuiet(sql);
  });
  afterAll(async () => {
    await system?.stop();
    await sql.end();
  });

  /** Sends `send`, and checks that the database is exactly as before. */
  async function unchanged(send: () => Promise<Answer>): Promise<Answer> {
    const before = await dbSnapshot(sql);
    const res = await send();
    expect(res.status, JSON.stringify(res.body)?.slice(0, 300)).toBeLessThan(500);
    expect(await dbSnapshot(sql)).toEqual(before);
    return res;
  }

  const raw = (method: string, path: string, token: string, text: string, headers: Record<string, string> = {}) =>
    client.request(method, path, { token, rawBody: text, headers: { ...jsonHeaders, ...headers } });

  describe('bodies', () => {
    it.each(bodyEndpoints)(
      'refuses a malformed $name body with 400 naming each offending field, and changes nothing',
      async (endpoint) => {
        await fc.assert(
          fc.asyncProperty(
            hostileBody(endpoint.valid(w), endpoint.invalid(w)),
            fc.option(fc.stringMatching(/^[A-Za-z0-9_-]{1,255}$/), { nil: undefined }),
            async (body, idempotencyKey) => {
              const headers: Record<string, string> = idempotencyKey ? { 'idempotency-key': idempotencyKey } : {};
              const res = await unchanged(() =>
                raw(endpoint.method, endpoint.path(w), endpoint.token(w), body.text, headers),
              );
              expectFieldsNamed(res, body.offending);
            },
          ),
          { numRuns: RUNS },
        );
      },
    );

    it('refuses a body that is JSON but not an object with 400 naming the body', async () => {
      const valid = `{"seller":${json(randomUUID())},"amount":1000}`;
      await fc.assert(
        fc.asyncProperty(fc.constantFrom(...bodyEndpoints), nonObjectBody(valid), async (endpoint, text) => {
          const res = await unchanged(() => raw(endpoint.method, endpoint.path(w), endpoint.token(w), text));
          expectFieldsNamed(res, ['body']);
        }),
        { numRuns: 40 },
      );
    });

    it('refuses text that is not JSON with 400 invalid_json', async () => {
      const cases = fc.constantFrom(...bodyEndpoints).chain((endpoint) => {
        const valid = Object.entries(endpoint.valid(w))
          .map(([key, value]) => `${json(key)}:${value}`)
          .join(',');
        return malformedJson(`{${valid}}`).map((text) => ({ endpoint, text }));
      });
      await fc.assert(
        fc.asyncProperty(cases, async ({ endpoint, text }) => {
          const res = await unchanged(() => raw(endpoint.method, endpoint.path(w), endpoint.token(w), text));
          expectRefused(res, 400, 'invalid_json');
        }),
        { numRuns: 80 },
      );
    });

    it('refuses, as not JSON, text that a lenient parser would read', async () => {
      for (const text of classicMalformedJson) {
        expect(() => JSON.parse(text), text).toThrow();
        const res = await unchanged(() => raw('POST', '/api/credit-requests', w.seller.apiKey, text));
        expectRefused(res, 400, 'invalid_json');
      }
    });

    it('refuses a body that is not UTF-8 with 400 invalid_json', async () => {
      const head = new TextEncoder().encode(`{"name":"Shop `);
      const tail = new TextEncoder().encode(`","email":"${randomUUID()}@shops.test","phone":"09121234567"}`);
      for (const bad of [[0xff], [0xc0, 0xae], [0xed, 0xa0, 0x80], [0xe2, 0x82], [0xf8, 0x88, 0x80, 0x80, 0x80]]) {
        const res = await unchanged(() =>
          sendEarlyAnswered(system.baseUrl, '/api/sellers', {
            method: 'POST',
            headers: { ...jsonHeaders, authorization: `Bearer ${ADMIN_TOKEN}` },
            chunks: [head, new Uint8Array(bad), tail],
          }),
        );
        expectRefused(res, 400, 'invalid_json');
      }
    });

    it('refuses a body not sent as application/json with 415, even a valid one', async () => {
      await fc.assert(
        fc.asyncProperty(fc.constantFrom(...bodyEndpoints), nonJsonContentType, async (endpoint, contentType) => {
          const text = `{${Object.entries(endpoint.valid(w))
            .map(([key, value]) => `${json(key)}:${value}`)
            .join(',')}}`;
          const res = await unchanged(() =>
            raw(endpoint.method, endpoint.path(w), endpoint.token(w), text, { 'content-type': contentType }),
          );
          expectRefused(res, 415, 'unsupported_media_type');
        }),
        { numRuns: 60 },
      );
      // Without any Content-Type at all: a byte body, which fetch sends undeclared.
      for (const endpoint of bodyEndpoints) {
        const res = await unchanged(async () => {
          const answer = await fetch(`${system.baseUrl}${endpoint.path(w)}`, {
            method: endpoint.method,
            headers: { authorization: `Bearer ${endpoint.token(w)}` },
            body: new TextEncoder().encode('{"amount":1000}'),
          });
          return { status: answer.status, body: await answer.json(), headers: answer.headers };
        });
        expectRefused(res, 415, 'unsupported_media_type');
      }
    });

    it('refuses a body over 64 KiB with 413, counting bytes, with or without a Content-Length', async () => {
      const head = `{"seller_id":${json(w.seller.id)},"phone_number":"09121234567","amount":1000,"note":"`;
      /** A sale with a note field, padded to exactly `bytes` bytes with `filler`. */
      const padded = (bytes: number, filler = ' ') => {
        const room = bytes - Buffer.byteLength(head) - 2;
        const fillerBytes = Buffer.byteLength(filler);
        return `${head}${filler.repeat(Math.floor(room / fillerBytes))}${' '.repeat(room % fillerBytes)}"}`;
      };
      const send = (text: string, { chunked = false } = {}) => {
        const bytes = new TextEncoder().encode(text);
        const chunks: Uint8Array[] = [];
        for (let at = 0; at < bytes.length; at += 16_384) chunks.push(bytes.slice(at, at + 16_384));
        return unchanged(() =>
          sendEarlyAnswered(system.baseUrl, '/api/charge-sales', {
            method: 'POST',
            headers: { ...jsonHeaders, authorization: `Bearer ${w.seller.apiKey}` },
            chunks,
            length: !chunked,
          }),
        );
      };
      await fc.assert(
        fc.asyncProperty(
          fc.integer({ min: MAX_BODY_BYTES + 1, max: 2 * 1024 * 1024 }),
          fc.boolean(),
          async (size, chunked) => {
            const text = padded(size);
            expect(Buffer.byteLength(text)).toBe(size);
            expectRefused(await send(text, { chunked }), 413, 'payload_too_large');
          },
        ),
        { numRuns: 12 },
      );
      // Two-byte letters: fewer than 64 Ki characters, more than 64 KiB.
      const persian = padded(MAX_BODY_BYTES + 1, 'ش');
      expect(persian.length).toBeLessThan(MAX_BODY_BYTES);
      expectRefused(await send(persian), 413, 'payload_too_large');
      // Exactly 64 KiB is read: the unknown field is what is refused.
      expectFieldsNamed(await send(padded(MAX_BODY_BYTES)), ['note']);
      expectFieldsNamed(await send(padded(MAX_BODY_BYTES), { chunked: true }), ['note']);
    });

    it('refuses a __proto__ field with 400 naming it, and changes nothing', async () => {
      for (const text of [`{"is_active":false,"__proto__":{"is_active":true}}`, `{"__proto__":{"is_active":false}}`]) {
        const res = await unchanged(() => raw('PATCH', `/api/sellers/${w.seller.id}`, ADMIN_TOKEN, text));
        expectFieldsNamed(res, ['__proto__']);
      }
      // Deeper down it is part of a value, and the value is what is wrong.
      const nested = await unchanged(() =>
        raw('PATCH', `/api/sellers/${w.seller.id}`, ADMIN_TOKEN, `{"is_active":{"__proto__":false}}`),
      );
      expectFieldsNamed(nested, ['is_active']);
      const sale = await unchanged(() =>
        raw(
          'POST',
          '/api/charge-sales',
          w.seller.apiKey,
          `{"seller_id":${json(w.seller.id)},"phone_number":"09121234567","amount":1000,"__proto__":{"amount":1}}`,
        ),
      );
      expectFieldsNamed(sale, ['__proto__']);
    });

    it('answers at once a body written to make a parser backtrack', async () => {
      // Thousands of escaped quotes in a string that never ends: each quote could start a scan to the end.
      const text = `{"a":"${'\\"'.repeat(32_000)}`;
      const started = performance.now();
      quoteNonIntegerNumbers(text);
      expect(performance.now() - started).toBeLessThan(100);
      const res = await unchanged(() => raw('POST', '/api/charge-sales', w.seller.apiKey, text));
      expectRefused(res, 400, 'invalid_json');
    });

    it('refuses huge strings in any field with a 4xx, naming the field when it is invalid', async () => {
      const huge = 'x'.repeat(60_000);
      const hugeDigits = '9'.repeat(60_000);
      const cases: Array<[string, string, string, unknown, number, string[]]> = [
        ['POST', '/api/sellers', ADMIN_TOKEN, { name: huge, email: 'a@b.test', phone: '09121234567' }, 400, ['name']],
        [
          'POST',
          '/api/sellers',
          ADMIN_TOKEN,
          { name: 'S', email: `${huge}@b.test`, phone: '09121234567' },
          400,
          ['email'],
        ],
        ['POST', '/api/sellers', ADMIN_TOKEN, { name: 'S', email: 'a@b.test', phone: hugeDigits }, 400, ['phone']],
        ['POST', '/api/credit-requests', w.seller.apiKey, { seller: w.seller.id, amount: hugeDigits }, 400, ['amount']],
        [
          'POST',
          '/api/charge-sales',
          w.seller.apiKey,
          { seller_id: w.seller.id, phone_number: `09${hugeDigits}`, amount: 1 },
          400,
          ['phone_number'],
        ],
        ['POST', `/api/credit-requests/${w.pendingRequest}/process`, ADMIN_TOKEN, { action: huge }, 400, ['action']],
        ['POST', '/api/credit-requests', w.seller.apiKey, { seller: huge, amount: 1 }, 404, []],
        [
          'POST',
          '/api/charge-sales',
          w.seller.apiKey,
          { seller_id: huge, phone_number: '09121234567', amount: 1 },
          404,
          [],
        ],
      ];
      for (const [method, path, token, body, status, fields] of cases) {
        const res = await unchanged(() => client.request(method, path, { token, body }));
        if (status === 400) expectFieldsNamed(res, fields);
        else expectRefused(res, status, 'not_found');
      }
    });

    it('refuses an Idempotency-Key that is empty or over 255 characters, and a refused sale does not use up its key', async () => {
      const sale = { seller_id: w.seller.id, phone_number: '09121234567', amount: 1000 };
      for (const key of ['', 'k'.repeat(256), 'k'.repeat(4000)]) {
        const res = await unchanged(() =>
          client.post('/api/charge-sales', { token: w.seller.apiKey, body: sale, headers: { 'idempotency-key': key } }),
        );
        expectFieldsNamed(res, ['idempotency-key']);
      }
      const key = randomUUID();
      const refused = await unchanged(() =>
        client.post('/api/charge-sales', {
          token: w.seller.apiKey,
          body: { ...sale, amount: '4e3' },
          headers: { 'idempotency-key': key },
        }),
      );
      expectFieldsNamed(refused, ['amount']);
      const accepted = await client.post('/api/charge-sales', {
        token: w.seller.apiKey,
        body: sale,
        headers: { 'idempotency-key': key },
      });
      expect(accepted.status).toBe(202);
      expect((await waitForJob(client, accepted.body.job_id)).status).toBe('succeeded');
      await waitForQuiet(sql);
    });

    it('refuses, as another seller, a body naming an id that matches nothing with 404, and changes nothing', async () => {
      const unknownId = fc.oneof(fc.uuid(), invalidUuid, fc.string({ unit: 'grapheme', maxLength: 100 }));
      await fc.assert(
        fc.asyncProperty(unknownId, fc.constantFrom(ADMIN_TOKEN, w.other.apiKey), async (id, token) => {
          const request = await unchanged(() =>
            client.post('/api/credit-requests', { token, body: { seller: id, amount: 1000 } }),
          );
          expectRefused(request, 404, 'not_found');
          const sale = await unchanged(() =>
            client.post('/api/charge-sales', {
              token,
              body: { seller_id: id, phone_number: '09121234567', amount: 1000 },
            }),
          );
          expectRefused(sale, 404, 'not_found');
        }),
        { numRuns: 30 },
      );
    });
  });

  describe('queries and paths', () => {
    it.each(listEndpoints)('refuses bad query parameters of $name with 400 naming them', async (endpoint) => {
      const names = Object.keys(endpoint.params);
      const params = fc
        .record(
          Object.fromEntries(
            names.map((name) => [name, fc.option(endpoint.params[name] as fc.Arbitrary<string>, { nil: undefined })]),
          ),
        )
        .filter((chosen) => Object.values(chosen).some((value) => value !== undefined));
      const before = await dbSnapshot(sql);
      await fc.assert(
        fc.asyncProperty(params, fc.constantFrom(ADMIN_TOKEN, w.seller.apiKey), async (chosen, token) => {
          const given = Object.entries(chosen).filter((entry): entry is [string, string] => entry[1] !== undefined);
          const query = new URLSearchParams(given).toString();
          const res = await client.get(`${endpoint.path(w)}?${query}`, { token });
          // The cursor is read once the parameters are well formed: named when it is the only fault.
          const offending = given.map(([name]) => name);
          const checkedFirst = given.filter(([name, value]) => name !== 'cursor' || value.length > 200).map(([n]) => n);
          expectFieldsNamed(res, checkedFirst.length > 0 ? checkedFirst : offending, offending);
        }),
        { numRuns: RUNS },
      );
      expect(await dbSnapshot(sql)).toEqual(before);
    });

    it('refuses a query parameter given twice', async () => {
      for (const path of [
        '/api/sellers?limit=1&limit=2',
        '/api/transactions?type=charge_sale&type=credit_increase',
        `/api/credit-requests?seller=${w.seller.id}&seller=${w.other.id}`,
      ]) {
        const res = await client.get(path, { token: ADMIN_TOKEN });
        expectRefused(res, 400, 'validation_error');
      }
    });

    it('reads a cursor up to the largest ledger id, and refuses one past it with 400', async () => {
      for (const path of ['/api/transactions', '/api/phone-numbers', `/api/sellers/${w.seller.id}/transactions`]) {
        const top = await client.get(`${path}?cursor=${b64('9223372036854775807')}`, { token: ADMIN_TOKEN });
        expect(top.status, path).toBe(200);
        const past = await client.get(`${path}?cursor=${b64('9223372036854775808')}`, { token: ADMIN_TOKEN });
        expectFieldsNamed(past, ['cursor']);
      }
    });

    it.each(idRoutes)('answers 404 for $name when the id matches nothing, however it is written', async (route) => {
      await fc.assert(
        fc.asyncProperty(unknownIdSegment, async (segment) => {
          const res = await unchanged(() =>
            client.request(route.method, route.path(segment), { token: ADMIN_TOKEN, body: route.body }),
          );
          expectRefused(res, 404, 'not_found');
        }),
        { numRuns: 25 },
      );
    });

    it('answers 404 for a phone number that names nothing, however it is written', async () => {
      const segments = unknownIdSegment.filter((segment) => {
        let decoded = segment;
        try {
          decoded = decodeURIComponent(segment);
        } catch {}
        return !isIranMobile(decoded);
      });
      await fc.assert(
        fc.asyncProperty(segments, async (segment) => {
          const res = await client.get(`/api/phone-numbers/${segment}`, { token: ADMIN_TOKEN });
          expectRefused(res, 404, 'not_found');
        }),
        { numRuns: 40 },
      );
    });
  });
});
