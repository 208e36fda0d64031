import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { balanceOf, createSeller, fundSeller, type TestSeller } from '../support/factories.ts';
import { Client } from '../support/http.ts';
import { BROWSER, CookieJar, hiddenValue } from '../support/pages.ts';
import { ADMIN_TOKEN, System } from '../support/system.ts';

describe('operator pages (/admin) over HTTP', () => {
  let system: System;
  let client: Client;
  let origin: string;

  /** A request as a browser makes it: no redirect following, cookies from the jar. */
  async function browse(
    path: string,
    init: RequestInit & { jar?: CookieJar; form?: Record<string, string | string[]> } = {},
  ) {
    const headers = new Headers(init.headers);
    if (!headers.has('accept')) headers.set('accept', BROWSER);
    if (init.jar?.header) headers.set('cookie', init.jar.header);
    let body = init.body;
    if (init.form) {
      const params = new URLSearchParams();
      for (const [key, value] of Object.entries(init.form)) {
        for (const v of Array.isArray(value) ? value : [value]) params.append(key, v);
      }
      body = params;
      if (!headers.has('origin')) headers.set('origin', origin);
    }
    const res = await fetch(`${origin}${path}`, { ...init, headers, body, redirect: 'manual' });
    init.jar?.keep(res);
    return res;
  }

  /** Signs in through the login form; returns the browser's cookies and the session's CSRF token. */
  async function signIn() {
    const jar = new CookieJar();
    const form = await browse('/admin/login', { jar });
    expect(form.status).toBe(200);
    const res = await browse('/admin/login', {
      method: 'POST',
      jar,
      form: { token: ADMIN_TOKEN, _csrf: hiddenValue(await form.text(), '_csrf'), next: '/admin' },
    });
    expect(res.status).toBe(303);
    const home = await browse('/admin', { jar });
    expect(home.status).toBe(200);
    return { jar, csrf: hiddenValue(await home.text(), '_csrf'), setCookie: res.headers.getSetCookie() };
  }

  async function pendingRequest(seller: TestSeller, amount: number): Promise<string> {
    const res = await client.post('/api/credit-requests', {
      token: seller.apiKey,
      body: { seller: seller.id, amount },
    });
    expect(res.status).toBe(201);
    return res.body.id;
  }

  async function statusOf(requestId: string): Promise<string> {
    const res = await client.get('/api/credit-requests?limit=500', { token: ADMIN_TOKEN });
    return res.body.items.find((r: { id: string }) => r.id === requestId)?.status;
  }

  /** Follows the redirect after a form, as the browser does, and returns the page it lands on. */
  async function landing(res: Response, jar: CookieJar): Promise<string> {
    expect(res.status).toBe(303);
    const next = await browse(res.headers.get('location') ?? '', { jar });
    expect(next.status).toBe(200);
    return next.text();
  }

  beforeAll(async () => {
    system = await System.start({ workers: 1 });
    client = new Client(system.baseUrl);
    origin = system.baseUrl;
  });
  afterAll(() => system?.stop());

  describe('who gets in', () => {
    it('sends a browser without credentials to the sign-in page, remembering where it was going', async () => {
      for (const path of ['/admin', '/admin/sellers', '/admin/queues']) {
        const res = await browse(path);
        expect(res.status, path).toBe(302);
        expect(res.headers.get('location')).toBe(`/admin/login?next=${encodeURIComponent(path)}`);
      }
      const login = await browse('/admin/login?next=%2Fadmin%2Fsellers');
      expect(login.status).toBe(200);
      const html = await login.text();
      expect(html).toContain('type="password"');
      expect(hiddenValue(html, 'next')).toBe('/admin/sellers');
    });

    it('answers an API client without credentials, or with a wrong token, 401 JSON; a seller 403', async () => {
      const seller = await createSeller(client, 'Nosy');
      for (const path of ['/admin', '/admin/sellers', '/admin/queues', '/admin/queues/api/queues']) {
        for (const token of [undefined, 'wrong-token', `${ADMIN_TOKEN}x`]) {
          const res = await client.get(path, { token });
          expect(res.status, `${path} ${token}`).toBe(401);
          expect(res.body).toMatchObject({ code: 'unauthorized', error: expect.any(String) });
        }
        const asSeller = await client.get(path, { token: seller.apiKey });
        expect(asSeller.status, path).toBe(403);
        expect(asSeller.body.code).toBe('forbidden');
      }
    });

    it('lets the admin bearer token into the pages and the queue dashboard of every partition', async () => {
      const home = await client.get('/admin', { token: ADMIN_TOKEN, headers: { accept: BROWSER } });
      expect(home.status).toBe(200);
      expect(home.headers.get('content-type')).toMatch(/text\/html/);
      expect(home.body).toContain('<h1>The last hour</h1>');
      expect(home.body).toContain('<a href="/admin/credit-requests">Credit requests</a>');
      expect(home.headers.get('x-frame-options')).toBe('DENY');
      const requests = await client.get('/admin/credit-requests', { token: ADMIN_TOKEN, headers: { accept: BROWSER } });
      expect(requests.status).toBe(200);
      expect(requests.body).toContain('<h1>Credit requests</h1>');

      const board = await client.get('/admin/queues', { token: ADMIN_TOKEN, headers: { accept: BROWSER } });
      expect(board.status).toBe(200);
      expect(board.body).toContain('Charge Sales queues');
      const script = /src="([^"]+\.js)"/.exec(board.body)?.[1] ?? expect.fail('no script in the dashboard page');
      const asset = await fetch(new URL(script, `${origin}/admin/queues/`), {
        headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
      });
      expect(asset.status).toBe(200);

      const queues = await client.get('/admin/queues/api/queues', { token: ADMIN_TOKEN });
      expect(queues.status).toBe(200);
      const names = queues.body.queues.map((q: { displayName: string }) => q.displayName);
      expect(names).toHaveLength(16);
      expect(names).toEqual(expect.arrayContaining(['Partition 00', 'Partition 09', 'Partition 15']));
      expect(queues.body.queues.every((q: { readOnlyMode: boolean }) => q.readOnlyMode)).toBe(true);
    });

    it('keeps the queue dashboard read-only: no job or queue can be changed from it', async () => {
      const queues = await client.get('/admin/queues/api/queues', { token: ADMIN_TOKEN });
      const name = encodeURIComponent(queues.body.queues[0].name);
      for (const [method, path] of [
        ['PUT', `/admin/queues/api/queues/${name}/pause`],
        ['PUT', `/admin/queues/api/queues/${name}/retry/failed`],
        ['POST', `/admin/queues/api/queues/${name}/add`],
        ['PUT', `/admin/queues/api/queues/${name}/empty`],
      ] as const) {
        const res = await client.request(method, path, { token: ADMIN_TOKEN, body: {} });
        expect(res.status, path).toBe(403);
      }
      const after = await client.get('/admin/queues/api/queues', { token: ADMIN_TOKEN });
      expect(after.body.queues.some((q: { isPaused: boolean }) => q.isPaused)).toBe(false);
    });
  });

  describe('signing in and out', () => {
    it('signs in with the admin token: an HttpOnly, SameSite=Strict session cookie for /admin, not Secure over http', async () => {
      const { jar, setCookie } = await signIn();
      const session =
        setCookie.find((line) => line.startsWith('cs_admin_session=')) ?? expect.fail('no session cookie');
      expect(session).toMatch(/; HttpOnly/i);
      expect(session).toMatch(/; SameSite=Strict/i);
      expect(session).toMatch(/; Path=\/admin(;|$)/);
      expect(session).toMatch(/; Max-Age=28800/);
      expect(session).not.toMatch(/Secure/i);
      const sellers = await browse('/admin/sellers', { jar });
      expect(sellers.status).toBe(200);
      expect(await sellers.text()).toContain('<h1>Sellers</h1>');
    });

    it('marks the session cookie Secure when the browser came over https', async () => {
      const jar = new CookieJar();
      const form = await browse('/admin/login', { jar, headers: { 'x-forwarded-proto': 'https' } });
      const res = await browse('/admin/login', {
        method: 'POST',
        jar,
        headers: { 'x-forwarded-proto': 'https' },
        form: { token: ADMIN_TOKEN, _csrf: hiddenValue(await form.text(), '_csrf'), next: '/admin' },
      });
      expect(res.status).toBe(303);
      expect(res.headers.getSetCookie().find((l) => l.startsWith('cs_admin_session='))).toMatch(/; Secure/);
    });

    it('refuses a wrong token, a sign-in form it did not serve, and a next page elsewhere', async () => {
      const jar = new CookieJar();
      const form = await browse('/admin/login', { jar });
      const csrf = hiddenValue(await form.text(), '_csrf');
      const wrong = await browse('/admin/login', { method: 'POST', jar, form: { token: 'nope', _csrf: csrf } });
      expect(wrong.status).toBe(401);
      expect(await wrong.text()).toContain('Those credentials do not sign anyone in.');
      expect(jar.has('cs_admin_session')).toBe(false);

      const forged = await browse('/admin/login', {
        method: 'POST',
        form: { token: ADMIN_TOKEN, _csrf: 'made-up' },
      });
      expect(forged.status).toBe(403);
      expect(forged.headers.getSetCookie().some((l) => l.startsWith('cs_admin_session='))).toBe(false);

      const fresh = new CookieJar();
      const again = await browse('/admin/login', { jar: fresh });
      const away = await browse('/admin/login', {
        method: 'POST',
        jar: fresh,
        form: { token: ADMIN_TOKEN, _csrf: hiddenValue(await again.text(), '_csrf'), next: '//evil.example/x' },
      });
      expect(away.status).toBe(303);
      expect(away.headers.get('location')).toBe('/admin');
    });

    it('does not accept a session cookie that was altered', async () => {
      const { jar } = await signIn();
      const [, value = ''] = /cs_admin_session=([^;]+)/.exec(jar.header) ?? [];
      const [id, expires, mac] = value.split('.');
      const later = `${id}.${Number(expires) + 86_400_000}.${mac}`;
      const res = await browse('/admin', { headers: { cookie: `cs_admin_session=${later}` } });
      expect(res.status).toBe(302);
      expect(res.headers.get('location')).toMatch(/^\/admin\/login/);
    });

    it('signs out: the session cookie is removed from the browser', async () => {
      const { jar, csrf } = await signIn();
      const res = await browse('/admin/logout', { method: 'POST', jar, form: { _csrf: csrf } });
      expect(res.status).toBe(303);
      expect(res.headers.get('location')).toBe('/admin/login');
      expect(jar.has('cs_admin_session')).toBe(false);
      expect((await browse('/admin', { jar })).status).toBe(302);
    });
  });

  describe('credit requests', () => {
    it('refuses a form POST without the session CSRF token, or from another site, and changes nothing', async () => {
      const { jar, csrf } = await signIn();
      const seller = await createSeller(client, 'Guarded');
      const requestId = await pendingRequest(seller, 70_000);
      const single = `approve:${requestId}`;
      const attempts: Array<[string, Parameters<typeof browse>[1]]> = [
        ['no token', { form: { single } }],
        ['another token', { form: { single, _csrf: csrf.replace(/^./, (ch) => (ch === 'A' ? 'B' : 'A')) } }],
        ['another origin', { form: { single, _csrf: csrf }, headers: { origin: 'https://evil.example' } }],
        ['opaque origin', { form: { single, _csrf: csrf }, headers: { origin: 'null' } }],
        ['cross-site fetch', { form: { single, _csrf: csrf }, headers: { 'sec-fetch-site': 'cross-site' } }],
      ];
      for (const [what, init] of attempts) {
        const res = await browse('/admin/credit-requests/process', { method: 'POST', jar, ...init });
        expect(res.status, what).toBe(403);
        expect(await res.text(), what).toContain('<!doctype html>');
      }
      expect(await statusOf(requestId)).toBe('pending');
      expect(await balanceOf(client, seller.id)).toBe(0n);
    });

    it('approves a pending request from its button: the balance is credited once and the outcome is shown', async () => {
      const { jar, csrf } = await signIn();
      const seller = await createSeller(client, 'Approved by form');
      const requestId = await pendingRequest(seller, 1_250_000);

      const listed = await (await browse('/admin/credit-requests', { jar })).text();
      expect(listed).toContain(`value="approve:${requestId}"`);
      expect(listed).toContain('1,250,000');

      const res = await browse('/admin/credit-requests/process', {
        method: 'POST',
        jar,
        form: { _csrf: csrf, single: `approve:${requestId}`, return: '/admin/credit-requests?status=pending' },
      });
      expect(res.headers.get('location')).toBe('/admin/credit-requests?status=pending');
      const page = await landing(res, jar);
      expect(page).toContain('Approved 1 request: 1,250,000 rials credited.');
      expect(page).not.toContain(`value="approve:${requestId}"`);
      expect(await balanceOf(client, seller.id)).toBe(1_250_000n);
      expect(await statusOf(requestId)).toBe('approved');

      const again = await browse('/admin/credit-requests/process', {
        method: 'POST',
        jar,
        form: { _csrf: csrf, single: `approve:${requestId}` },
      });
      expect(await landing(again, jar)).toContain('1 request was already processed');
      expect(await balanceOf(client, seller.id)).toBe(1_250_000n);
      const ledger = await client.get(`/api/sellers/${seller.id}/transactions`, { token: ADMIN_TOKEN });
      expect(ledger.body.items).toHaveLength(1);
      expect(ledger.body.items[0]).toMatchObject({
        type: 'credit_increase',
        amount: '1250000',
        credit_request_id: requestId,
      });
    });

    it('approves and rejects many requests at once with the checkboxes', async () => {
      const { jar, csrf } = await signIn();
      const seller = await createSeller(client, 'Bulk');
      const approve = [await pendingRequest(seller, 10_000), await pendingRequest(seller, 20_000)];
      const reject = await pendingRequest(seller, 999_000);

      const approved = await browse('/admin/credit-requests/process', {
        method: 'POST',
        jar,
        form: { _csrf: csrf, action: 'approve', ids: approve },
      });
      expect(await landing(approved, jar)).toContain('Approved 2 requests: 30,000 rials credited.');
      const rejected = await browse('/admin/credit-requests/process', {
        method: 'POST',
        jar,
        form: { _csrf: csrf, action: 'reject', ids: [reject] },
      });
      expect(await landing(rejected, jar)).toContain('Rejected 1 request (999,000 rials); nothing was credited.');

      expect(await balanceOf(client, seller.id)).toBe(30_000n);
      expect(await Promise.all([...approve, reject].map(statusOf))).toEqual(['approved', 'approved', 'rejected']);
    });

    it('needs no CSRF token with the bearer token, which no browser sends by itself', async () => {
      const seller = await createSeller(client, 'Scripted');
      const requestId = await pendingRequest(seller, 5_000);
      const res = await fetch(`${origin}/admin/credit-requests/process`, {
        method: 'POST',
        redirect: 'manual',
        headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
        body: new URLSearchParams({ single: `approve:${requestId}` }),
      });
      expect(res.status).toBe(303);
      expect(await balanceOf(client, seller.id)).toBe(5_000n);
    });
  });

  describe('sellers, ledger and phone numbers', () => {
    it('deactivates a seller, whose sales are then refused, and activates it again', async () => {
      const { jar, csrf } = await signIn();
      const seller = await createSeller(client, 'Toggled');
      const off = await browse(`/admin/sellers/${seller.id}/active`, {
        method: 'POST',
        jar,
        form: { _csrf: csrf, is_active: 'false', return: '/admin/sellers' },
      });
      expect(await landing(off, jar)).toContain('Toggled is inactive');
      expect((await client.get(`/api/sellers/${seller.id}`, { token: ADMIN_TOKEN })).body.is_active).toBe(false);
      const sale = await client.post('/api/charge-sales', {
        token: seller.apiKey,
        body: { seller_id: seller.id, phone_number: '09120000001', amount: 1 },
      });
      expect(sale.status).toBe(403);
      expect(sale.body.code).toBe('seller_inactive');

      const on = await browse(`/admin/sellers/${seller.id}/active`, {
        method: 'POST',
        jar,
        form: { _csrf: csrf, is_active: 'true' },
      });
      expect(on.status).toBe(303);
      expect((await client.get(`/api/sellers/${seller.id}`, { token: ADMIN_TOKEN })).body.is_active).toBe(true);
    });

    it("lists sellers with their balance and ledger check, and shows a seller's ledger filtered by type", async () => {
      const { jar } = await signIn();
      const seller = await createSeller(client, 'Ledger shop');
      await fundSeller(client, seller, 1_250_000);
      const sale = await client.post('/api/charge-sales', {
        token: seller.apiKey,
        headers: { prefer: 'wait=20' },
        body: { seller_id: seller.id, phone_number: '09123334455', amount: 40_000 },
      });
      expect(sale.body.status).toBe('succeeded');

      const list = await (await browse('/admin/sellers?q=Ledger%20shop', { jar })).text();
      const row =
        new RegExp(`data-seller="${seller.id}"[\\s\\S]*?</tr>`).exec(list)?.[0] ?? expect.fail('seller not listed');
      expect(row).toContain('1,210,000');
      expect(row).toContain('✓ matches ledger');

      const all = await (await browse(`/admin/sellers/${seller.id}`, { jar })).text();
      expect(all.match(/data-type="/g)).toHaveLength(2);
      expect(all).toContain('-40,000');

      const sales = await (await browse(`/admin/sellers/${seller.id}?type=charge_sale`, { jar })).text();
      expect(sales).toContain('data-type="charge_sale"');
      expect(sales).not.toContain('data-type="credit_increase"');

      const first = await (await browse(`/admin/sellers/${seller.id}?limit=1`, { jar })).text();
      expect(first.match(/data-type="/g)).toEqual(['data-type="']);
      expect(first).toContain('data-type="charge_sale"');
      const older =
        /href="([^"]*cursor=[^"]*)"/.exec(first)?.[1]?.replaceAll('&amp;', '&') ?? expect.fail('no older link');
      const second = await (await browse(older, { jar })).text();
      expect(second).toContain('data-type="credit_increase"');
      expect(second).not.toContain('data-type="charge_sale"');

      const phones = await (await browse('/admin/phone-numbers?number=%2B989123334455', { jar })).text();
      expect(phones).toContain('09123334455');
      expect(phones).toContain('40,000');
    });

    it('answers a page for an unknown seller with 404', async () => {
      const { jar } = await signIn();
      for (const id of ['00000000-0000-7000-8000-000000000000', 'not-an-id']) {
        const res = await browse(`/admin/sellers/${id}`, { jar });
        expect(res.status).toBe(404);
        expect(await res.text()).toContain('Seller not found');
      }
    });
  });
});
