import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isolatedDatabase, testSql } from '../support/db.ts';
import { balanceOf, createSeller, fundSeller, type TestSeller, waitForJob } from '../support/factories.ts';
import { Client } from '../support/http.ts';
import { BROWSER, CookieJar, hiddenValue } from '../support/pages.ts';
import { ADMIN_TOKEN, System } from '../support/system.ts';

/**
 * The Deliveries page (`/admin/deliveries`) and the seller page's webhook deliveries, over HTTP
 * against real processes. With DELIVERY_GIVE_UP_AFTER=1000, the in-process simulator's
 * 09990000005 ("never knows") is unresolved a second or two after its debit: an operator decides.
 */

const NEVER_KNOWS = '09990000005';

interface Operator {
  id: string;
  email: string;
  password: string;
}

interface Session {
  jar: CookieJar;
  csrf: string;
}

describe('operator pages: deliveries and webhook deliveries', () => {
  let system: System;
  let client: Client;
  let database: Awaited<ReturnType<typeof isolatedDatabase>>;
  let sql: ReturnType<typeof testSql>;

  /** A request as a browser makes it: no redirect following, cookies from the jar, our Origin on a form. */
  async function browse(path: string, init: RequestInit & { jar?: CookieJar; form?: Record<string, string> } = {}) {
    const headers = new Headers(init.headers);
    if (!headers.has('accept')) headers.set('accept', BROWSER);
    if (init.jar?.header) headers.set('cookie', init.jar.header);
    let body = init.body;
    if (init.form) {
      body = new URLSearchParams(init.form);
      if (!headers.has('origin')) headers.set('origin', system.baseUrl);
    }
    const res = await fetch(`${system.baseUrl}${path}`, { ...init, headers, body, redirect: 'manual' });
    init.jar?.keep(res);
    return res;
  }

  async function createOperator(role: 'admin' | 'approver' | 'viewer'): Promise<Operator> {
    const email = `${role}-${randomUUID()}@ops.test`;
    const password = `a password of ${randomUUID()}`;
    const res = await client.post('/api/operators', {
      token: ADMIN_TOKEN,
      body: { email, name: `A ${role}`, role, password },
    });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    return { id: res.body.id, email, password };
  }

  async function signIn(op: Operator): Promise<Session> {
    const jar = new CookieJar();
    const form = await browse('/admin/login', { jar });
    const res = await browse('/admin/login', {
      method: 'POST',
      jar,
      form: { email: op.email, password: op.password, _csrf: hiddenValue(await form.text(), '_csrf'), next: '/admin' },
    });
    expect(res.status, await res.clone().text()).toBe(303);
    const home = await browse('/admin', { jar });
    expect(home.status).toBe(200);
    return { jar, csrf: hiddenValue(await home.text(), '_csrf') };
  }

  async function page(path: string, session: Session): Promise<string> {
    const res = await browse(path, { jar: session.jar });
    expect(res.status, path).toBe(200);
    return res.text();
  }

  /** Follows the redirect after a form, as the browser does, and returns the page it lands on. */
  async function landing(res: Response, session: Session): Promise<string> {
    expect(res.status, await res.clone().text()).toBe(303);
    return page(res.headers.get('location') ?? '', session);
  }

  /** A sale that is debited and whose top-up never becomes known: it ends up unresolved. */
  async function unresolvedSale(seller: TestSeller, amount: number): Promise<string> {
    const sale = await client.post('/api/charge-sales', {
      token: seller.apiKey,
      body: { seller_id: seller.id, phone_number: NEVER_KNOWS, amount },
    });
    expect(sale.status).toBe(202);
    const jobId: string = sale.body.job_id;
    const deadline = Date.now() + 30_000;
    for (;;) {
      const res = await client.get(`/api/deliveries/${jobId}`, { token: ADMIN_TOKEN });
      if (res.body?.status === 'unresolved') return jobId;
      if (Date.now() > deadline) throw new Error(`delivery ${jobId} not unresolved: ${JSON.stringify(res.body)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** The row of the delivery in the page's table, or undefined. */
  const rowOf = (html: string, jobId: string) =>
    new RegExp(`<tr data-delivery="${jobId}"[^>]*>([\\s\\S]*?)</tr>`).exec(html)?.[1];
  const resolveAction = (jobId: string) => `action="/admin/deliveries/${jobId}/resolve"`;
  const refundRows = (jobId: string) =>
    sql`select id, amount, balance_after from transactions where job_id = ${jobId} and type = 'charge_refund'`;
  const resolutionAudits = (jobId: string) =>
    sql`select actor_type, actor_id, details from audit_events
        where action = 'delivery.resolved' and target_id = ${jobId}`;

  beforeAll(async () => {
    // A database of its own: the page's and the overview's counts are exact here.
    database = await isolatedDatabase('deliveries_page');
    sql = testSql(database.ownerUrl);
    system = await System.start({
      workers: 1,
      databaseUrl: database.applicationUrl,
      env: { DELIVERY_GIVE_UP_AFTER: '1000', WEBHOOK_ALLOW_PRIVATE: '1' },
    });
    client = new Client(system.baseUrl);
  });
  afterAll(async () => {
    await system?.stop();
    await sql?.end();
    await database?.drop();
  });

  it('lists an unresolved delivery; a viewer sees no form and its POST is refused; CSRF is enforced', async () => {
    const seller = await createSeller(client, 'Stuck Shop');
    await fundSeller(client, seller, 20_000);
    const jobId = await unresolvedSale(seller, 7_000);
    const viewer = await signIn(await createOperator('viewer'));

    const html = await page('/admin/deliveries', viewer);
    expect(html).toContain('<h1>Deliveries</h1>');
    expect(html).toContain('<a href="/admin/deliveries" aria-current="page">Deliveries</a>');
    const row = rowOf(html, jobId) ?? expect.fail('the unresolved delivery is not listed');
    expect(row).toContain(`href="/admin/sellers/${seller.id}"`);
    expect(row).toContain('Stuck Shop');
    expect(row).toContain(NEVER_KNOWS);
    expect(row).toContain('7,000');
    expect(row).toContain('simulator');
    expect(row).toContain('unresolved');
    // The viewer reads it, and is offered nothing to do.
    expect(html).not.toContain(resolveAction(jobId));
    expect(html).not.toContain('Mark delivered');

    const refused = await browse(`/admin/deliveries/${jobId}/resolve`, {
      method: 'POST',
      jar: viewer.jar,
      form: { _csrf: viewer.csrf, outcome: 'refund' },
    });
    expect(refused.status).toBe(403);
    expect(await refused.text()).toContain('<!doctype html>');

    // An approver without the session's token, with another token, or from another site: refused.
    const approver = await signIn(await createOperator('approver'));
    for (const [what, init] of [
      ['no token', { form: { outcome: 'refund' } }],
      ['another token', { form: { outcome: 'refund', _csrf: viewer.csrf } }],
      [
        'another origin',
        { form: { outcome: 'refund', _csrf: approver.csrf }, headers: { origin: 'https://evil.example' } },
      ],
    ] as const) {
      const res = await browse(`/admin/deliveries/${jobId}/resolve`, { method: 'POST', jar: approver.jar, ...init });
      expect(res.status, what).toBe(403);
    }

    // Nothing was decided by any of them.
    expect((await client.get(`/api/deliveries/${jobId}`, { token: ADMIN_TOKEN })).body.status).toBe('unresolved');
    expect(await resolutionAudits(jobId)).toHaveLength(0);
    expect(await refundRows(jobId)).toHaveLength(0);
    expect(await balanceOf(client, seller.id)).toBe(13_000n);
  });

  it("refunds from an approver's Refund form: the job ends rejected, one refund row, one audit row", async () => {
    const seller = await createSeller(client, 'Refund Shop');
    await fundSeller(client, seller, 50_000);
    const jobId = await unresolvedSale(seller, 12_000);
    expect(await balanceOf(client, seller.id)).toBe(38_000n);
    const op = await createOperator('approver');
    const approver = await signIn(op);

    const html = await page('/admin/deliveries?status=unresolved', approver);
    const row = rowOf(html, jobId) ?? expect.fail('the unresolved delivery is not listed');
    expect(row).toContain(resolveAction(jobId));
    expect(row).toContain('Mark delivered');
    expect(row).toContain('Refund');
    expect(hiddenValue(row, '_csrf')).toBe(approver.csrf);

    const res = await browse(`/admin/deliveries/${jobId}/resolve`, {
      method: 'POST',
      jar: approver.jar,
      form: { _csrf: approver.csrf, outcome: 'refund', return: '/admin/deliveries?status=refunded' },
    });
    expect(res.headers.get('location')).toBe('/admin/deliveries?status=refunded');
    const after = await landing(res, approver);
    expect(after).toContain('refunded: 12,000 rials credited back');

    const job = await waitForJob(client, jobId);
    const refunds = await refundRows(jobId);
    expect(refunds).toHaveLength(1);
    const [refund] = refunds;
    expect(refund?.amount).toBe(12_000n);
    expect(refund?.balance_after).toBe(50_000n);
    expect(job).toMatchObject({
      status: 'rejected',
      error: { code: 'delivery_failed', refund_transaction_id: String(refund?.id) },
    });
    expect(await balanceOf(client, seller.id)).toBe(50_000n);
    expect(rowOf(after, jobId)).toContain(`Refund ledger row #${refund?.id}`);

    const audits = await resolutionAudits(jobId);
    expect(audits).toEqual([{ actor_type: 'operator', actor_id: op.id, details: { outcome: 'refund' } }]);
    const reconcile = await client.get(`/api/sellers/${seller.id}/reconcile`, { token: ADMIN_TOKEN });
    expect(reconcile.body.is_reconciled).toBe(true);

    // Again, or the other way: already decided, and nothing more happens.
    for (const outcome of ['refund', 'delivered']) {
      const again = await browse(`/admin/deliveries/${jobId}/resolve`, {
        method: 'POST',
        jar: approver.jar,
        form: { _csrf: approver.csrf, outcome },
      });
      expect(await landing(again, approver)).toContain('was already decided (refunded)');
    }
    expect(await refundRows(jobId)).toHaveLength(1);
    expect(await resolutionAudits(jobId)).toHaveLength(1);
    expect(await balanceOf(client, seller.id)).toBe(50_000n);
  });

  it("marks a delivery delivered from an admin's form: the sale succeeds and nothing is refunded", async () => {
    const seller = await createSeller(client, 'Delivered Shop');
    await fundSeller(client, seller, 10_000);
    const jobId = await unresolvedSale(seller, 4_000);
    const admin = await signIn(await createOperator('admin'));
    const res = await browse(`/admin/deliveries/${jobId}/resolve`, {
      method: 'POST',
      jar: admin.jar,
      form: { _csrf: admin.csrf, outcome: 'delivered', return: '/admin/deliveries' },
    });
    expect(await landing(res, admin)).toContain('marked delivered');
    const job = await waitForJob(client, jobId);
    expect(job).toMatchObject({ status: 'succeeded', result: { delivery: { status: 'delivered' } } });
    expect(await refundRows(jobId)).toHaveLength(0);
    expect(await balanceOf(client, seller.id)).toBe(6_000n);
    const delivered = await page('/admin/deliveries?status=delivered', admin);
    expect(rowOf(delivered, jobId)).toContain('delivered chosen by');
  });

  it('shows on the overview how many deliveries are unresolved and in conflict, with links to them', async () => {
    const viewer = await signIn(await createOperator('viewer'));
    const [counted] = await sql`select count(*)::int as count from deliveries where status = 'unresolved'`;
    // The first test's sale is still unresolved; a test run alone makes one.
    let unresolved = Number(counted?.count);
    if (unresolved === 0) {
      const seller = await createSeller(client);
      await fundSeller(client, seller, 1_000);
      await unresolvedSale(seller, 1_000);
      unresolved = 1;
    }
    const home = await page('/admin', viewer);
    expect(home).toContain('<h1>The last hour</h1>');
    expect(home).toContain(
      `<a href="/admin/deliveries?status=unresolved">${unresolved} unresolved ${unresolved === 1 ? 'delivery' : 'deliveries'}</a>`,
    );
    expect(home).toContain('<a href="/admin/deliveries?status=conflict">0 deliveries in conflict</a>');
    const list = await page('/admin/deliveries', viewer);
    expect(list).toContain(`Unresolved (${unresolved})`);
  });

  it("shows a seller's webhook URL, never its secret, and its latest webhook deliveries", async () => {
    const seller = await createSeller(client, 'Hooked Shop');
    const url = `http://127.0.0.1:9/hooks/${randomUUID()}`;
    const set = await client.request('PUT', `/api/sellers/${seller.id}/webhook`, {
      token: seller.apiKey,
      body: { url },
    });
    expect(set.status, JSON.stringify(set.body)).toBe(200);
    const secret: string = set.body.secret;
    expect(secret).toMatch(/^whsec_/);
    // A delivery the sender gave up on, as the sender leaves it: failed, after its attempts.
    const failedId = `msg_${randomUUID().replaceAll('-', '')}`;
    await sql`
      insert into webhook_deliveries (id, seller_id, event_type, payload, status, attempts, last_status_code, last_error)
      values (${failedId}, ${seller.id}, 'credit_request.approved', ${sql.json({ id: failedId })}, 'failed', 7, 503,
              'HTTP 503')`;
    // And one the outbox wrote with its effect: a credit approved.
    await fundSeller(client, seller, 3_000);
    const [outboxed] = await sql`
      select id from webhook_deliveries where seller_id = ${seller.id} and id <> ${failedId}`;
    expect(outboxed, 'the approval wrote a webhook delivery').toBeDefined();

    const viewer = await signIn(await createOperator('viewer'));
    const html = await page(`/admin/sellers/${seller.id}`, viewer);
    expect(html).toContain('<h2>Webhook deliveries</h2>');
    expect(html).toContain(`<code>${url}</code>`);
    expect(html).not.toContain(secret);
    expect(html).not.toContain(secret.slice('whsec_'.length));
    const failed =
      new RegExp(`<tr data-webhook-delivery="${failedId}"[^>]*>([\\s\\S]*?)</tr>`).exec(html)?.[1] ??
      expect.fail('the failed webhook delivery is not listed');
    expect(failed).toContain('credit_request.approved');
    expect(failed).toContain('failed');
    expect(failed).toMatch(/<td class="num">7<\/td>/);
    expect(failed).toMatch(/<td class="num">503<\/td>/);
    expect(html).toContain(`data-webhook-delivery="${outboxed?.id}"`);

    const other = await createSeller(client, 'Unhooked Shop');
    const none = await page(`/admin/sellers/${other.id}`, viewer);
    expect(none).toContain('No webhook set');
    expect(none).toContain('No webhook deliveries.');
  });
});
