import { join } from 'node:path';
import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { artifacts, hasChromium, launchChromium, warnIfNoChromium } from '../support/browser.ts';
import { balanceOf, createSeller, fundSeller } from '../support/factories.ts';
import { Client } from '../support/http.ts';
import { System } from '../support/system.ts';

warnIfNoChromium('API reference');

describe.skipIf(!hasChromium)('the API reference at /docs, in a real browser', () => {
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

  it("renders the document, and tries an operation with a seller's key", async () => {
    const seller = await createSeller(client, 'Docs shop');
    // A balance other than the starting 0, so the page is seen to show this seller's own.
    await fundSeller(client, seller, 4321);
    const direct = await client.get(`/api/sellers/${seller.id}/balance`, { token: seller.apiKey });
    expect(direct.status).toBe(200);
    expect(await balanceOf(client, seller.id)).toBe(4321n);

    const context = await browser.newContext({ baseURL: system.baseUrl, viewport: { width: 1280, height: 800 } });
    const page = await context.newPage();
    const refused: string[] = [];
    const errors: string[] = [];
    page.on('response', (res) => {
      if (res.status() >= 400) refused.push(`${res.status()} ${res.url()}`);
    });
    // CSP violations reach the console as errors; the event names the directive besides.
    page.on('console', (msg) => {
      if (msg.type() === 'error') errors.push(msg.text());
    });
    page.on('pageerror', (error) => errors.push(`page error: ${error.message}`));
    // Text, not a function: the tests are compiled without the DOM's types.
    await page.addInitScript({
      content: `document.addEventListener('securitypolicyviolation', (event) =>
        console.error('CSP violation: ' + event.violatedDirective + ' ' + event.blockedURI));`,
    });
    const balanceRequests: Array<string | undefined> = [];
    page.on('request', async (req) => {
      if (new URL(req.url()).pathname === `/api/sellers/${seller.id}/balance`) {
        balanceRequests.push((await req.allHeaders()).authorization);
      }
    });

    const answer = await page.goto('/docs');
    expect(answer?.status()).toBe(200);
    expect(answer?.headers()['content-security-policy']).toContain("script-src 'self'");
    await page.locator('.info .title').getByText('Charge Sales API').waitFor({ timeout: 15_000 });
    const operation = page.locator('#operations-Sellers-getSellerBalance');
    await operation.waitFor();
    // Every operation of the document has its block, under its method and path.
    const doc = (await client.get('/openapi.json')).body as { paths: Record<string, Record<string, unknown>> };
    const documented = Object.entries(doc.paths).flatMap(([path, methods]) =>
      Object.keys(methods).map((method) => `${method.toUpperCase()} ${path}`),
    );
    const rendered = await page
      .locator('.opblock-summary')
      .evaluateAll((blocks) =>
        blocks.map(
          (block) =>
            `${block.querySelector('.opblock-summary-method')?.textContent} ${block.querySelector('.opblock-summary-path')?.getAttribute('data-path')}`,
        ),
      );
    expect(rendered.sort()).toEqual(documented.sort());

    await page.getByRole('button', { name: 'Authorize' }).first().click();
    const dialog = page.locator('.modal-ux');
    await dialog.getByLabel('auth-bearer-value').fill(seller.apiKey);
    await dialog.getByRole('button', { name: 'Apply credentials' }).click();
    await dialog.getByRole('button', { name: 'Close' }).click();
    await dialog.waitFor({ state: 'detached' });

    await operation.locator('.opblock-summary-control').click();
    // tryItOutEnabled: the operation opens ready to send, its button offering to cancel.
    await operation.getByRole('button', { name: 'Cancel' }).waitFor();
    await operation.locator('tr[data-param-name="id"] input').fill(seller.id);
    await operation.getByRole('button', { name: 'Execute' }).click();

    const live = operation.locator('.live-responses-table .response');
    await live.first().waitFor({ timeout: 15_000 });
    expect((await live.locator('.response-col_status').first().textContent())?.trim()).toBe('200');
    const shown = await live.locator('.response-col_description pre').first().textContent();
    expect(JSON.parse(shown ?? '')).toEqual(direct.body);
    expect(direct.body).toEqual({ seller_id: seller.id, credit_balance: '4321' });
    expect(balanceRequests).toEqual([`Bearer ${seller.apiKey}`]);

    // The token lives in the page's memory only.
    expect(JSON.stringify(await context.storageState())).not.toContain(seller.apiKey);

    await page.screenshot({ path: join(artifacts, 'docs.png'), fullPage: true });
    expect(refused).toEqual([]);
    expect(errors).toEqual([]);
    await context.close();
  });
});
