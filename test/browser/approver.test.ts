import { randomUUID } from 'node:crypto';
import { join } from 'node:path';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { artifacts, hasChromium, launchChromium, warnIfNoChromium } from '../support/browser.ts';
import { balanceOf, createSeller } from '../support/factories.ts';
import { Client } from '../support/http.ts';
import { ADMIN_TOKEN, System } from '../support/system.ts';

warnIfNoChromium('approver');

/**
 * A named approver, in a real browser, signs in with its email and password and approves a
 * pending credit request; an admin, in a browser of its own, finds that approval on the Audit
 * page under the approver's name.
 */
describe.skipIf(!hasChromium)('a named approver, in a real browser', () => {
  let system: System;
  let client: Client;
  let browser: Browser;

  beforeAll(async () => {
    [system, browser] = await Promise.all([System.start({ workers: 1 }), launchChromium()]);
    client = new Client(system.baseUrl);
  });
  afterAll(async () => {
    await browser?.close();
    await system?.stop();
  });

  it('signs in with email and password, approves a request; the admin sees it on the Audit page', async () => {
    const seller = await createSeller(client, 'Approved top-ups kiosk');
    const pending = await client.post('/api/credit-requests', {
      token: seller.apiKey,
      body: { seller: seller.id, amount: 3_200_000 },
    });
    expect(pending.status).toBe(201);
    const requestId: string = pending.body.id;
    const approver = { email: `approver-${randomUUID()}@ops.test`, password: `the approver's ${randomUUID()}` };
    const created = await client.post('/api/operators', {
      token: ADMIN_TOKEN,
      body: { ...approver, name: 'Named approver', role: 'approver' },
    });
    expect(created.status).toBe(201);

    const asApprover = await browser.newContext({ baseURL: system.baseUrl, viewport: { width: 1280, height: 800 } });
    const page = await asApprover.newPage();
    await page.goto('/admin/credit-requests');
    expect(new URL(page.url()).pathname).toBe('/admin/login');

    // A wrong password first: refused on the page, nobody signed in.
    await page.getByLabel('Email').fill(approver.email);
    await page.getByLabel('Password', { exact: true }).fill(`${approver.password}?`);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.waitForLoadState();
    expect(await page.getByRole('alert').textContent()).toContain('Those credentials do not sign anyone in.');
    expect((await asApprover.cookies()).some((c) => c.name === 'cs_admin_session')).toBe(false);

    await page.getByLabel('Email').fill(approver.email);
    await page.getByLabel('Password', { exact: true }).fill(approver.password);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.waitForURL('**/admin/credit-requests');
    // An approver's pages have no Audit link: that is an admin's.
    expect(await page.getByRole('link', { name: 'Audit' }).count()).toBe(0);

    const row = page.locator(`tr[data-request="${requestId}"]`);
    expect(await row.textContent()).toContain('3,200,000');
    await row.getByRole('button', { name: 'Approve', exact: true }).click();
    await page.waitForLoadState();
    expect(await page.getByRole('status').textContent()).toContain('Approved 1 request: 3,200,000 rials credited.');
    expect(await row.count()).toBe(0);
    await page.screenshot({ path: join(artifacts, 'approver-credit-requests.png'), fullPage: true });
    expect(await balanceOf(client, seller.id)).toBe(3_200_000n);

    // The approver may not read the audit trail.
    const refused = await page.goto('/admin/audit');
    expect(refused?.status()).toBe(403);
    await asApprover.close();

    const asAdmin = await browser.newContext({ baseURL: system.baseUrl, viewport: { width: 1280, height: 800 } });
    const adminPage = await asAdmin.newPage();
    const first = await adminPage.goto('/admin/audit');
    expect(first?.status()).toBe(200);
    expect(new URL(adminPage.url()).pathname).toBe('/admin/login');
    await adminPage.getByLabel('Token').fill(ADMIN_TOKEN);
    await adminPage.getByRole('button', { name: 'Sign in' }).click();
    await adminPage.waitForURL('**/admin/audit');
    expect(await adminPage.getByRole('heading', { level: 1 }).textContent()).toBe('Audit trail');

    // Filtered to the request, the page shows the one approval, by the approver, from loopback.
    await adminPage.getByLabel('Action').selectOption('credit_request.approved');
    await adminPage.getByLabel('Target').fill(requestId);
    await adminPage.getByRole('button', { name: 'Filter' }).click();
    await adminPage.waitForLoadState();
    const rows = adminPage.locator('tbody tr');
    expect(await rows.count()).toBe(1);
    const text = (await rows.first().textContent()) ?? '';
    expect(text).toContain(approver.email);
    expect(text).toContain('credit_request.approved');
    expect(text).toContain(requestId);
    expect(text).toMatch(/127\.0\.0\.1/);
    expect(text).toContain('3200000');
    await adminPage.screenshot({ path: join(artifacts, 'audit.png'), fullPage: true });

    // Unfiltered, the approver's sign-in is there too, newest first after the approval.
    await adminPage.getByRole('link', { name: 'Show all' }).click();
    await adminPage.waitForLoadState();
    const all = await adminPage.locator('tbody tr').allTextContents();
    const approval = all.findIndex((t) => t.includes('credit_request.approved') && t.includes(requestId));
    const signIn = all.findIndex((t) => t.includes('session.signed_in') && t.includes(approver.email));
    expect(approval).toBeGreaterThanOrEqual(0);
    expect(signIn).toBeGreaterThan(approval);
    await asAdmin.close();

    // The API says the same.
    const audit = await client.get(`/api/audit?action=credit_request.approved&target_id=${requestId}`, {
      token: ADMIN_TOKEN,
    });
    expect(audit.body.items).toHaveLength(1);
    expect(audit.body.items[0]).toMatchObject({
      actor: { type: 'operator', id: created.body.id, email: approver.email },
      details: { amount: '3200000', status: 'approved' },
    });
  });
});
