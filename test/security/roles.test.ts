import { randomUUID } from 'node:crypto';
import { SIMULATOR_NUMBERS } from '@cs/delivery';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testSql } from '../support/db.ts';
import { createSeller, fundSeller, type TestSeller, waitForJob } from '../support/factories.ts';
import { Client } from '../support/http.ts';
import { ADMIN_TOKEN, System } from '../support/system.ts';
import { dbSnapshot, expectRefused, waitForQuiet } from './hostile.ts';

/**
 * Who may do what by role, as the contract says: a viewer reads what an admin reads except the
 * audit trail and the operators; an approver also processes credit requests; an admin (a named
 * one, or the bootstrap ADMIN_TOKEN) also manages sellers and operators and reads the audit trail.
 * A seller's key is there for contrast. Every /api route is called by each; whatever is refused
 * leaves the database exactly as it was, operators, sessions, keys and the audit trail included.
 */

const callers = ['viewer', 'approver', 'admin', 'bootstrap', 'seller', 'other seller'] as const;
type Who = (typeof callers)[number];

interface Operator {
  id: string;
  email: string;
  token: string;
}

interface World {
  target: TestSeller;
  other: TestSeller;
  jobId: string;
  phoneNumber: string;
  /** An operator no cell calls as, for the routes that change an operator. */
  subject: Operator;
  operators: Record<'viewer' | 'approver' | 'admin', Operator>;
}

/** `null`: the cell does not exist (a seller or the bootstrap admin has no operator id of its own). */
type Expected = Record<Who, number | null>;

interface Row {
  call: string;
  method: string;
  /**
   * `{target}`, `{job}`, `{number}`: the target seller's things; `{pending}`: a fresh pending request;
   * `{subject}`: another operator; `{me}`: the calling operator itself; `{failed}`: a fresh failed
   * webhook delivery of the target's.
   */
  path: string;
  body?: (w: World) => unknown;
  expected: Expected;
}

const row = (
  call: string,
  [viewer, approver, admin, bootstrap, seller, other]: [
    number,
    number,
    number,
    number | null,
    number | null,
    number | null,
  ],
  body?: (w: World) => unknown,
): Row => {
  const [method = 'GET', path = '/'] = call.split(' ');
  return {
    call,
    method,
    path,
    body,
    expected: { viewer, approver, admin, bootstrap, seller, 'other seller': other },
  };
};

const newSeller = () => ({ name: 'New shop', email: `${randomUUID()}@shops.test`, phone: '09121234567' });
const newOperator = () => ({ email: `${randomUUID()}@ops.test`, name: 'New operator', role: 'admin' });
/** A public address, so the default rules take it; nothing here waits for it to answer. */
const TARGET_WEBHOOK = 'https://93.184.215.14/hooks/charge-sales';

// biome-ignore format: aligned, the table reads like the contract's
const matrix: Row[] = [
  //   call                                             viewer appr admin boot seller other
  row('POST /api/sellers',                              [403, 403, 201, 201, 403, 403], newSeller),
  row('GET /api/sellers',                               [200, 200, 200, 200, 200, 200]),
  row('GET /api/sellers/{target}',                      [200, 200, 200, 200, 200, 403]),
  row('PATCH /api/sellers/{target}',                    [403, 403, 200, 200, 403, 403], () => ({ is_active: true })),
  row('GET /api/sellers/{target}/balance',              [200, 200, 200, 200, 200, 403]),
  row('GET /api/sellers/{target}/transactions',         [200, 200, 200, 200, 200, 403]),
  row('GET /api/sellers/{target}/reconcile',            [200, 200, 200, 200, 200, 403]),
  row('POST /api/sellers/{target}/api-key',             [403, 403, 201, 201, 201, 403]),
  row('POST /api/credit-requests',                      [403, 403, 201, 201, 201, 403], (w) => ({ seller: w.target.id, amount: 1000 })),
  row('GET /api/credit-requests',                       [200, 200, 200, 200, 200, 200]),
  row('GET /api/credit-requests?seller={target}',       [200, 200, 200, 200, 200, 403]),
  row('POST /api/credit-requests/{pending}/process',    [403, 202, 202, 202, 403, 403], () => ({ action: 'approve' })),
  row('POST /api/charge-sales',                         [403, 403, 202, 202, 202, 403], (w) => ({ seller_id: w.target.id, phone_number: w.phoneNumber, amount: 10 })),
  row('GET /api/jobs/{job}',                            [200, 200, 200, 200, 200, 403]),
  row('GET /api/transactions',                          [200, 200, 200, 200, 200, 200]),
  row('GET /api/transactions?seller_id={target}',       [200, 200, 200, 200, 200, 403]),
  row('GET /api/phone-numbers',                         [200, 200, 200, 200, 403, 403]),
  row('GET /api/phone-numbers/{number}',                [200, 200, 200, 200, 403, 403]),
  row('GET /api/overview',                              [200, 200, 200, 200, 403, 403]),
  row('POST /api/operators',                            [403, 403, 201, 201, 403, 403], newOperator),
  row('GET /api/operators',                             [403, 403, 200, 200, 403, 403]),
  row('PATCH /api/operators/{subject}',                 [403, 403, 200, 200, 403, 403], () => ({ role: 'viewer' })),
  row('PATCH /api/operators/{me}',                      [403, 403, 200, null, null, null], () => ({ role: 'admin', is_active: true })),
  row('POST /api/operators/{subject}/token',            [403, 403, 201, 201, 403, 403]),
  row('POST /api/operators/{me}/token',                 [201, 201, 201, null, null, null]),
  row('POST /api/operators/{subject}/sessions/revoke',  [403, 403, 204, 204, 403, 403]),
  row('POST /api/operators/{me}/sessions/revoke',       [204, 204, 204, null, null, null]),
  row('GET /api/audit',                                 [403, 403, 200, 200, 403, 403]),
  row('GET /api/deliveries',                            [200, 200, 200, 200, 403, 403]),
  row('GET /api/deliveries/{job}',                      [200, 200, 200, 200, 403, 403]),
  // The target's sale is delivered already: whoever may resolve gets 409, and nothing moves.
  row('POST /api/deliveries/{job}/resolve',             [403, 409, 409, 409, 403, 403], () => ({ outcome: 'refund' })),
  row('PUT /api/sellers/{target}/webhook',              [403, 403, 200, 200, 200, 403], () => ({ url: TARGET_WEBHOOK })),
  row('GET /api/sellers/{target}/webhook',              [200, 200, 200, 200, 200, 403]),
  row('POST /api/sellers/{target}/webhook/secret',      [403, 403, 200, 200, 200, 403]),
  row('GET /api/sellers/{target}/webhook/deliveries',   [200, 200, 200, 200, 200, 403]),
  row('POST /api/webhook-deliveries/{failed}/retry',    [403, 403, 202, 202, 403, 403]),
  row('DELETE /api/sellers/{target}/webhook',           [403, 403, 204, 204, 204, 403]),
];

const cells = matrix.flatMap((r) =>
  callers.flatMap((who) => {
    const status = r.expected[who];
    return status === null ? [] : [{ ...r, who, status }];
  }),
);

type Sql = ReturnType<typeof testSql>;

/**
 * `dbSnapshot` and what it leaves out: the operators (roles, activity, tokens), their open
 * sessions, every seller's key and the audit trail. A refused call changes none of it.
 */
async function fullSnapshot(sql: Sql) {
  const [extra] = await sql`
    select
      (select count(*) from operators) as operators,
      (select md5(coalesce(string_agg(id::text || role || is_active::text || token_hash, ',' order by id), ''))
         from operators) as operator_state,
      (select count(*) from operator_sessions where ended_at is null) as open_sessions,
      (select md5(coalesce(string_agg(id::text || api_key_hash || is_active::text, ',' order by id), ''))
         from sellers) as seller_keys,
      (select count(*) from audit_events) as audit_rows,
      (select md5(coalesce(string_agg(seller_id::text || url || secret || is_active::text, ',' order by seller_id), ''))
         from webhook_endpoints) as webhooks`;
  return { ...(await dbSnapshot(sql)), ...extra };
}

async function createOperator(client: Client, role: 'viewer' | 'approver' | 'admin'): Promise<Operator> {
  const email = `${role}-${randomUUID()}@ops.test`;
  const res = await client.post('/api/operators', { token: ADMIN_TOKEN, body: { email, name: `A ${role}`, role } });
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  expect(res.body).toMatchObject({ email, role, is_active: true, token: expect.stringMatching(/^op_/) });
  return { id: res.body.id, email, token: res.body.token };
}

describe('roles: every /api route by viewer, approver, admin, bootstrap and sellers', () => {
  let system: System;
  let client: Client;
  const sql = testSql();
  const w = {} as World;

  beforeAll(async () => {
    system = await System.start({ workers: 1 });
    client = new Client(system.baseUrl);
    w.target = await createSeller(client, 'Target');
    w.other = await createSeller(client, 'Other');
    // Set before the target's first events, so that it has webhook deliveries to list.
    const webhook = await client.request('PUT', `/api/sellers/${w.target.id}/webhook`, {
      token: ADMIN_TOKEN,
      body: { url: TARGET_WEBHOOK },
    });
    expect(webhook.status, JSON.stringify(webhook.body)).toBe(200);
    await fundSeller(client, w.target, 1_000_000);
    await fundSeller(client, w.other, 5_000);
    w.phoneNumber = '09127654321';
    const sale = await client.post('/api/charge-sales', {
      token: w.target.apiKey,
      body: { seller_id: w.target.id, phone_number: w.phoneNumber, amount: 1000 },
    });
    expect(sale.status).toBe(202);
    w.jobId = sale.body.job_id;
    expect((await waitForJob(client, w.jobId)).status).toBe('succeeded');
    // Declined and refunded: a delivery with a row of its own, for the list of deliveries (a top-up
    // delivered at the first answer, like the one above, is read from its job only).
    const declined = await client.post('/api/charge-sales', {
      token: w.target.apiKey,
      body: { seller_id: w.target.id, phone_number: SIMULATOR_NUMBERS.declines, amount: 1000 },
    });
    expect((await waitForJob(client, declined.body.job_id)).status).toBe('rejected');
    w.operators = {
      viewer: await createOperator(client, 'viewer'),
      approver: await createOperator(client, 'approver'),
      admin: await createOperator(client, 'admin'),
    };
    w.subject = await createOperator(client, 'viewer');
  });
  afterAll(async () => {
    await system?.stop();
    await sql.end();
  });

  function tokenOf(who: Who): string {
    switch (who) {
      case 'viewer':
      case 'approver':
      case 'admin':
        return w.operators[who].token;
      case 'bootstrap':
        return ADMIN_TOKEN;
      case 'seller':
        return w.target.apiKey;
      case 'other seller':
        return w.other.apiKey;
    }
  }

  async function pathOf(template: string, who: Who): Promise<string> {
    let path = template
      .replace('{target}', w.target.id)
      .replace('{job}', w.jobId)
      .replace('{number}', w.phoneNumber)
      .replace('{subject}', w.subject.id);
    if (path.includes('{me}')) {
      if (who !== 'viewer' && who !== 'approver' && who !== 'admin') throw new Error(`${who} has no operator id`);
      path = path.replace('{me}', w.operators[who].id);
    }
    if (path.includes('{pending}')) {
      // A seller of its own each time: the refused cells leave their requests pending.
      const owner = await createSeller(client, 'Requester');
      const pending = await client.post('/api/credit-requests', {
        token: ADMIN_TOKEN,
        body: { seller: owner.id, amount: 500 },
      });
      expect(pending.status).toBe(201);
      path = path.replace('{pending}', pending.body.id);
    }
    if (path.includes('{failed}')) {
      const id = `msg_${randomUUID().replaceAll('-', '')}`;
      await sql`
        insert into webhook_deliveries (id, seller_id, event_type, payload, status, attempts)
        values (${id}, ${w.target.id}, 'credit_request.approved', ${sql.json({ id, type: 'credit_request.approved', data: {} })},
                'failed', 3)`;
      path = path.replace('{failed}', id);
    }
    return path;
  }

  /** A new token or key handed out by a cell replaces the caller's (or the target's) old one. */
  function keepNewCredentials(cell: (typeof cells)[number], body: Record<string, unknown>): void {
    if (cell.path === '/api/operators/{me}/token') {
      const me = w.operators[cell.who as 'viewer' | 'approver' | 'admin'];
      me.token = String(body.token);
    }
    if (cell.path === '/api/operators/{subject}/token') w.subject.token = String(body.token);
    if (cell.path === '/api/sellers/{target}/api-key') w.target.apiKey = String(body.api_key);
  }

  /** The seller a resource in an answer belongs to. */
  const ownerOf = (item: Record<string, unknown>) => item.seller_id ?? item.seller ?? item.id;

  for (const cell of cells)
    it(`${cell.call} as ${cell.who} → ${cell.status}`, async () => {
      const path = await pathOf(cell.path, cell.who);
      await waitForQuiet(sql);
      const before = await fullSnapshot(sql);
      const res = await client.request(cell.method, path, { token: tokenOf(cell.who), body: cell.body?.(w) });
      expect(res.status, JSON.stringify(res.body)).toBe(cell.status);

      if (cell.status === 403) {
        expectRefused(res, 403, 'forbidden');
        await waitForQuiet(sql);
        expect(await fullSnapshot(sql)).toEqual(before);
        return;
      }
      if (cell.status === 201) keepNewCredentials(cell, res.body);
      if (cell.method !== 'GET') return;

      // What an operator reads of the target is the target's; what a seller reads is its own.
      const items: Array<Record<string, unknown>> = Array.isArray(res.body.items) ? res.body.items : [res.body];
      if (path.includes(w.target.id) || path.includes(w.jobId)) {
        for (const item of items) expect(ownerOf(item), JSON.stringify(item)).toBe(w.target.id);
      }
      const seller = cell.who === 'seller' ? w.target.id : cell.who === 'other seller' ? w.other.id : undefined;
      if (seller) for (const item of items) expect(ownerOf(item), JSON.stringify(item)).toBe(seller);
      if (cell.who !== 'other seller') expect(items.length, JSON.stringify(res.body)).toBeGreaterThan(0);
      // Operators read every seller's data, not a seller's view of it.
      if (!seller && (path === '/api/sellers' || path === '/api/transactions')) {
        expect(new Set(items.map(ownerOf)).size).toBeGreaterThan(1);
      }
    });

  describe('the order of checks still holds for operators: 400 (well formed) before 403 (allowed)', () => {
    // biome-ignore format: aligned, each pair differs only in what is wrong
    const checks: Array<{ who: Who; call: string; status: number; body: () => unknown }> = [
      { who: 'viewer',   call: 'POST /api/sellers',                          status: 400, body: () => ({ name: '' }) },
      { who: 'viewer',   call: 'POST /api/operators',                        status: 400, body: () => ({ email: 'nope', role: 'root' }) },
      { who: 'approver', call: 'POST /api/operators',                        status: 400, body: () => ({ ...newOperator(), role: 'owner' }) },
      { who: 'approver', call: 'POST /api/operators',                        status: 403, body: newOperator },
      { who: 'viewer',   call: 'POST /api/credit-requests/{pending}/process', status: 400, body: () => ({ action: 'yes' }) },
      { who: 'viewer',   call: 'POST /api/credit-requests/{pending}/process', status: 403, body: () => ({ action: 'approve' }) },
      { who: 'approver', call: 'PATCH /api/operators/{me}',                  status: 400, body: () => ({ role: 'superuser' }) },
      { who: 'approver', call: 'PATCH /api/operators/{me}',                  status: 403, body: () => ({ role: 'admin' }) },
      { who: 'viewer',   call: 'PATCH /api/sellers/{target}',                status: 400, body: () => ({ is_active: 'no' }) },
      { who: 'viewer',   call: 'PATCH /api/sellers/{target}',                status: 403, body: () => ({ is_active: false }) },
      { who: 'viewer',   call: 'PUT /api/sellers/{target}/webhook',          status: 400, body: () => ({ url: 42 }) },
      { who: 'viewer',   call: 'PUT /api/sellers/{target}/webhook',          status: 403, body: () => ({ url: TARGET_WEBHOOK }) },
    ];
    const codes: Record<number, string> = { 400: 'validation_error', 403: 'forbidden' };
    for (const c of checks)
      it(`${c.call} as ${c.who} → ${c.status}`, async () => {
        const [method = 'GET', template = '/'] = c.call.split(' ');
        const path = await pathOf(template, c.who);
        await waitForQuiet(sql);
        const before = await fullSnapshot(sql);
        const res = await client.request(method, path, { token: tokenOf(c.who), body: c.body() });
        expectRefused(res, c.status, codes[c.status]);
        expect(await fullSnapshot(sql)).toEqual(before);
      });
  });

  it("refuses a deactivated operator's token at once, on the API and the pages, and changes nothing", async () => {
    const leaving = await createOperator(client, 'approver');
    expect((await client.get('/api/sellers', { token: leaving.token })).status).toBe(200);
    const off = await client.patch(`/api/operators/${leaving.id}`, {
      token: w.operators.admin.token,
      body: { is_active: false },
    });
    expect(off.status, JSON.stringify(off.body)).toBe(200);
    expect(off.body).toMatchObject({ id: leaving.id, is_active: false });

    const owner = await createSeller(client, 'Left pending');
    const pending = await client.post('/api/credit-requests', {
      token: owner.apiKey,
      body: { seller: owner.id, amount: 700 },
    });
    await waitForQuiet(sql);
    const afterRequest = await fullSnapshot(sql);
    for (const [method, path, body] of [
      ['GET', '/api/sellers', undefined],
      ['GET', `/api/sellers/${w.target.id}/balance`, undefined],
      ['POST', `/api/credit-requests/${pending.body.id}/process`, { action: 'approve' }],
      ['POST', `/api/operators/${leaving.id}/token`, undefined],
      ['POST', `/api/operators/${leaving.id}/sessions/revoke`, undefined],
    ] as const) {
      expectRefused(await client.request(method, path, { token: leaving.token, body }), 401, 'unauthorized');
    }
    const page = await client.get('/admin', { token: leaving.token });
    expect(page.status).toBe(401);
    await waitForQuiet(sql);
    expect(await fullSnapshot(sql)).toEqual(afterRequest);
  });

  it("rotates an operator's token, by the operator itself and by an admin: the old one is 401 at once, the new one works", async () => {
    const op = await createOperator(client, 'approver');
    const byItself = await client.post(`/api/operators/${op.id}/token`, { token: op.token });
    expect(byItself.status, JSON.stringify(byItself.body)).toBe(201);
    const second = String(byItself.body.token);
    expect(second).toMatch(/^op_/);
    expect(second).not.toBe(op.token);
    expectRefused(await client.get('/api/sellers', { token: op.token }), 401, 'unauthorized');
    expect((await client.get('/api/sellers', { token: second })).status).toBe(200);

    const byAdmin = await client.post(`/api/operators/${op.id}/token`, { token: w.operators.admin.token });
    expect(byAdmin.status, JSON.stringify(byAdmin.body)).toBe(201);
    const third = String(byAdmin.body.token);
    for (const old of [op.token, second]) {
      expectRefused(await client.get('/api/sellers', { token: old }), 401, 'unauthorized');
    }
    // The new token carries the operator's role: an approver processes, and still may not manage operators.
    const owner = await createSeller(client, 'Rotated approver');
    const pending = await client.post('/api/credit-requests', {
      token: owner.apiKey,
      body: { seller: owner.id, amount: 900 },
    });
    const processed = await client.post(`/api/credit-requests/${pending.body.id}/process`, {
      token: third,
      headers: { prefer: 'wait=20' },
      body: { action: 'approve' },
    });
    expect(processed.status, JSON.stringify(processed.body)).toBe(200);
    expect(processed.body.status).toBe('succeeded');
    expectRefused(await client.get('/api/operators', { token: third }), 403, 'forbidden');
  });

  it('applies a role change at once: a viewer made approver processes; an approver made viewer no longer does', async () => {
    const op = await createOperator(client, 'viewer');
    const owner = await createSeller(client, 'Role change');
    const request = async () =>
      (await client.post('/api/credit-requests', { token: owner.apiKey, body: { seller: owner.id, amount: 300 } })).body
        .id as string;
    const first = await request();
    expectRefused(
      await client.post(`/api/credit-requests/${first}/process`, { token: op.token, body: { action: 'approve' } }),
      403,
      'forbidden',
    );
    const up = await client.patch(`/api/operators/${op.id}`, { token: ADMIN_TOKEN, body: { role: 'approver' } });
    expect(up.body).toMatchObject({ role: 'approver' });
    const processed = await client.post(`/api/credit-requests/${first}/process`, {
      token: op.token,
      body: { action: 'approve' },
    });
    expect(processed.status).toBe(202);
    expect((await waitForJob(client, processed.body.job_id)).status).toBe('succeeded');

    const down = await client.patch(`/api/operators/${op.id}`, { token: ADMIN_TOKEN, body: { role: 'viewer' } });
    expect(down.body).toMatchObject({ role: 'viewer' });
    const second = await request();
    await waitForQuiet(sql);
    const before = await fullSnapshot(sql);
    expectRefused(
      await client.post(`/api/credit-requests/${second}/process`, { token: op.token, body: { action: 'approve' } }),
      403,
      'forbidden',
    );
    expect(await fullSnapshot(sql)).toEqual(before);
  });
});
