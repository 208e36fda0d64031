import { join } from 'node:path';
import type { Browser, BrowserContext } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { artifacts, hasChromium, launchChromium, warnIfNoChromium } from '../support/browser.ts';
import { balanceOf, createSeller } from '../support/factories.ts';
import { Client } from '../support/http.ts';
import { ADMIN_TOKEN, System } from '../support/system.ts';

warnIfNoChromium('operator');

describe.skipIf(!hasChromium)('the operator, in a real browser', () => {
  let system: System;
  let client: Client;
  let browser: Browser;
  let context: BrowserContext;

  beforeAll(async () => {
    [system, browser] = await Promise.all([System.start({ workers: 1 }), launchChromium()]);
    client = new Client(system.baseUrl);
    context = await browser.newContext({ baseURL: system.baseUrl, viewport: { width: 1280, height: 800 } });
  });
  afterAll(async () => {
    await browser?.close();
    await system?.stop();
  });

  it('signs in with the admin token, approves a pending request, and sees the balance change', async () => {
    const seller = await createSeller(client, 'Corner shop');
    const pending = await client.post('/api/credit-requests', {
      token: seller.apiKey,
      body: { seller: seller.id, amount: 2_500_000 },
    });
    expect(pending.status).toBe(201);
    const page = await context.newPage();

    await page.goto('/admin/sellers');
    expect(new URL(page.url()).pathname).toBe('/admin/login');
    await page.getByLabel('Token').fill(ADMIN_TOKEN);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.waitForURL('**/admin/sellers');
    const balanceCell = page.locator(`tr[data-seller="${seller.id}"] td[data-balance]`);
    expect((await balanceCell.textContent())?.trim()).toBe('0');

    const session = (await context.cookies()).find((cookie) => cookie.name === 'cs_admin_session');
    expect(session).toMatchObject({ httpOnly: true, sameSite: 'Strict', path: '/admin', secure: false });

    await page.getByRole('link', { name: 'Credit requests' }).click();
    const row = page.locator(`tr[data-request="${pending.body.id}"]`);
    expect(await row.textContent()).toContain('2,500,000');
    await page.screenshot({ path: join(artifacts, 'credit-requests.png'), fullPage: true });
    await row.getByRole('button', { name: 'Approve', exact: true }).click();
    await page.waitForLoadState();
    expect(await page.getByRole('status').textContent()).toContain('Approved 1 request: 2,500,000 rials credited.');
    expect(await row.count()).toBe(0);

    await page.getByRole('link', { name: 'Sellers' }).click();
    await page.waitForURL('**/admin/sellers');
    expect((await balanceCell.textContent())?.trim()).toBe('2,500,000');
    expect(await balanceOf(client, seller.id)).toBe(2_500_000n);

    await page.screenshot({ path: join(artifacts, 'operator.png'), fullPage: true });

    await page.getByRole('link', { name: 'Corner shop', exact: true }).click();
    expect(await page.locator('tr[data-type="credit_increase"]').textContent()).toContain('2,500,000');
    await page.screenshot({ path: join(artifacts, 'seller.png'), fullPage: true });
    await page.close();
  });

  it('opens the queue dashboard with the same session, listing the partition queues', async () => {
    const page = await context.newPage();
    const refused: string[] = [];
    page.on('response', (res) => {
      if (res.status() >= 400) refused.push(`${res.status()} ${res.url()}`);
    });
    await page.goto('/admin/queues');
    expect(new URL(page.url()).pathname).toBe('/admin/queues');
    // The dashboard is a script application: seeing a queue proves its assets and API load behind the gate.
    await page.getByText('Partition 00', { exact: true }).first().waitFor({ timeout: 15_000 });
    expect(refused).toEqual([]);
    await page.screenshot({ path: join(artifacts, 'queues.png') });
    await page.close();
  });
});
