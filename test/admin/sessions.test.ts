import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testSql } from '../support/db.ts';
import { balanceOf, createSeller, type TestSeller } from '../support/factories.ts';
import { Client } from '../support/http.ts';
import { BROWSER, CookieJar, hiddenValue } from '../support/pages.ts';
import { ADMIN_TOKEN, System } from '../support/system.ts';

/**
 * The operator pages' sessions, kept on the server: an operator signs in with its email and
 * password or with its token; signing out, "sign out everywhere", the idle limit and the absolute
 * limit end the session for good, so a replayed cookie lets no one in. What a signed-in operator
 * may do is its role's: a viewer reads the pages, an approver also approves.
 */

const SESSION_COOKIE = 'cs_admin_session';

interface Operator {
  id: string;
  email: string;
  token: string;
  password: string;
}

interface Session {
  jar: CookieJar;
  csrf: string;
  /** The session cookie exactly as the browser sent it: to replay after the session ended. */
  cookie: string;
}

/** The operator pages of one system, driven as a browser drives them. */
class Pages {
  readonly client: Client;

  constructor(readonly system: System) {
    this.client = new Client(system.baseUrl);
  }

  /** A request as a browser makes it: no redirect following, cookies from the jar. */
  async browse(path: string, init: RequestInit & { jar?: CookieJar; form?: Record<string, string> } = {}) {
    const headers = new Headers(init.headers);
    if (!headers.has('accept')) headers.set('accept', BROWSER);
    if (init.jar?.header && !headers.has('cookie')) headers.set('cookie', init.jar.header);
    let body = init.body;
    if (init.form) {
      body = new URLSearchParams(init.form);
      headers.set('origin', this.system.baseUrl);
    }
    const res = await fetch(`${this.system.baseUrl}${path}`, { ...init, headers, body, redirect: 'manual' });
    init.jar?.keep(res);
    return res;
  }

  async createOperator(role: 'admin' | 'approver' | 'viewer', withPassword = true): Promise<Operator> {
    const email = `${role}-${randomUUID()}@ops.test`;
    const password = `a password of ${randomUUID()}`;
    const res = await this.client.post('/api/operators', {
      token: ADMIN_TOKEN,
      body: { email, name: `A ${role}`, role, ...(withPassword ? { password } : {}) },
    });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    return { id: res.body.id, email, token: res.body.token, password };
  }

  /** Posts the sign-in form with these fields. */
  async postLogin(fields: Record<string, string>) {
    const jar = new CookieJar();
    const form = await this.browse('/admin/login', { jar });
    expect(form.status).toBe(200);
    const res = await this.browse('/admin/login', {
      method: 'POST',
      jar,
      form: { ...fields, _csrf: hiddenValue(await form.text(), '_csrf'), next: '/admin' },
    });
    return { res, jar };
  }

  /** Signs in; returns the browser's cookies, the session's CSRF token and its cookie. */
  async signIn(fields: Record<string, string>): Promise<Session> {
    const { res, jar } = await this.postLogin(fields);
    expect(res.status, await res.clone().text()).toBe(303);
    expect(res.headers.get('location')).toBe('/admin');
    expect(jar.has(SESSION_COOKIE)).toBe(true);
    const home = await this.browse('/admin', { jar });
    expect(home.status).toBe(200);
    return { jar, csrf: hiddenValue(await home.text(), '_csrf'), cookie: jar.header };
  }

  /** The session cookie sent as is, as a replaying attacker (or a stale tab) would. */
  replay(session: Session, path = '/admin', accept = BROWSER) {
    return this.browse(path, { headers: { cookie: session.cookie, accept } });
  }

  /** The session still lets its browser in. */
  async expectOpen(session: Session, what: string) {
    const res = await this.replay(session);
    expect(res.status, `${what}: still signed in`).toBe(200);
  }

  /** The session is over: a browser is sent to sign in, an API client gets 401. */
  async expectEnded(session: Session, what: string) {
    const page = await this.replay(session, '/admin/credit-requests');
    expect(page.status, `${what}: sent to sign in`).toBe(302);
    expect(page.headers.get('location'), what).toMatch(/^\/admin\/login/);
    const api = await this.replay(session, '/admin/sellers', 'application/json');
    expect(api.status, `${what}: an API client`).toBe(401);
    expect(await api.json()).toMatchObject({ code: 'unauthorized' });
  }
}

describe('operator sessions on the pages', () => {
  let system: System;
  let pages: Pages;
  let client: Client;
  const sql = testSql();

  beforeAll(async () => {
    system = await System.start({ workers: 1 });
    pages = new Pages(system);
    client = pages.client;
  });
  afterAll(async () => {
    await system?.stop();
    await sql.end();
  });

  async function pendingRequest(seller: TestSeller, amount: number): Promise<string> {
    const res = await client.post('/api/credit-requests', {
      token: seller.apiKey,
      body: { seller: seller.id, amount },
    });
    expect(res.status).toBe(201);
    return res.body.id;
  }

  async function statusOf(requestId: string): Promise<string> {
    const [row] = await sql`select status from credit_requests where id = ${requestId}`;
    return String(row?.status);
  }

  async function auditRows(action: string, targetId: string) {
    const res = await client.get(`/api/audit?action=${action}&target_id=${targetId}`, { token: ADMIN_TOKEN });
    expect(res.status).toBe(200);
    return res.body.items as Array<Record<string, any>>;
  }

  describe('signing in', () => {
    it('with an email and password: a session on the server, the cookie naming only it', async () => {
      const op = await pages.createOperator('approver');
      const session = await pages.signIn({ email: op.email, password: op.password });
      const [row] = await sql`
        select operator_id::text, ended_at, expires_at - created_at as lifetime from operator_sessions
        where operator_id = ${op.id}`;
      expect(row).toMatchObject({ operator_id: op.id, ended_at: null });
      // The cookie carries a random id, not the operator, its token or its password.
      for (const secret of [op.id, op.email, op.token, op.password, encodeURIComponent(op.email)]) {
        expect(session.cookie).not.toContain(secret);
      }
      for (const path of ['/admin/credit-requests', '/admin/sellers', '/admin/phone-numbers']) {
        expect((await pages.browse(path, { jar: session.jar })).status, path).toBe(200);
      }
      // The address is an email: its case does not matter.
      await pages.signIn({ email: op.email.toUpperCase(), password: op.password });
    });

    it("with an operator's token, and with the bootstrap ADMIN_TOKEN", async () => {
      const op = await pages.createOperator('viewer', false);
      await pages.signIn({ token: op.token });
      const [row] = await sql`select count(*)::int as n from operator_sessions where operator_id = ${op.id}`;
      expect(row?.n).toBe(1);
      await pages.signIn({ token: ADMIN_TOKEN });
    });

    it('refuses a wrong password with a 401 page and no session, and audits the attempt', async () => {
      const op = await pages.createOperator('approver');
      for (const password of [`${op.password}!`, op.password.toUpperCase(), '', op.token]) {
        const { res, jar } = await pages.postLogin({ email: op.email, password });
        expect(res.status, password).toBe(401);
        expect(await res.text()).toContain('Those credentials do not sign anyone in.');
        expect(jar.has(SESSION_COOKIE)).toBe(false);
      }
      const failed = await auditRows('session.sign_in_failed', op.id);
      expect(failed).toHaveLength(4);
      for (const row of failed) {
        expect(row).toMatchObject({
          actor: { type: 'operator', id: op.id, email: op.email },
          target_type: 'operator',
          details: { method: 'password' },
          ip: expect.stringMatching(/^(?:::ffff:)?127\.0\.0\.1$/),
        });
      }
      expect(await auditRows('session.signed_in', op.id)).toEqual([]);
      const [row] = await sql`select count(*)::int as n from operator_sessions where operator_id = ${op.id}`;
      expect(row?.n).toBe(0);
    });

    it('refuses an unknown email, an operator without a password, and a deactivated operator', async () => {
      const unknown = await pages.postLogin({ email: `nobody-${randomUUID()}@ops.test`, password: 'whatever it is' });
      expect(unknown.res.status).toBe(401);

      const tokenOnly = await pages.createOperator('approver', false);
      const noPassword = await pages.postLogin({ email: tokenOnly.email, password: tokenOnly.password });
      expect(noPassword.res.status).toBe(401);

      const leaving = await pages.createOperator('approver');
      const open = await pages.signIn({ email: leaving.email, password: leaving.password });
      const off = await client.patch(`/api/operators/${leaving.id}`, {
        token: ADMIN_TOKEN,
        body: { is_active: false },
      });
      expect(off.status).toBe(200);
      await pages.expectEnded(open, 'a deactivated operator’s session');
      const attempts: Array<Record<string, string>> = [
        { email: leaving.email, password: leaving.password },
        { token: leaving.token },
      ];
      for (const fields of attempts) {
        const { res, jar } = await pages.postLogin(fields);
        expect(res.status, Object.keys(fields).join()).toBe(401);
        expect(jar.has(SESSION_COOKIE)).toBe(false);
      }
    });
  });

  describe('signing out', () => {
    it('ends the session on the server: the old cookie, replayed, is sent to sign in', async () => {
      const op = await pages.createOperator('approver');
      const session = await pages.signIn({ email: op.email, password: op.password });
      const out = await pages.browse('/admin/logout', {
        method: 'POST',
        jar: session.jar,
        form: { _csrf: session.csrf },
      });
      expect(out.status).toBe(303);
      expect(out.headers.get('location')).toBe('/admin/login');
      expect(session.jar.has(SESSION_COOKIE)).toBe(false);
      await pages.expectEnded(session, 'after signing out');
      const [row] = await sql`select ended_at from operator_sessions where operator_id = ${op.id}`;
      expect(row?.ended_at).toBeInstanceOf(Date);
      // Signing in again gives a new session; the old cookie stays dead.
      await pages.signIn({ email: op.email, password: op.password });
      await pages.expectEnded(session, 'after signing in again');
    });

    it('"sign out everywhere" (POST /api/operators/{id}/sessions/revoke) ends both sessions of that operator, not another’s', async () => {
      const op = await pages.createOperator('approver');
      const other = await pages.createOperator('approver');
      const byPassword = await pages.signIn({ email: op.email, password: op.password });
      const byToken = await pages.signIn({ token: op.token });
      const others = await pages.signIn({ email: other.email, password: other.password });

      const res = await client.post(`/api/operators/${op.id}/sessions/revoke`, { token: ADMIN_TOKEN });
      expect(res.status).toBe(204);
      await pages.expectEnded(byPassword, 'the password session');
      await pages.expectEnded(byToken, 'the token session');
      await pages.expectOpen(others, 'another operator’s session');
      // The token itself still works: sessions ended, not the operator.
      expect((await client.get('/api/sellers', { token: op.token })).status).toBe(200);

      // The operator may end its own sessions; another approver may not end them.
      const again = await pages.signIn({ token: op.token });
      const refused = await client.post(`/api/operators/${op.id}/sessions/revoke`, { token: other.token });
      expect(refused.status).toBe(403);
      await pages.expectOpen(again, 'after a refused revoke');
      expect((await client.post(`/api/operators/${op.id}/sessions/revoke`, { token: op.token })).status).toBe(204);
      await pages.expectEnded(again, 'after revoking its own');
      await pages.expectOpen(others, 'another operator’s session, still');
    });

    it('"Sign out everywhere" from the pages ends every session of the signed-in operator', async () => {
      const op = await pages.createOperator('viewer');
      const other = await pages.createOperator('viewer');
      const here = await pages.signIn({ email: op.email, password: op.password });
      const there = await pages.signIn({ token: op.token });
      const others = await pages.signIn({ token: other.token });
      const home = await (await pages.browse('/admin', { jar: here.jar })).text();
      expect(home).toContain('action="/admin/sessions/revoke"');
      const res = await pages.browse('/admin/sessions/revoke', {
        method: 'POST',
        jar: here.jar,
        form: { _csrf: here.csrf },
      });
      expect(res.status).toBe(303);
      expect(res.headers.get('location')).toBe('/admin/login');
      await pages.expectEnded(here, 'this browser');
      await pages.expectEnded(there, 'the other browser');
      await pages.expectOpen(others, 'another operator’s session');
    });
  });

  describe('what a signed-in operator may do is its role’s', () => {
    it('a viewer reads the pages, but its approve form is 403 and nothing is credited; an approver’s is done', async () => {
      const seller = await createSeller(client, 'Viewed');
      const requestId = await pendingRequest(seller, 75_000);
      const viewer = await pages.createOperator('viewer');
      const approver = await pages.createOperator('approver');
      const asViewer = await pages.signIn({ email: viewer.email, password: viewer.password });
      for (const path of [
        '/admin',
        '/admin/credit-requests',
        '/admin/sellers',
        `/admin/sellers/${seller.id}`,
        '/admin/phone-numbers',
      ]) {
        expect((await pages.browse(path, { jar: asViewer.jar })).status, path).toBe(200);
      }
      const listed = await (await pages.browse('/admin/credit-requests', { jar: asViewer.jar })).text();
      expect(listed).toContain(`data-request="${requestId}"`);

      const refused = await pages.browse('/admin/credit-requests/process', {
        method: 'POST',
        jar: asViewer.jar,
        form: { _csrf: asViewer.csrf, single: `approve:${requestId}` },
      });
      expect(refused.status).toBe(403);
      expect(await refused.text()).toContain('<!doctype html>');
      const deactivate = await pages.browse(`/admin/sellers/${seller.id}/active`, {
        method: 'POST',
        jar: asViewer.jar,
        form: { _csrf: asViewer.csrf, is_active: 'false' },
      });
      expect(deactivate.status).toBe(403);
      expect((await pages.browse('/admin/audit', { jar: asViewer.jar })).status).toBe(403);
      expect(await statusOf(requestId)).toBe('pending');
      expect(await balanceOf(client, seller.id)).toBe(0n);
      expect((await client.get(`/api/sellers/${seller.id}`, { token: ADMIN_TOKEN })).body.is_active).toBe(true);
      // The viewer is still signed in: a refusal is not a sign-out.
      await pages.expectOpen(asViewer, 'the viewer after a refusal');

      const asApprover = await pages.signIn({ email: approver.email, password: approver.password });
      const done = await pages.browse('/admin/credit-requests/process', {
        method: 'POST',
        jar: asApprover.jar,
        form: { _csrf: asApprover.csrf, single: `approve:${requestId}`, return: '/admin/credit-requests' },
      });
      expect(done.status).toBe(303);
      const landing = await pages.browse(done.headers.get('location') ?? '', { jar: asApprover.jar });
      expect(await landing.text()).toContain('Approved 1 request: 75,000 rials credited.');
      expect(await statusOf(requestId)).toBe('approved');
      expect(await balanceOf(client, seller.id)).toBe(75_000n);
      const [row] = await sql`select processed_by from credit_requests where id = ${requestId}`;
      expect(row?.processed_by).toBe(approver.email);
    });

    it('a session carries the role as it is now: a viewer made approver may approve at once, without signing in again', async () => {
      const seller = await createSeller(client, 'Promoted');
      const requestId = await pendingRequest(seller, 5_000);
      const op = await pages.createOperator('viewer');
      const session = await pages.signIn({ email: op.email, password: op.password });
      const form = { _csrf: session.csrf, single: `approve:${requestId}` };
      expect(
        (await pages.browse('/admin/credit-requests/process', { method: 'POST', jar: session.jar, form })).status,
      ).toBe(403);
      await client.patch(`/api/operators/${op.id}`, { token: ADMIN_TOKEN, body: { role: 'approver' } });
      const res = await pages.browse('/admin/credit-requests/process', { method: 'POST', jar: session.jar, form });
      expect(res.status).toBe(303);
      expect(await statusOf(requestId)).toBe('approved');
    });
  });
});

describe('the idle limit (SESSION_IDLE_MS=2000)', () => {
  const IDLE_MS = 2000;
  let system: System;
  let pages: Pages;
  let op: Operator;

  beforeAll(async () => {
    system = await System.start({ workers: 0, env: { SESSION_IDLE_MS: String(IDLE_MS), SESSION_MAX_MS: '600000' } });
    pages = new Pages(system);
    op = await pages.createOperator('approver');
  });
  afterAll(() => system?.stop());

  it('ends a session left unused for longer than the limit', async () => {
    const session = await pages.signIn({ email: op.email, password: op.password });
    await sleep(IDLE_MS + 1000);
    await pages.expectEnded(session, `after ${IDLE_MS + 1000} ms unused`);
  });

  it('keeps a session in use open well past the idle limit', async () => {
    const session = await pages.signIn({ email: op.email, password: op.password });
    const started = Date.now();
    // A request every quarter of the limit, for three limits: the session is never idle for as long as the limit.
    while (Date.now() - started < 3 * IDLE_MS) {
      await sleep(IDLE_MS / 4);
      const res = await pages.replay(session);
      expect(res.status, `in use for ${Date.now() - started} ms, never idle ${IDLE_MS} ms`).toBe(200);
    }
    await sleep(IDLE_MS + 1000);
    await pages.expectEnded(session, 'once left unused');
  });
});

describe('the absolute limit (SESSION_MAX_MS=3000)', () => {
  const MAX_MS = 3000;
  let system: System;
  let pages: Pages;

  beforeAll(async () => {
    system = await System.start({ workers: 0, env: { SESSION_IDLE_MS: '600000', SESSION_MAX_MS: String(MAX_MS) } });
    pages = new Pages(system);
  });
  afterAll(() => system?.stop());

  it('ends a session after the limit however much it is used, and its cookie says so', async () => {
    const op = await pages.createOperator('viewer');
    const { res } = await pages.postLogin({ email: op.email, password: op.password });
    expect(res.headers.getSetCookie().find((l) => l.startsWith(`${SESSION_COOKIE}=`))).toMatch(/; Max-Age=3(;|$)/);
    const session = await pages.signIn({ email: op.email, password: op.password });
    const started = Date.now();
    while (Date.now() - started < MAX_MS - 1000) {
      expect((await pages.replay(session)).status, `${Date.now() - started} ms in`).toBe(200);
      await sleep(250);
    }
    await sleep(Math.max(0, MAX_MS + 500 - (Date.now() - started)));
    // The browser would have dropped the cookie; one that did not (or a replay) is refused by the server.
    await pages.expectEnded(session, `after ${MAX_MS} ms in all`);
    await pages.signIn({ email: op.email, password: op.password });
  });
});

describe('guessing passwords (more than 20 failed authentications a minute from one address)', () => {
  let system: System;
  let pages: Pages;

  beforeAll(async () => {
    // A system of its own, at the contract's limit (test systems otherwise raise it so that tests
    // of bad tokens do not refuse each other): the address it refuses is this test's, for a minute.
    system = await System.start({ workers: 0, env: { AUTH_FAILURE_LIMIT: '20' } });
    pages = new Pages(system);
  });
  afterAll(() => system?.stop());

  it('refuses the address with 429 and Retry-After, even with the right password, and starts no session', async () => {
    const op = await pages.createOperator('admin');
    const statuses: number[] = [];
    for (let i = 0; i < 21; i++) {
      const { res } = await pages.postLogin({ email: op.email, password: `guess number ${i}` });
      statuses.push(res.status);
    }
    expect(statuses.slice(0, 20)).toEqual(Array.from({ length: 20 }, () => 401));
    expect(statuses[20], statuses.join(' ')).toBe(429);
    const { res, jar } = await pages.postLogin({ email: op.email, password: op.password });
    expect(res.status).toBe(429);
    expect(Number(res.headers.get('retry-after'))).toBeGreaterThan(0);
    expect(jar.has(SESSION_COOKIE)).toBe(false);
    // The API's bearer tokens count as authentications from the same address.
    const api = await pages.client.get('/api/sellers', { token: op.token });
    expect(api.status).toBe(429);
    expect(api.body.code).toBe('rate_limited');
  });
});
