import { join } from 'node:path';
import type { Browser, Locator, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { artifacts, hasChromium, launchChromium, warnIfNoChromium } from '../support/browser.ts';
import { isolatedDatabase } from '../support/db.ts';
import { createSeller, waitForJob } from '../support/factories.ts';
import { Client } from '../support/http.ts';
import { ADMIN_TOKEN, System } from '../support/system.ts';

warnIfNoChromium('overview');

interface Overview {
  sales_per_minute: Array<{ minute: string; count: number }>;
  refusals_by_code: Array<{ code: string; count: number }>;
  open_jobs_by_partition: Array<{ partition: number; open: number; queue_messages: number | null }>;
  submit_to_commit_p99_ms: number | null;
  submit_to_commit_p99_ms_per_minute: Array<{ minute: string; p99_ms: number | null }>;
}

interface Shown {
  key: string;
  series: string | null;
  value: number | null;
  title: string;
}

/** What each bar of a chart shows: its key, series, `data-value` and the `<title>` a hover shows. */
function barsOf(chart: Locator): Promise<Shown[]> {
  return chart.locator('g[data-key]').evaluateAll((groups) =>
    groups.map((g) => ({
      key: g.getAttribute('data-key') ?? '',
      series: g.getAttribute('data-series'),
      value: g.hasAttribute('data-value') ? Number(g.getAttribute('data-value')) : null,
      title: g.querySelector(':scope > title')?.textContent ?? '',
    })),
  );
}

describe.skipIf(!hasChromium)('the operator overview, in a real browser', () => {
  let database: Awaited<ReturnType<typeof isolatedDatabase>>;
  let system: System;
  let client: Client;
  let browser: Browser;

  beforeAll(async () => {
    // A database of its own: the overview counts every job, and other files make theirs.
    database = await isolatedDatabase('dashboard');
    [system, browser] = await Promise.all([
      System.start({ workers: 1, databaseUrl: database.applicationUrl }),
      launchChromium(),
    ]);
    client = new Client(system.baseUrl);
  });
  afterAll(async () => {
    await browser?.close();
    await system?.stop();
    await database?.drop();
  });

  it('signs in, lands on the overview, and its four charts show what GET /api/overview says and what was done', async () => {
    const seller = await createSeller(client, 'Dashboard shop');
    /** Every job this test made, final: the overview counts them and nothing else. */
    const jobs: Array<{ submitted_at: string; finished_at: string }> = [];
    const final = async (jobId: string) => {
      const job = await waitForJob(client, jobId);
      jobs.push(job);
      return job;
    };
    const request = await client.post('/api/credit-requests', {
      token: seller.apiKey,
      body: { seller: seller.id, amount: 50_000 },
    });
    const approval = await client.post(`/api/credit-requests/${request.body.id}/process`, {
      token: ADMIN_TOKEN,
      body: { action: 'approve' },
    });
    expect((await final(approval.body.job_id)).status).toBe('succeeded');
    const SALES = 6;
    const sell = async (amount: number) => {
      const res = await client.post('/api/charge-sales', {
        token: seller.apiKey,
        body: { seller_id: seller.id, phone_number: '09124445566', amount },
      });
      expect(res.status).toBe(202);
      return final(res.body.job_id);
    };
    for (let i = 0; i < SALES; i++) expect((await sell(5_000)).status).toBe('succeeded');
    for (const amount of [30_000, 21_000]) expect((await sell(amount)).error.code).toBe('insufficient_balance');

    const context = await browser.newContext({ baseURL: system.baseUrl, viewport: { width: 1280, height: 900 } });
    const page: Page = await context.newPage();
    const refused: string[] = [];
    page.on('response', (res) => {
      if (res.status() >= 400 && !res.url().endsWith('/favicon.ico')) refused.push(`${res.status()} ${res.url()}`);
    });
    await page.goto('/admin');
    expect(new URL(page.url()).pathname).toBe('/admin/login');
    await page.getByLabel('Token').fill(ADMIN_TOKEN);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.waitForURL((url) => url.pathname === '/admin');
    expect(await page.getByRole('heading', { level: 1 }).textContent()).toBe('The last hour');
    expect(await page.getByRole('link', { name: 'Overview' }).getAttribute('aria-current')).toBe('page');

    const [api, sales, refusals, depth, latency] = await Promise.all([
      client.get<Overview>('/api/overview', { token: ADMIN_TOKEN }),
      barsOf(page.getByRole('img', { name: /^Committed sales per minute/ })),
      barsOf(page.getByRole('img', { name: /^Refusals by code/ })),
      barsOf(page.getByRole('img', { name: /^Queue depth per partition/ })),
      barsOf(page.getByRole('img', { name: /^p99 submit to commit latency per minute/ })),
    ]);
    expect(api.status).toBe(200);
    const overview = api.body;
    expect(refused).toEqual([]);

    // Sales per minute: 60 bars; where page and API show the same minute, the same number; in all,
    // the sales this test made. Each bar's title says its number under its minute.
    expect(sales).toHaveLength(60);
    const apiSales = new Map(overview.sales_per_minute.map((m) => [m.minute, m.count]));
    for (const bar of sales) {
      if (apiSales.has(bar.key)) expect(bar.value, bar.key).toBe(apiSales.get(bar.key));
      expect(bar.title).toBe(`${bar.key.slice(11, 16)}: ${bar.value}`);
    }
    expect(sales.reduce((sum, bar) => sum + (bar.value ?? 0), 0)).toBe(SALES);
    expect(overview.sales_per_minute.reduce((sum, m) => sum + m.count, 0)).toBe(SALES);
    expect(
      await page.getByRole('img', { name: `Committed sales per minute, last 60 minutes: ${SALES} in all` }).count(),
    ).toBe(1);

    // Refusals by code: one bar, the two sales over the balance.
    expect(refusals.map((b) => [b.key, b.value])).toEqual(overview.refusals_by_code.map((r) => [r.code, r.count]));
    expect(refusals.map((b) => [b.key, b.value, b.title])).toEqual([
      ['insufficient_balance', 2, 'insufficient_balance, jobs rejected: 2'],
    ]);

    // Queue depth: every partition, open jobs and queue messages, nothing left over.
    const bySeries = (series: string) =>
      depth.filter((b) => b.series === series).map((b) => [Number(b.key), b.value] as const);
    expect(bySeries('open jobs (PostgreSQL)')).toEqual(
      overview.open_jobs_by_partition.map((p) => [p.partition, p.open]),
    );
    expect(bySeries('queue messages (Redis)')).toEqual(
      overview.open_jobs_by_partition.map((p) => [p.partition, p.queue_messages]),
    );
    expect(bySeries('open jobs (PostgreSQL)')).toHaveLength(16);
    expect(overview.open_jobs_by_partition.every((p) => p.open === 0)).toBe(true);

    // Latency: the hour's p99 as the dashed line, and each minute's.
    const overall = latency.find((b) => b.key === 'overall');
    expect(overall?.value).toBe(overview.submit_to_commit_p99_ms);
    // PostgreSQL's percentile_cont over the jobs' own latencies, which the API gives to the millisecond.
    const latencies = jobs.map((j) => Date.parse(j.finished_at) - Date.parse(j.submitted_at)).sort((a, b) => a - b);
    const rank = 0.99 * (latencies.length - 1);
    const [lower, upper] = [latencies[Math.floor(rank)] as number, latencies[Math.ceil(rank)] as number];
    const p99 = lower + (upper - lower) * (rank - Math.floor(rank));
    expect(Math.abs((overall?.value as number) - p99)).toBeLessThan(2);
    expect(overview.submit_to_commit_p99_ms).toBeGreaterThan(0);
    const apiLatency = new Map(overview.submit_to_commit_p99_ms_per_minute.map((m) => [m.minute, m.p99_ms]));
    const minutes = latency.filter((b) => b.key !== 'overall');
    expect(minutes).toHaveLength(60);
    for (const bar of minutes) if (apiLatency.has(bar.key)) expect(bar.value, bar.key).toBe(apiLatency.get(bar.key));
    expect(minutes.some((b) => b.value !== null)).toBe(true);

    // No script ran or was refused: the page is markup and inline style only.
    expect(await page.locator('script').count()).toBe(0);

    // A backlog: with the worker stopped, three sales wait, each in a message of its own. The page,
    // reloaded, shows them where the API does; the sales chart does not count them (not committed).
    await system.stopWorker(0);
    const waiting = [];
    for (let i = 0; i < 3; i++) {
      const res = await client.post('/api/charge-sales', {
        token: seller.apiKey,
        body: { seller_id: seller.id, phone_number: '09124445566', amount: 1_000 },
      });
      expect(res.status).toBe(202);
      waiting.push(res.body.job_id as string);
    }
    await page.reload();
    const [backlogApi, backlogDepth, backlogSales] = await Promise.all([
      client.get<Overview>('/api/overview', { token: ADMIN_TOKEN }),
      barsOf(page.getByRole('img', { name: /^Queue depth per partition/ })),
      barsOf(page.getByRole('img', { name: /^Committed sales per minute/ })),
    ]);
    const backlog = backlogApi.body.open_jobs_by_partition;
    const shown = (series: string) =>
      backlogDepth.filter((b) => b.series === series).map((b) => [Number(b.key), b.value] as const);
    expect(shown('open jobs (PostgreSQL)')).toEqual(backlog.map((p) => [p.partition, p.open]));
    expect(shown('queue messages (Redis)')).toEqual(backlog.map((p) => [p.partition, p.queue_messages]));
    expect(backlog.filter((p) => p.open > 0).map((p) => [p.open, p.queue_messages])).toEqual([[3, 3]]);
    expect(backlogSales.reduce((sum, bar) => sum + (bar.value ?? 0), 0)).toBe(SALES);
    await page.screenshot({ path: join(artifacts, 'overview.png'), fullPage: true });

    system.startWorker();
    for (const id of waiting) expect((await final(id)).status).toBe('succeeded');
    await context.close();
  });
});
