import { randomUUID } from 'node:crypto';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { testSql } from '../support/db.ts';
import { createSeller, type TestSeller, waitForJob } from '../support/factories.ts';
import { Client } from '../support/http.ts';
import { BROWSER, CookieJar, hiddenValue } from '../support/pages.ts';
import { ADMIN_TOKEN, System } from '../support/system.ts';

/**
 * The audit trail: every effect the contract lists writes exactly one row, in the transaction of
 * the effect, naming who acted as their credentials say (never as a body says), what they did, to
 * what, from which address, with the details of the effect. A refused effect writes nothing, and
 * the rows cannot be changed afterwards, neither by the application's database role nor by the
 * tables' owner.
 */

/** Credit requests above this need two different operators in this file's system. */
const SECOND_APPROVAL_ABOVE = 1_000_000;
const LOOPBACK = /^(?:::ffff:)?127\.0\.0\.1$/;

type Role = 'admin' | 'approver' | 'viewer';
interface Operator {
  id: string;
  email: string;
  token: string;
  password: string;
}

interface AuditEvent {
  id: string;
  at: string;
  actor: { type: 'operator' | 'seller' | 'bootstrap'; id: string | null; email: string | null };
  action: string;
  target_type: string;
  target_id: string;
  ip: string | null;
  details: Record<string, unknown>;
}

const BOOTSTRAP_ACTOR = { type: 'bootstrap', id: null, email: null } as const;
const operatorActor = (op: Operator) => ({ type: 'operator', id: op.id, email: op.email });

describe('the audit trail', () => {
  let system: System;
  let client: Client;
  const sql = testSql();
  /** A named admin, the approvers and the viewer most tests act as. */
  const ops = {} as Record<'admin' | 'approver' | 'second' | 'viewer', Operator>;

  async function createOperator(role: Role, withPassword = true): Promise<Operator> {
    const email = `${role}-${randomUUID()}@ops.test`;
    const password = `correct horse ${randomUUID()}`;
    const res = await client.post('/api/operators', {
      token: ADMIN_TOKEN,
      body: { email, name: `An ${role}`, role, ...(withPassword ? { password } : {}) },
    });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    return { id: res.body.id, email, token: res.body.token, password };
  }

  /** Every row of the trail matching the filter, over every page, as an admin reads it. */
  async function audit(query: Record<string, string>, token = ADMIN_TOKEN): Promise<AuditEvent[]> {
    const rows: AuditEvent[] = [];
    let cursor: string | null = null;
    do {
      const params = new URLSearchParams({ ...query, limit: '500', ...(cursor ? { cursor } : {}) });
      const res = await client.get(`/api/audit?${params}`, { token });
      expect(res.status, JSON.stringify(res.body)).toBe(200);
      rows.push(...res.body.items);
      cursor = res.body.next_cursor;
    } while (cursor);
    return rows;
  }

  /** The one row of `action` on `targetId`: there must be exactly one. */
  async function oneRow(action: string, targetId: string): Promise<AuditEvent> {
    const rows = await audit({ action, target_id: targetId });
    expect(rows, JSON.stringify(rows)).toHaveLength(1);
    const [row] = rows as [AuditEvent];
    expect(row.ip, JSON.stringify(row)).toMatch(LOOPBACK);
    expect(new Date(row.at).getTime()).toBeGreaterThan(Date.now() - 120_000);
    return row;
  }

  async function pendingRequest(seller: TestSeller, amount: number): Promise<string> {
    const res = await client.post('/api/credit-requests', {
      token: seller.apiKey,
      body: { seller: seller.id, amount },
    });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    return res.body.id;
  }

  /** Processes a request as `token` and waits for its job's outcome. */
  async function processRequest(requestId: string, action: 'approve' | 'reject', token: string) {
    const res = await client.post(`/api/credit-requests/${requestId}/process`, { token, body: { action } });
    expect(res.status, JSON.stringify(res.body)).toBe(202);
    return waitForJob(client, res.body.job_id);
  }

  async function auditCount(): Promise<number> {
    const [row] = await sql`select count(*)::int as n from audit_events`;
    return Number(row?.n);
  }

  async function requestStatus(requestId: string): Promise<string> {
    const [row] = await sql`select status from credit_requests where id = ${requestId}`;
    return String(row?.status);
  }

  /** A request as a browser makes it: no redirect following, cookies from the jar. */
  async function browse(path: string, init: RequestInit & { jar?: CookieJar; form?: Record<string, string> } = {}) {
    const headers = new Headers(init.headers);
    if (!headers.has('accept')) headers.set('accept', BROWSER);
    if (init.jar?.header) headers.set('cookie', init.jar.header);
    let body = init.body;
    if (init.form) {
      body = new URLSearchParams(init.form);
      headers.set('origin', system.baseUrl);
    }
    const res = await fetch(`${system.baseUrl}${path}`, { ...init, headers, body, redirect: 'manual' });
    init.jar?.keep(res);
    return res;
  }

  /** Posts the sign-in form with these fields; returns the answer and the browser's cookies. */
  async function signIn(fields: Record<string, string>) {
    const jar = new CookieJar();
    const form = await browse('/admin/login', { jar });
    expect(form.status).toBe(200);
    const res = await browse('/admin/login', {
      method: 'POST',
      jar,
      form: { ...fields, _csrf: hiddenValue(await form.text(), '_csrf'), next: '/admin' },
    });
    return { res, jar };
  }

  /** Signs in and returns the cookies and the session's CSRF token. */
  async function session(fields: Record<string, string>) {
    const { res, jar } = await signIn(fields);
    expect(res.status).toBe(303);
    const home = await browse('/admin', { jar });
    expect(home.status).toBe(200);
    return { jar, csrf: hiddenValue(await home.text(), '_csrf') };
  }

  beforeAll(async () => {
    system = await System.start({
      workers: 1,
      env: { CREDIT_SECOND_APPROVAL_ABOVE: String(SECOND_APPROVAL_ABOVE) },
    });
    client = new Client(system.baseUrl);
    ops.admin = await createOperator('admin');
    ops.approver = await createOperator('approver');
    ops.second = await createOperator('approver');
    ops.viewer = await createOperator('viewer');
  });
  afterAll(async () => {
    await system?.stop();
    await sql.end();
  });

  describe('one row per effect, with the actor of the credentials', () => {
    it('operator.created: by a named admin, naming the new operator, not the actor, from the body', async () => {
      const email = `new-${randomUUID()}@ops.test`;
      const res = await client.post('/api/operators', {
        token: ops.admin.token,
        body: { email, name: 'Created by a named admin', role: 'approver', password: 'a long enough password' },
      });
      expect(res.status, JSON.stringify(res.body)).toBe(201);
      const row = await oneRow('operator.created', res.body.id);
      expect(row).toMatchObject({
        actor: operatorActor(ops.admin),
        target_type: 'operator',
        target_id: res.body.id,
        details: { email, role: 'approver', password: true },
      });
      // The secrets never reach the trail.
      expect(JSON.stringify(row)).not.toContain(res.body.token);
      expect(JSON.stringify(row)).not.toContain('a long enough password');

      const tokenOnly = await client.post('/api/operators', {
        token: ADMIN_TOKEN,
        body: { email: `token-${randomUUID()}@ops.test`, name: 'Token only', role: 'viewer' },
      });
      expect(await oneRow('operator.created', tokenOnly.body.id)).toMatchObject({
        actor: BOOTSTRAP_ACTOR,
        details: { role: 'viewer', password: false },
      });
    });

    it('operator.updated: a role change and a deactivation, with the sessions it ended', async () => {
      const op = await createOperator('viewer');
      await session({ email: op.email, password: op.password });
      const res = await client.patch(`/api/operators/${op.id}`, {
        token: ops.admin.token,
        body: { role: 'approver', is_active: false },
      });
      expect(res.status, JSON.stringify(res.body)).toBe(200);
      expect(await oneRow('operator.updated', op.id)).toMatchObject({
        actor: operatorActor(ops.admin),
        target_type: 'operator',
        details: { role: 'approver', is_active: false, sessions_ended: 1 },
      });
    });

    it('operator.token_rotated: by the operator itself, then by an admin, each row with its own actor', async () => {
      const op = await createOperator('approver');
      const byItself = await client.post(`/api/operators/${op.id}/token`, { token: op.token });
      expect(byItself.status).toBe(201);
      const byAdmin = await client.post(`/api/operators/${op.id}/token`, { token: ops.admin.token });
      expect(byAdmin.status).toBe(201);
      const rows = await audit({ action: 'operator.token_rotated', target_id: op.id });
      expect(rows.map((r) => r.actor)).toEqual([operatorActor(ops.admin), operatorActor(op)]);
      for (const row of rows) {
        expect(row).toMatchObject({ target_type: 'operator', target_id: op.id, ip: expect.stringMatching(LOOPBACK) });
        expect(JSON.stringify(row)).not.toContain(byItself.body.token);
        expect(JSON.stringify(row)).not.toContain(byAdmin.body.token);
      }
    });

    it('seller.created: by the bootstrap admin', async () => {
      const email = `${randomUUID()}@sellers.test`;
      const res = await client.post('/api/sellers', {
        token: ADMIN_TOKEN,
        body: { name: 'Audited shop', email, phone: '09120000000' },
      });
      expect(res.status).toBe(201);
      expect(await oneRow('seller.created', res.body.id)).toMatchObject({
        actor: BOOTSTRAP_ACTOR,
        target_type: 'seller',
        details: { email },
      });
      expect(JSON.stringify(await oneRow('seller.created', res.body.id))).not.toContain(res.body.api_key);
    });

    it('seller.updated: a deactivation by a named admin', async () => {
      const seller = await createSeller(client, 'Deactivated');
      const res = await client.patch(`/api/sellers/${seller.id}`, {
        token: ops.admin.token,
        body: { is_active: false },
      });
      expect(res.status).toBe(200);
      expect(await oneRow('seller.updated', seller.id)).toMatchObject({
        actor: operatorActor(ops.admin),
        target_type: 'seller',
        details: { is_active: false },
      });
    });

    it('seller.key_rotated: by the seller itself (a seller actor), then by an admin', async () => {
      const seller = await createSeller(client, 'Rotating');
      const bySeller = await client.post(`/api/sellers/${seller.id}/api-key`, { token: seller.apiKey });
      expect(bySeller.status, JSON.stringify(bySeller.body)).toBe(201);
      const sellerRow = await oneRow('seller.key_rotated', seller.id);
      expect(sellerRow).toMatchObject({ actor: { type: 'seller', id: seller.id }, target_type: 'seller' });
      // A seller's key says who it is by id; the row may carry its email too, but never anyone else's.
      expect([null, seller.email]).toContain(sellerRow.actor.email);

      const byAdmin = await client.post(`/api/sellers/${seller.id}/api-key`, { token: ops.admin.token });
      expect(byAdmin.status).toBe(201);
      const rows = await audit({ action: 'seller.key_rotated', target_id: seller.id });
      expect(rows).toHaveLength(2);
      expect(rows[0]?.actor).toEqual(operatorActor(ops.admin));
      for (const key of [seller.apiKey, bySeller.body.api_key, byAdmin.body.api_key]) {
        expect(JSON.stringify(rows)).not.toContain(key);
      }
    });

    it('credit_request.approved: a single approval by an approver, written with the credit', async () => {
      const seller = await createSeller(client, 'Approved');
      const requestId = await pendingRequest(seller, 250_000);
      const job = await processRequest(requestId, 'approve', ops.approver.token);
      expect(job.status).toBe('succeeded');
      expect(await oneRow('credit_request.approved', requestId)).toMatchObject({
        actor: operatorActor(ops.approver),
        target_type: 'credit_request',
        target_id: requestId,
        details: { seller_id: seller.id, amount: '250000', status: 'approved', job_id: job.job_id },
      });
      expect(await audit({ action: 'credit_request.second_approval_given', target_id: requestId })).toEqual([]);
    });

    it('credit_request.approved then credit_request.second_approval_given: the first of two, then the crediting one', async () => {
      const seller = await createSeller(client, 'Two approvals');
      const requestId = await pendingRequest(seller, SECOND_APPROVAL_ABOVE + 1);
      const first = await processRequest(requestId, 'approve', ops.approver.token);
      expect(first.status).toBe('succeeded');
      expect(await requestStatus(requestId)).toBe('awaiting_second_approval');
      expect(await oneRow('credit_request.approved', requestId)).toMatchObject({
        actor: operatorActor(ops.approver),
        details: {
          status: 'awaiting_second_approval',
          job_id: first.job_id,
          amount: String(SECOND_APPROVAL_ABOVE + 1),
        },
      });
      expect(await audit({ action: 'credit_request.second_approval_given', target_id: requestId })).toEqual([]);

      const second = await processRequest(requestId, 'approve', ADMIN_TOKEN);
      expect(second.status).toBe('succeeded');
      expect(await requestStatus(requestId)).toBe('approved');
      expect(await oneRow('credit_request.second_approval_given', requestId)).toMatchObject({
        actor: BOOTSTRAP_ACTOR,
        target_type: 'credit_request',
        details: { seller_id: seller.id, status: 'approved', job_id: second.job_id },
      });
      // Still one row of the first approval.
      await oneRow('credit_request.approved', requestId);
    });

    it('credit_request.rejected: by an approver, at the first stage and after a first approval', async () => {
      const seller = await createSeller(client, 'Rejected');
      const small = await pendingRequest(seller, 10_000);
      expect((await processRequest(small, 'reject', ops.approver.token)).status).toBe('succeeded');
      expect(await oneRow('credit_request.rejected', small)).toMatchObject({
        actor: operatorActor(ops.approver),
        target_type: 'credit_request',
        details: { seller_id: seller.id, amount: '10000', status: 'rejected' },
      });

      const large = await pendingRequest(seller, SECOND_APPROVAL_ABOVE * 2);
      expect((await processRequest(large, 'approve', ops.approver.token)).status).toBe('succeeded');
      expect((await processRequest(large, 'reject', ops.approver.token)).status).toBe('succeeded');
      expect(await requestStatus(large)).toBe('rejected');
      expect(await oneRow('credit_request.rejected', large)).toMatchObject({ actor: operatorActor(ops.approver) });
      await oneRow('credit_request.approved', large);
    });

    it('session.signed_in: with an email and password, and with a token whatever email the form also names', async () => {
      const op = await createOperator('viewer');
      await session({ email: op.email, password: op.password });
      expect(await oneRow('session.signed_in', op.id)).toMatchObject({
        actor: operatorActor(op),
        target_type: 'operator',
      });

      const other = await createOperator('approver', false);
      // The token decides who signs in; an email in the same form names no one.
      await session({ token: other.token, email: op.email });
      expect(await oneRow('session.signed_in', other.id)).toMatchObject({ actor: operatorActor(other) });
      await oneRow('session.signed_in', op.id);
    });

    it('session.sign_in_failed: a wrong password, with the address it came from', async () => {
      const op = await createOperator('approver');
      const { res } = await signIn({ email: op.email, password: `${op.password}x` });
      expect(res.status).toBe(401);
      const row = await oneRow('session.sign_in_failed', op.id);
      expect(row).toMatchObject({
        actor: { type: 'operator', id: op.id, email: op.email },
        target_type: 'operator',
        details: { method: 'password' },
      });
      expect(JSON.stringify(row)).not.toContain(op.password);
      expect(await audit({ action: 'session.signed_in', target_id: op.id })).toEqual([]);
    });

    it('session.signed_out: signing out of a page session', async () => {
      const op = await createOperator('approver');
      const { jar, csrf } = await session({ email: op.email, password: op.password });
      const out = await browse('/admin/logout', { method: 'POST', jar, form: { _csrf: csrf } });
      expect(out.status).toBe(303);
      const row = await oneRow('session.signed_out', op.id);
      expect(row).toMatchObject({ actor: operatorActor(op), target_type: 'operator' });
      expect(row.details.everywhere).toBeUndefined();
    });

    it('session.signed_out: "sign out everywhere" through the API, by an admin and by the operator itself', async () => {
      const op = await createOperator('viewer');
      await session({ email: op.email, password: op.password });
      await session({ token: op.token });
      const byAdmin = await client.post(`/api/operators/${op.id}/sessions/revoke`, { token: ops.admin.token });
      expect(byAdmin.status).toBe(204);
      expect(await oneRow('session.signed_out', op.id)).toMatchObject({
        actor: operatorActor(ops.admin),
        target_type: 'operator',
        details: { everywhere: true, sessions_ended: 2 },
      });

      const byItself = await client.post(`/api/operators/${op.id}/sessions/revoke`, { token: op.token });
      expect(byItself.status).toBe(204);
      const rows = await audit({ action: 'session.signed_out', target_id: op.id });
      expect(rows).toHaveLength(2);
      expect(rows[0]).toMatchObject({ actor: operatorActor(op), details: { everywhere: true, sessions_ended: 0 } });
    });
  });

  describe('reading it: GET /api/audit filters', () => {
    it('by actor, by action, by target, and all three at once', async () => {
      const op = await createOperator('approver');
      const seller = await createSeller(client, 'Filtered');
      await client.post(`/api/operators/${op.id}/token`, { token: op.token });
      await client.post(`/api/sellers/${seller.id}/api-key`, { token: ops.admin.token });

      const byActor = await audit({ actor: op.id });
      expect(byActor.length).toBeGreaterThan(0);
      for (const row of byActor) expect(row.actor.id).toBe(op.id);
      expect(byActor.map((r) => r.action)).toEqual(['operator.token_rotated']);

      const byAdmin = await audit({ actor: ops.admin.id });
      for (const row of byAdmin) expect(row.actor).toEqual(operatorActor(ops.admin));
      expect(byAdmin.some((r) => r.action === 'seller.key_rotated' && r.target_id === seller.id)).toBe(true);

      const self = await createSeller(client, 'Filtered by itself');
      expect((await client.post(`/api/sellers/${self.id}/api-key`, { token: self.apiKey })).status).toBe(201);
      const bySeller = await audit({ actor: self.id });
      expect(bySeller.map((r) => [r.actor.type, r.action, r.target_id])).toEqual([
        ['seller', 'seller.key_rotated', self.id],
      ]);

      const bootstrap = await audit({ actor: 'bootstrap' });
      expect(bootstrap.length).toBeGreaterThan(0);
      for (const row of bootstrap) expect(row.actor).toEqual(BOOTSTRAP_ACTOR);
      expect(bootstrap.some((r) => r.action === 'operator.created' && r.target_id === op.id)).toBe(true);

      const byAction = await audit({ action: 'operator.created' });
      for (const row of byAction) expect(row.action).toBe('operator.created');
      expect(byAction.some((r) => r.target_id === op.id)).toBe(true);

      const byTarget = await audit({ target_id: op.id });
      for (const row of byTarget) expect(row.target_id).toBe(op.id);
      expect(byTarget.map((r) => r.action)).toEqual(['operator.token_rotated', 'operator.created']);

      expect(await audit({ actor: 'bootstrap', action: 'operator.created', target_id: op.id })).toHaveLength(1);
      expect(await audit({ actor: op.id, action: 'operator.created', target_id: op.id })).toEqual([]);
    });

    it('pages newest first with limit and cursor, every row once', async () => {
      const op = await createOperator('viewer', false);
      for (let i = 0; i < 6; i++) {
        const res = await client.post(`/api/operators/${op.id}/token`, { token: ADMIN_TOKEN });
        expect(res.status).toBe(201);
      }
      const all = await audit({ target_id: op.id });
      expect(all).toHaveLength(7);
      expect(all.at(-1)?.action).toBe('operator.created');

      const seen: AuditEvent[] = [];
      let cursor: string | null = null;
      let pages = 0;
      do {
        const params = new URLSearchParams({ target_id: op.id, limit: '3', ...(cursor ? { cursor } : {}) });
        const res = await client.get(`/api/audit?${params}`, { token: ADMIN_TOKEN });
        expect(res.status).toBe(200);
        expect(res.body.items.length).toBeLessThanOrEqual(3);
        seen.push(...res.body.items);
        cursor = res.body.next_cursor;
        pages++;
      } while (cursor && pages < 10);
      expect(pages).toBe(3);
      expect(seen.map((r) => r.id)).toEqual(all.map((r) => r.id));
      const ids = seen.map((r) => BigInt(r.id));
      for (let i = 1; i < ids.length; i++) expect(ids[i]).toBeLessThan(ids[i - 1] as bigint);
    });

    it('refuses malformed filters with 400, and anyone but an admin with 403', async () => {
      for (const query of [
        'actor=someone',
        'actor=seller',
        'action=seller.deleted',
        'action=',
        'limit=0',
        'limit=501',
        'cursor=junk',
        `target_id=${'x'.repeat(201)}`,
      ]) {
        const res = await client.get(`/api/audit?${query}`, { token: ADMIN_TOKEN });
        expect(res.status, query).toBe(400);
        expect(res.body.code).toBe('validation_error');
      }
      for (const token of [ops.viewer.token, ops.approver.token]) {
        expect((await client.get('/api/audit', { token })).status).toBe(403);
      }
    });
  });

  describe('a refused effect leaves no row', () => {
    it('a duplicate seller email (409), in any case: one seller.created row', async () => {
      const email = `dup-${randomUUID()}@sellers.test`;
      const first = await client.post('/api/sellers', {
        token: ADMIN_TOKEN,
        body: { name: 'First', email, phone: '09120000000' },
      });
      expect(first.status).toBe(201);
      for (const again of [email, email.toUpperCase()]) {
        const res = await client.post('/api/sellers', {
          token: ops.admin.token,
          body: { name: 'Again', email: again, phone: '09120000000' },
        });
        expect(res.status).toBe(409);
      }
      const rows = await audit({ action: 'seller.created' });
      expect(rows.filter((r) => String(r.details.email).toLowerCase() === email)).toHaveLength(1);
      expect(
        (await audit({ actor: ops.admin.id, action: 'seller.created' })).map((r) => r.details.email),
      ).not.toContain(email.toUpperCase());
    });

    it('a duplicate operator email (409): one operator.created row', async () => {
      const op = await createOperator('viewer');
      const res = await client.post('/api/operators', {
        token: ops.admin.token,
        body: { email: op.email.toUpperCase(), name: 'Again', role: 'admin' },
      });
      expect(res.status).toBe(409);
      const rows = await audit({ action: 'operator.created' });
      expect(rows.filter((r) => String(r.details.email).toLowerCase() === op.email)).toHaveLength(1);
    });

    it('a credit request processed again and again, in turn and at once: one approved row', async () => {
      const seller = await createSeller(client, 'Processed twice');
      const requestId = await pendingRequest(seller, 40_000);
      // At once: the jobs race on the worker, one takes effect.
      const answers = await Promise.all(
        Array.from({ length: 5 }, () =>
          client.post(`/api/credit-requests/${requestId}/process`, {
            token: ops.approver.token,
            body: { action: 'approve' },
          }),
        ),
      );
      const jobs = await Promise.all(
        answers.filter((a) => a.status === 202).map((a) => waitForJob(client, a.body.job_id)),
      );
      expect(jobs.filter((j) => j.status === 'succeeded')).toHaveLength(1);
      // In turn: the API refuses at once.
      const again = await client.post(`/api/credit-requests/${requestId}/process`, {
        token: ops.second.token,
        body: { action: 'approve' },
      });
      expect(again.status).toBe(409);
      const reject = await client.post(`/api/credit-requests/${requestId}/process`, {
        token: ops.second.token,
        body: { action: 'reject' },
      });
      expect(reject.status).toBe(409);
      await oneRow('credit_request.approved', requestId);
      expect(await audit({ target_id: requestId })).toHaveLength(1);
    });

    it('an approval by the same operator where a second one is needed: no row', async () => {
      const seller = await createSeller(client, 'Same operator twice');
      const requestId = await pendingRequest(seller, SECOND_APPROVAL_ABOVE + 5);
      expect((await processRequest(requestId, 'approve', ops.approver.token)).status).toBe('succeeded');
      const again = await processRequest(requestId, 'approve', ops.approver.token);
      expect(again).toMatchObject({ status: 'rejected', error: { code: 'second_approver_required' } });
      expect(await requestStatus(requestId)).toBe('awaiting_second_approval');
      expect(await audit({ target_id: requestId })).toHaveLength(1);
      await oneRow('credit_request.approved', requestId);
    });

    it('a body that tries to name the processor (400), and a role that may not act (403): no row', async () => {
      const seller = await createSeller(client, 'Not processed');
      const requestId = await pendingRequest(seller, 1_000);
      const before = await auditCount();
      const named = await client.post(`/api/credit-requests/${requestId}/process`, {
        token: ops.approver.token,
        body: { action: 'approve', processed_by: ops.second.email },
      });
      expect(named.status).toBe(400);
      const viewer = await client.post(`/api/credit-requests/${requestId}/process`, {
        token: ops.viewer.token,
        body: { action: 'approve' },
      });
      expect(viewer.status).toBe(403);
      const asViewer = await client.post('/api/operators', {
        token: ops.viewer.token,
        body: { email: `x-${randomUUID()}@ops.test`, name: 'Escalated', role: 'admin' },
      });
      expect(asViewer.status).toBe(403);
      expect(await auditCount()).toBe(before);
      expect(await requestStatus(requestId)).toBe('pending');
    });
  });

  describe('append-only', () => {
    let app: postgres.Sql;
    let rowId: string;
    let original: Record<string, unknown>;
    const APPEND_ONLY = /append-only/;
    class RolledBack extends Error {}

    beforeAll(async () => {
      app = postgres(inject('databaseUrl'), { max: 1, onnotice: () => {} });
      const seller = await createSeller(client, 'Append-only');
      const [row] = await sql`select * from audit_events where target_id = ${seller.id}`;
      rowId = String(row?.id);
      original = row as Record<string, unknown>;
    });
    afterAll(() => app?.end({ timeout: 5 }));

    const statements = () => [
      `update audit_events set actor_type = 'seller', details = '{}' where id = ${rowId}`,
      `update audit_events set ip = '10.0.0.1'`,
      `delete from audit_events where id = ${rowId}`,
      'delete from audit_events',
      'truncate audit_events',
    ];

    it('the application role may not UPDATE, DELETE or TRUNCATE it: a privilege error', async () => {
      for (const statement of statements()) {
        const error = await app.unsafe(statement).then(
          () => expect.fail(`the application role was allowed to run: ${statement}`),
          (e: { code?: string; message: string }) => e,
        );
        expect(error.code, `${statement}: ${error.message}`).toBe('42501');
        expect(error.message, statement).toMatch(/permission denied/);
      }
      // It may still write rows: every effect does.
      const [probe] = await app`
        insert into audit_events (actor_type, action, target_type, target_id)
        values ('bootstrap', 'seller.updated', 'seller', ${randomUUID()}) returning id`;
      expect(probe?.id).toBeDefined();
      expect((await sql`select * from audit_events where id = ${rowId}`)[0]).toEqual(original);
    });

    it("the tables' owner gets the append-only trigger's refusal, and nothing changes", async () => {
      for (const statement of statements()) {
        let error: { code?: string; message: string } | undefined;
        // In a transaction rolled back whatever happens: a missing trigger must not empty the trail.
        await sql
          .begin(async (tx) => {
            try {
              await tx.unsafe(statement);
            } catch (e) {
              error = e as { code?: string; message: string };
            }
            throw new RolledBack();
          })
          .catch((e: unknown) => {
            if (!(e instanceof RolledBack)) throw e;
          });
        expect(error, `the owner was allowed to run: ${statement}`).toBeDefined();
        expect(error?.message, statement).toMatch(APPEND_ONLY);
        expect(error?.code, statement).toBe('42501');
      }
      expect((await sql`select * from audit_events where id = ${rowId}`)[0]).toEqual(original);
    });
  });
});
