import { randomUUID } from 'node:crypto';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testSql } from '../support/db.ts';
import { createSeller, fundSeller, type TestSeller, waitForJob } from '../support/factories.ts';
import { Client } from '../support/http.ts';
import { ADMIN_TOKEN, System } from '../support/system.ts';
import { dbSnapshot, expectRefused, waitForQuiet } from './hostile.ts';

/**
 * Who may do what, as the contract's tables say: every endpoint (the event stream, /admin and
 * /metrics aside) called by nobody, by a wrong token, by another seller, by the seller the data
 * belongs to, and by the admin. Whatever is refused leaves the database exactly as it was: a
 * seller never reads or moves another seller's money, and never processes a credit request.
 */

const callers = ['anonymous', 'bad token', 'other seller', 'self', 'admin'] as const;
type Who = (typeof callers)[number];

interface World {
  target: TestSeller;
  other: TestSeller;
  jobId: string;
  phoneNumber: string;
}

interface Row {
  call: string;
  method: string;
  /** With `{target}`, `{job}`, `{number}` for the target seller's things, `{pending}` for a fresh pending request of theirs. */
  path: string;
  body?: (w: World) => unknown;
  expected: Record<Who, number>;
}

const row = (
  call: string,
  [anonymous, badToken, otherSeller, self, admin]: [number, number, number, number, number],
  body?: (w: World) => unknown,
): Row => {
  const [method = 'GET', path = '/'] = call.split(' ');
  return {
    call,
    method,
    path,
    body,
    expected: { anonymous, 'bad token': badToken, 'other seller': otherSeller, self, admin },
  };
};

const newSeller = () => ({ name: 'New shop', email: `${randomUUID()}@shops.test`, phone: '09121234567' });

// biome-ignore format: aligned, the table reads like the contract's
const matrix: Row[] = [
  //   call                                             none  bad  other self admin
  row('POST /api/sellers',                              [401, 401, 403, 403, 201], newSeller),
  row('GET /api/sellers',                               [401, 401, 200, 200, 200]),
  row('GET /api/sellers/{target}',                      [401, 401, 403, 200, 200]),
  row('PATCH /api/sellers/{target}',                    [401, 401, 403, 403, 200], () => ({ is_active: true })),
  row('GET /api/sellers/{target}/balance',              [401, 401, 403, 200, 200]),
  row('GET /api/sellers/{target}/transactions',         [401, 401, 403, 200, 200]),
  row('GET /api/sellers/{target}/reconcile',            [401, 401, 403, 200, 200]),
  row('POST /api/credit-requests',                      [401, 401, 403, 201, 201], (w) => ({ seller: w.target.id, amount: 1000 })),
  row('GET /api/credit-requests',                       [401, 401, 200, 200, 200]),
  row('GET /api/credit-requests?seller={target}',       [401, 401, 403, 200, 200]),
  row('POST /api/credit-requests/{pending}/process',    [401, 401, 403, 403, 202], () => ({ action: 'approve' })),
  row('POST /api/charge-sales',                         [401, 401, 403, 202, 202], (w) => ({ seller_id: w.target.id, phone_number: w.phoneNumber, amount: 10 })),
  row('GET /api/jobs/{job}',                            [401, 401, 403, 200, 200]),
  row('GET /api/transactions',                          [401, 401, 200, 200, 200]),
  row('GET /api/transactions?seller_id={target}',       [401, 401, 403, 200, 200]),
  row('GET /api/phone-numbers',                         [401, 401, 403, 403, 200]),
  row('GET /api/phone-numbers/{number}',                [401, 401, 403, 403, 200]),
  row('GET /api/overview',                              [401, 401, 403, 403, 200]),
  row('GET /healthz',                                   [200, 200, 200, 200, 200]),
  row('GET /readyz',                                    [200, 200, 200, 200, 200]),
  row('GET /openapi.json',                              [200, 200, 200, 200, 200]),
  row('GET /docs',                                      [200, 200, 200, 200, 200]),
];

/** Tokens that are nobody's: near misses of real ones and malformed headers. */
const badAuthorizations = (w: World, storedHash: string) => [
  'Bearer not-a-key',
  `Bearer ${ADMIN_TOKEN}x`,
  `Bearer ${ADMIN_TOKEN.slice(0, -1)}`,
  `Bearer ${ADMIN_TOKEN.toUpperCase()}`,
  `Basic ${ADMIN_TOKEN}`,
  `Bearer ${w.target.apiKey.slice(0, -1)}`,
  `Bearer ${w.target.apiKey} ${w.target.apiKey}`,
  'Bearer',
  // What the database keeps is the key's hash: a stolen table gives no usable key.
  `Bearer ${storedHash}`,
];

const cells = matrix.flatMap((r) => callers.map((who) => ({ ...r, who, status: r.expected[who] })));

describe('access matrix', () => {
  let system: System;
  let client: Client;
  const sql = testSql();
  const w = {} as World;
  let badTokens: string[] = [];
  let nextBad = 0;

  beforeAll(async () => {
    system = await System.start({ workers: 1 });
    client = new Client(system.baseUrl);
    w.target = await createSeller(client, 'Target');
    w.other = await createSeller(client, 'Other');
    await fundSeller(client, w.target, 1_000_000);
    w.phoneNumber = '09127654321';
    const sale = await client.post('/api/charge-sales', {
      token: w.target.apiKey,
      body: { seller_id: w.target.id, phone_number: w.phoneNumber, amount: 1000 },
    });
    expect(sale.status).toBe(202);
    w.jobId = sale.body.job_id;
    expect((await waitForJob(client, w.jobId)).status).toBe('succeeded');
    const [stored] = await sql`select api_key_hash from sellers where id = ${w.target.id}`;
    badTokens = badAuthorizations(w, String(stored?.api_key_hash));
  });
  afterAll(async () => {
    await system?.stop();
    await sql.end();
  });

  function authorization(who: Who): Record<string, string> {
    switch (who) {
      case 'anonymous':
        return {};
      case 'bad token':
        return { authorization: badTokens[nextBad++ % badTokens.length] as string };
      case 'other seller':
        return { authorization: `Bearer ${w.other.apiKey}` };
      case 'self':
        return { authorization: `Bearer ${w.target.apiKey}` };
      case 'admin':
        return { authorization: `Bearer ${ADMIN_TOKEN}` };
    }
  }

  async function pathOf(template: string): Promise<string> {
    let path = template.replace('{target}', w.target.id).replace('{job}', w.jobId).replace('{number}', w.phoneNumber);
    if (path.includes('{pending}')) {
      const pending = await client.post('/api/credit-requests', {
        token: ADMIN_TOKEN,
        body: { seller: w.target.id, amount: 500 },
      });
      expect(pending.status).toBe(201);
      path = path.replace('{pending}', pending.body.id);
    }
    return path;
  }

  /** The seller a resource in an answer belongs to. */
  const ownerOf = (item: Record<string, unknown>) => item.seller_id ?? item.seller ?? item.id;

  for (const cell of cells)
    it(`${cell.call} as ${cell.who} → ${cell.status}`, async () => {
      const path = await pathOf(cell.path);
      await waitForQuiet(sql);
      const before = await dbSnapshot(sql);
      const res = await client.request(cell.method, path, {
        headers: authorization(cell.who),
        body: cell.body?.(w),
      });
      expect(res.status, JSON.stringify(res.body)).toBe(cell.status);

      if (cell.status === 401 || cell.status === 403) {
        expectRefused(res, cell.status, cell.status === 401 ? 'unauthorized' : 'forbidden');
        await waitForQuiet(sql);
        expect(await dbSnapshot(sql)).toEqual(before);
        return;
      }
      if (!path.startsWith('/api/') || cell.method !== 'GET') return;

      // What a seller reads is its own and nothing else; what the admin or the owner reads of the target is the target's.
      const caller = cell.who === 'other seller' ? w.other.id : cell.who === 'self' ? w.target.id : undefined;
      const items: Array<Record<string, unknown>> = Array.isArray(res.body.items) ? res.body.items : [res.body];
      if (caller) for (const item of items) expect(ownerOf(item), JSON.stringify(item)).toBe(caller);
      if (path.includes(w.target.id) || path.includes(w.jobId)) {
        for (const item of items) expect(ownerOf(item), JSON.stringify(item)).toBe(w.target.id);
      }
      if (caller === w.target.id || cell.who === 'admin') expect(items.length).toBeGreaterThan(0);
    });

  it('answers 401 to any token that is neither the admin token nor an issued key, and changes nothing', async () => {
    const protectedRows = matrix.filter((r) => r.path.startsWith('/api/'));
    await waitForQuiet(sql);
    const before = await dbSnapshot(sql);
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...protectedRows),
        fc.oneof(
          fc.string({ minLength: 1, maxLength: 300 }),
          fc.constantFrom(ADMIN_TOKEN, w.target.apiKey, w.other.apiKey).chain((real) =>
            fc.oneof(
              fc.string({ minLength: 1, maxLength: 3 }).map((extra) => `${real}${extra}`),
              fc.integer({ min: 1, max: real.length - 1 }).map((cut) => real.slice(0, cut)),
              fc.integer({ min: 0, max: real.length - 1 }).map((at) => {
                const flipped = real[at] === 'a' ? 'b' : 'a';
                return `${real.slice(0, at)}${flipped}${real.slice(at + 1)}`;
              }),
            ),
          ),
        ),
        fc.constantFrom('Bearer ', 'bearer ', 'Bearer   ', 'Token ', ''),
        async (r, token, scheme) => {
          fc.pre(![ADMIN_TOKEN, w.target.apiKey, w.other.apiKey].includes(token.trim()));
          const res = await client.request(r.method, await pathOf(r.path.replace('{pending}', randomUUID())), {
            headers: { authorization: `${scheme}${token}` },
            body: r.body?.(w),
          });
          expectRefused(res, 401, 'unauthorized');
        },
      ),
      { numRuns: 80 },
    );
    expect(await dbSnapshot(sql)).toEqual(before);
  });

  it('lets a deactivated seller read its own data but not sell, and never another seller', async () => {
    const shop = await createSeller(client, 'Soon inactive');
    const off = await client.patch(`/api/sellers/${shop.id}`, { token: ADMIN_TOKEN, body: { is_active: false } });
    expect(off.status).toBe(200);
    expect((await client.get(`/api/sellers/${shop.id}/balance`, { token: shop.apiKey })).status).toBe(200);
    expect((await client.get(`/api/sellers/${w.target.id}/balance`, { token: shop.apiKey })).status).toBe(403);
    const before = await dbSnapshot(sql);
    const sale = await client.post('/api/charge-sales', {
      token: shop.apiKey,
      body: { seller_id: shop.id, phone_number: '09121234567', amount: 1 },
    });
    expectRefused(sale, 403, 'seller_inactive');
    expect(await dbSnapshot(sql)).toEqual(before);
  });

  describe('the order of checks: 401 (who are you), then 400 (is it well formed), then 404 / 403', () => {
    const unknownId = '00000000-0000-7000-8000-000000000000';
    const sale = (seller: string, amount: unknown = 1000, phone = '09121234567') => ({
      seller_id: seller,
      phone_number: phone,
      amount,
    });
    interface Check {
      who: Who;
      call: string;
      body?: (w: World) => unknown;
      raw?: { text: string; contentType: string };
      status: number;
    }
    const check = (who: Who, call: string, status: number, body?: (w: World) => unknown): Check => ({
      who,
      call,
      status,
      body,
    });
    const raw = (who: Who, call: string, status: number, text: string, contentType = 'application/json'): Check => ({
      who,
      call,
      status,
      raw: { text, contentType },
    });

    // biome-ignore format: aligned, each pair differs only in what is wrong
    const checks: Check[] = [
      raw('anonymous',       'POST /api/charge-sales',                                  401, '{"amount": 4e3'),
      raw('bad token',       'POST /api/charge-sales',                                  401, 'amount=1000', 'text/plain'),
      raw('bad token',       'POST /api/charge-sales',                                  401, `{"a":"${'x'.repeat(70_000)}"}`),
      check('anonymous',     'GET /api/transactions?limit=0',                           401),
      check('bad token',     'GET /api/sellers/not-an-id',                              401),
      check('other seller',  'POST /api/sellers',                                       400, () => ({ name: '' })),
      check('other seller',  'POST /api/sellers',                                       403, newSeller),
      check('other seller',  'PATCH /api/sellers/{target}',                             400, () => ({ is_active: 'no' })),
      check('other seller',  'PATCH /api/sellers/{target}',                             403, () => ({ is_active: false })),
      check('other seller',  'POST /api/charge-sales',                                  400, (w) => sale(w.target.id, '4e3')),
      check('other seller',  'POST /api/charge-sales',                                  403, (w) => sale(w.target.id)),
      check('other seller',  'POST /api/credit-requests',                               400, (w) => ({ seller: w.target.id, amount: 0 })),
      check('other seller',  'POST /api/credit-requests',                               403, (w) => ({ seller: w.target.id, amount: 1 })),
      check('self',          'POST /api/credit-requests/{pending}/process',             400, () => ({ action: 'yes' })),
      check('self',          'POST /api/credit-requests/{pending}/process',             403, () => ({ action: 'approve' })),
      check('admin',         `POST /api/credit-requests/${unknownId}/process`,          400, () => ({ action: 'yes' })),
      check('admin',         `POST /api/credit-requests/${unknownId}/process`,          404, () => ({ action: 'approve' })),
      check('admin',         'POST /api/charge-sales',                                  400, () => sale(unknownId, 1, '0912')),
      check('admin',         'POST /api/charge-sales',                                  404, () => sale(unknownId)),
      check('admin',         `GET /api/sellers/${unknownId}/transactions?limit=0`,      400),
      check('admin',         `GET /api/sellers/${unknownId}/transactions?limit=1`,      404),
      check('other seller',  'GET /api/sellers/{target}/transactions?cursor=junk',      400),
      check('other seller',  'GET /api/sellers/{target}/transactions',                  403),
      check('other seller',  'GET /api/transactions?seller_id={target}&type=sale',      400),
      check('other seller',  'GET /api/transactions?seller_id={target}',                403),
      check('other seller',  'GET /api/credit-requests?seller={target}&status=done',    400),
      check('other seller',  'GET /api/credit-requests?seller={target}',                403),
      check('self',          'GET /api/phone-numbers?limit=501',                        400),
      check('self',          'GET /api/phone-numbers',                                  403),
    ];

    for (const c of checks) {
      it(`${c.call} as ${c.who}${c.raw ? ` with ${c.raw.text.slice(0, 20)}…` : ''} → ${c.status}`, async () => {
        const [method = 'GET', template = '/'] = c.call.split(' ');
        const path = await pathOf(template);
        await waitForQuiet(sql);
        const before = await dbSnapshot(sql);
        const headers = authorization(c.who);
        const res = c.raw
          ? await client.request(method, path, {
              rawBody: c.raw.text,
              headers: { ...headers, 'content-type': c.raw.contentType },
            })
          : await client.request(method, path, { headers, body: c.body?.(w) });
        const codes: Record<number, string> = {
          400: 'validation_error',
          401: 'unauthorized',
          403: 'forbidden',
          404: 'not_found',
        };
        expectRefused(res, c.status, codes[c.status]);
        expect(await dbSnapshot(sql)).toEqual(before);
      });
    }
  });
});
