import { randomUUID } from 'node:crypto';
import { migrateDatabase } from '@cs/db';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { isolatedDatabase, testSql } from './support/db.ts';
import { balanceOf, createSeller, fundSeller, waitForJob } from './support/factories.ts';
import { Client, readEventStream } from './support/http.ts';
import { runReconcile } from './support/reconcile.ts';
import { ADMIN_TOKEN, System } from './support/system.ts';

describe('operations: pushed results, metrics, OpenAPI, health, reconcile', () => {
  let system: System;
  let client: Client;
  let database: Awaited<ReturnType<typeof isolatedDatabase>>;

  beforeAll(async () => {
    // A database of its own: the checks here cover every seller, and other files leave
    // deliberately inconsistent ledgers in the shared one.
    database = await isolatedDatabase('operations');
    system = await System.start({ workers: 1, databaseUrl: database.applicationUrl });
    client = new Client(system.baseUrl);
  });
  afterAll(async () => {
    await system?.stop();
    await database?.drop();
  });

  it('streams a job from queued to its final state, and closes after it', async () => {
    const seller = await createSeller(client);
    await fundSeller(client, seller, 10_000);
    // Stop the worker so the job is still queued when the stream opens.
    await system.stopWorker(0);
    const sale = await client.post('/api/charge-sales', {
      token: seller.apiKey,
      body: { seller_id: seller.id, phone_number: '09121234567', amount: 2500 },
    });
    const stream = readEventStream(`${system.baseUrl}/api/jobs/${sale.body.job_id}/events`, seller.apiKey);
    await new Promise((r) => setTimeout(r, 500));
    system.startWorker();
    const events = await stream;
    const statuses = events.map((e) => e.data.status);
    expect(statuses[0]).toBe('queued');
    expect(statuses.at(-1)).toBe('succeeded');
    expect(new Set(statuses).size).toBe(statuses.length);
    expect(events.at(-1)?.data.result.new_balance).toBe('7500');
  });

  it('sends the final state at once to a client that connects after the job finished', async () => {
    const seller = await createSeller(client);
    const sale = await client.post('/api/charge-sales', {
      token: seller.apiKey,
      body: { seller_id: seller.id, phone_number: '09121234567', amount: 2500 },
    });
    await waitForJob(client, sale.body.job_id);
    const events = await readEventStream(`${system.baseUrl}/api/jobs/${sale.body.job_id}/events`, ADMIN_TOKEN, 5000);
    expect(events).toHaveLength(1);
    expect(events[0]?.data).toMatchObject({
      status: 'rejected',
      error: { code: 'insufficient_balance', shortage: '2500' },
    });
  });

  it("refuses another seller's event stream with 403 and an unknown job with 404", async () => {
    const owner = await createSeller(client);
    const other = await createSeller(client);
    const sale = await client.post('/api/charge-sales', {
      token: owner.apiKey,
      body: { seller_id: owner.id, phone_number: '09121234567', amount: 1 },
    });
    expect((await client.get(`/api/jobs/${sale.body.job_id}/events`, { token: other.apiKey })).status).toBe(403);
    expect((await client.get('/api/jobs/nope/events', { token: ADMIN_TOKEN })).status).toBe(404);
  });

  it('exposes jobs, latency, queue depth, HTTP timings and unreconciled sellers as Prometheus metrics', async () => {
    const seller = await createSeller(client);
    await fundSeller(client, seller, 5000);
    await client.post('/api/charge-sales', {
      token: seller.apiKey,
      headers: { prefer: 'wait=10' },
      body: { seller_id: seller.id, phone_number: '09121234567', amount: 1000 },
    });
    const res = await fetch(`${system.baseUrl}/metrics`);
    const text = await res.text();
    expect(res.headers.get('content-type')).toContain('text/plain');
    expect(text).toMatch(/jobs_finished_total\{type="charge_sale",outcome="succeeded"\} [1-9]/);
    expect(text).toMatch(/jobs_finished_total\{type="credit_approval",outcome="succeeded"\} [1-9]/);
    expect(text).toMatch(/job_latency_seconds_count\{type="charge_sale"\} [1-9]/);
    expect(text).toMatch(/queue_messages\{partition="15",state="wait"\} \d+/);
    expect(text).toMatch(
      /http_request_duration_seconds_count\{method="POST",route="\/api\/charge-sales",status="200"\} [1-9]/,
    );
    expect(text).toMatch(/^sellers_unreconciled 0$/m);
  });

  it('documents every route of the app in /openapi.json, and renders it at /docs', async () => {
    const doc = (await client.get('/openapi.json')).body;
    const documented = new Set(
      Object.entries(doc.paths as Record<string, object>).flatMap(([path, methods]) =>
        Object.keys(methods).map((m) => `${m.toUpperCase()} ${path}`),
      ),
    );
    for (const route of [
      'POST /api/sellers',
      'GET /api/sellers',
      'GET /api/sellers/{id}',
      'PATCH /api/sellers/{id}',
      'GET /api/sellers/{id}/balance',
      'GET /api/sellers/{id}/transactions',
      'GET /api/sellers/{id}/reconcile',
      'POST /api/credit-requests',
      'GET /api/credit-requests',
      'POST /api/credit-requests/{id}/process',
      'POST /api/charge-sales',
      'GET /api/jobs/{id}',
      'GET /api/jobs/{id}/events',
      'GET /api/transactions',
      'GET /api/phone-numbers',
      'GET /api/phone-numbers/{number}',
    ]) {
      expect(documented, route).toContain(route);
    }
    // Headers read by the handlers themselves are documented too.
    const headersOf = (path: string) =>
      (doc.paths[path].post.parameters as Array<{ name: string; in: string }>)
        .filter((p) => p.in === 'header')
        .map((p) => p.name);
    expect(headersOf('/api/charge-sales')).toEqual(['idempotency-key', 'prefer']);
    expect(headersOf('/api/credit-requests/{id}/process')).toEqual(['prefer']);
    // /docs is Swagger UI over this document (its rendering is proven in test/browser/docs.test.ts):
    // the page, our init script and the package's own files, under a CSP with no inline script.
    const page = await fetch(`${system.baseUrl}/docs`);
    expect(page.headers.get('content-type')).toContain('text/html');
    expect(page.headers.get('content-security-policy')).toContain("script-src 'self';");
    expect(page.headers.get('x-frame-options')).toBe('DENY');
    const html = await page.text();
    expect(html).not.toMatch(/<script>|<script(?![^>]*\bsrc=)[^>]*>/);
    const sources = [...html.matchAll(/(?:src|href)="(\/docs\/[^"]+)"/g)].map((m) => m[1] ?? '');
    expect(sources).toContain('/docs/init.js');
    const types: Record<string, string> = { js: 'text/javascript', css: 'text/css', png: 'image/png' };
    for (const source of sources) {
      const asset = await fetch(`${system.baseUrl}${source}`);
      expect(asset.status, source).toBe(200);
      expect(asset.headers.get('content-type'), source).toContain(types[source.split('.').at(-1) ?? '']);
    }
    const init = await (await fetch(`${system.baseUrl}/docs/init.js`)).text();
    expect(init).toContain('"url":"/openapi.json"');
    expect(init).toContain('"persistAuthorization":false');
    // Only the allow-listed files of the package, under its own version: nothing else of the disk.
    const bundle = sources.find((s) => s.endsWith('/swagger-ui-bundle.js')) ?? '';
    expect((await fetch(`${system.baseUrl}${bundle}`)).headers.get('cache-control')).toContain('immutable');
    const assets = bundle.slice(0, bundle.lastIndexOf('/'));
    for (const path of [
      `${assets}/package.json`,
      `${assets}/swagger-ui.js`,
      `${assets}/..%2Fpackage.json`,
      `${assets}/%2E%2E%2F%2E%2E%2Fpackage.json`,
      `${assets}/__proto__`,
      `${assets}/constructor`,
      '/docs/assets/0.0.0/swagger-ui-bundle.js',
      '/docs/assets/swagger-ui-bundle.js',
    ]) {
      expect((await fetch(`${system.baseUrl}${path}`)).status, path).toBe(404);
    }
  });

  it('answers /healthz and /readyz without a token', async () => {
    expect((await client.get('/healthz')).status).toBe(200);
    const ready = await client.get('/readyz');
    expect(ready.status).toBe(200);
    expect(ready.body.checks).toEqual({ postgres: 'ok', redis: 'ok' });
  });

  it('npm run reconcile checks every seller and exits 0 when all reconcile', async () => {
    const seller = await createSeller(client);
    await fundSeller(client, seller, 1234);
    expect(await balanceOf(client, seller.id)).toBe(1234n);
    const run = await runReconcile(system.env);
    expect(run.stdout).toMatch(/reconciled \d+ sellers/);
    expect(run.stdout).toContain('all sellers reconcile');
    expect(run.status).toBe(0);
  });

  it('npm run reconcile names a seller whose balance differs from its ledger and exits 1', async () => {
    const url = new URL(inject('ownerDatabaseUrl'));
    url.pathname = `${url.pathname}_unreconciled`;
    await migrateDatabase(url.toString());
    const sql = testSql(url.toString());
    try {
      const id = randomUUID();
      await sql`insert into sellers (id, name, email, phone, api_key_hash, credit_balance)
                values (${id}, 'Tampered', ${`${id}@t.test`}, '09120000000', ${id}, 5000)`;
      const run = await runReconcile({ DATABASE_URL: url.toString() });
      expect(run.stdout).toContain(`UNRECONCILED seller ${id}: balance 5000, ledger sum 0, difference 5000`);
      expect(run.status).toBe(1);
    } finally {
      await sql.end();
      const admin = testSql();
      await admin.unsafe(`drop database if exists "${url.pathname.slice(1)}" with (force)`);
      await admin.end();
    }
  });
});
