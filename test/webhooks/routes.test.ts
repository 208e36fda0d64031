import { randomUUID } from 'node:crypto';
import { createDb } from '@cs/db';
import { WebhookSecrets } from '@cs/webhooks';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { testSql } from '../support/db.ts';
import { createSeller, type TestSeller } from '../support/factories.ts';
import { Client } from '../support/http.ts';
import { ADMIN_TOKEN, LEDGER_HMAC_KEY, System } from '../support/system.ts';
import { writeEvents } from './receiver.ts';
import { WEBHOOK_ENV } from './senders.ts';

/**
 * The webhook routes as the contract says: who may set, read, remove and rotate a seller's
 * webhook, list its deliveries and retry one; what a URL must be; and the audit trail of each
 * change. No receiver answers here: the sending is test/webhooks/delivery.test.ts's.
 */

describe('webhook routes', () => {
  /** WEBHOOK_ALLOW_PRIVATE, as a test or a closed network runs. */
  let open: System;
  /** The default rules: public addresses only. */
  let strict: System;
  let client: Client;
  let strictClient: Client;
  let seller: TestSeller;
  let other: TestSeller;
  let viewer: string;
  const sql = testSql();
  const outbox = createDb(inject('databaseUrl'), { max: 2 });

  beforeAll(async () => {
    // No worker: nothing here is sent, and the routes are the API's alone.
    [open, strict] = await Promise.all([
      System.start({ workers: 0, env: WEBHOOK_ENV }),
      System.start({ workers: 0, env: { ...WEBHOOK_ENV, WEBHOOK_ALLOW_PRIVATE: '0' } }),
    ]);
    client = new Client(open.baseUrl);
    strictClient = new Client(strict.baseUrl);
    seller = await createSeller(client, 'Routes');
    other = await createSeller(client, 'Other');
    const op = await client.post('/api/operators', {
      token: ADMIN_TOKEN,
      body: { email: `viewer-${randomUUID()}@ops.test`, name: 'A viewer', role: 'viewer' },
    });
    expect(op.status).toBe(201);
    viewer = op.body.token;
  });
  afterAll(async () => {
    await Promise.all([open?.stop(), strict?.stop()]);
    await sql.end();
    await outbox.close();
  });

  const put = (c: Client, id: string, token: string | undefined, body: unknown) =>
    c.request('PUT', `/api/sellers/${id}/webhook`, { token, body });
  const auditOf = async (sellerId: string) =>
    sql`select actor_type, actor_id, action, target_type, target_id, details from audit_events
        where action = 'webhook.updated' and target_id = ${sellerId} order by id`;
  const endpointOf = async (sellerId: string) =>
    (await sql`select url, secret, is_active from webhook_endpoints where seller_id = ${sellerId}`)[0];

  it('sets a webhook and shows its secret when set; GET never shows it; a new URL keeps it; removal then a new one gets a new one', async () => {
    const s = await createSeller(client, 'Lifecycle');
    const first = await put(client, s.id, s.apiKey, { url: 'http://127.0.0.1:9/hooks/a' });
    expect(first.status, JSON.stringify(first.body)).toBe(200);
    expect(first.body).toEqual({
      seller_id: s.id,
      url: 'http://127.0.0.1:9/hooks/a',
      secret: expect.stringMatching(/^whsec_[A-Za-z0-9+/]{43}=$/),
      created_at: expect.any(String),
      updated_at: expect.any(String),
    });
    const read = await client.get(`/api/sellers/${s.id}/webhook`, { token: s.apiKey });
    expect(read.status).toBe(200);
    expect(read.body).toEqual({
      seller_id: s.id,
      url: 'http://127.0.0.1:9/hooks/a',
      created_at: first.body.created_at,
      updated_at: first.body.updated_at,
    });
    expect(JSON.stringify(read.body)).not.toContain('whsec_');

    const moved = await put(client, s.id, s.apiKey, { url: 'http://127.0.0.1:9/hooks/b' });
    expect(moved.body).toMatchObject({ url: 'http://127.0.0.1:9/hooks/b', secret: first.body.secret });
    expect((await client.get(`/api/sellers/${s.id}/webhook`, { token: s.apiKey })).body.url).toBe(
      'http://127.0.0.1:9/hooks/b',
    );

    const removed = await client.request('DELETE', `/api/sellers/${s.id}/webhook`, { token: s.apiKey });
    expect(removed.status).toBe(204);
    expect(removed.body).toBeNull();
    const gone = await client.get(`/api/sellers/${s.id}/webhook`, { token: s.apiKey });
    expect(gone.status).toBe(404);
    expect(gone.body.code).toBe('webhook_not_found');
    // Removing it again leaves it removed.
    expect((await client.request('DELETE', `/api/sellers/${s.id}/webhook`, { token: ADMIN_TOKEN })).status).toBe(204);
    expect((await client.post(`/api/sellers/${s.id}/webhook/secret`, { token: s.apiKey })).body.code).toBe(
      'webhook_not_found',
    );

    const again = await put(client, s.id, ADMIN_TOKEN, { url: 'http://127.0.0.1:9/hooks/c' });
    expect(again.status).toBe(200);
    expect(again.body.secret).toMatch(/^whsec_/);
    expect(again.body.secret).not.toBe(first.body.secret);
    const endpoint = await endpointOf(s.id);
    expect(endpoint).toMatchObject({ url: 'http://127.0.0.1:9/hooks/c', is_active: true });
    expect(new WebhookSecrets(LEDGER_HMAC_KEY).open(String(endpoint?.secret), s.id)).toBe(again.body.secret);
  });

  it('rotates the secret: a new one, shown in that answer only', async () => {
    const s = await createSeller(client, 'Rotation');
    const set = await put(client, s.id, s.apiKey, { url: 'http://127.0.0.1:9/rotate' });
    // An empty body, with or without Content-Type, as for every bodiless POST.
    const byItself = await client.post(`/api/sellers/${s.id}/webhook/secret`, { token: s.apiKey });
    expect(byItself.status, JSON.stringify(byItself.body)).toBe(200);
    expect(byItself.body).toMatchObject({ seller_id: s.id, url: 'http://127.0.0.1:9/rotate' });
    expect(byItself.body.secret).toMatch(/^whsec_/);
    expect(byItself.body.secret).not.toBe(set.body.secret);
    const byAdmin = await client.post(`/api/sellers/${s.id}/webhook/secret`, {
      token: ADMIN_TOKEN,
      rawBody: '',
      headers: { 'content-type': 'application/json' },
    });
    expect(byAdmin.status).toBe(200);
    expect(byAdmin.body.secret).not.toBe(byItself.body.secret);
    // The table holds it sealed, for this seller, under the processes' key: never the secret itself.
    const stored = String((await endpointOf(s.id))?.secret);
    expect(stored).toMatch(/^sealed\.v1\./);
    expect(stored).not.toContain(String(byAdmin.body.secret).slice(6));
    expect(new WebhookSecrets(LEDGER_HMAC_KEY).open(stored, s.id)).toBe(byAdmin.body.secret);
  });

  it('a kept secret that no longer opens (another key sealed it) is replaced on the next PUT: 200 with a new one, never a 500', async () => {
    const s = await createSeller(client, 'Resealed');
    const set = await put(client, s.id, s.apiKey, { url: 'http://127.0.0.1:9/reseal' });
    expect(set.status).toBe(200);
    const foreign = new WebhookSecrets('another-ledger-key-of-32-characters-000000').seal(set.body.secret, s.id);
    await sql`update webhook_endpoints set secret = ${foreign} where seller_id = ${s.id}`;
    const again = await put(client, s.id, s.apiKey, { url: 'http://127.0.0.1:9/reseal/b' });
    expect(again.status, JSON.stringify(again.body)).toBe(200);
    expect(again.body.secret).toMatch(/^whsec_/);
    expect(again.body.secret).not.toBe(set.body.secret);
    const stored = String((await endpointOf(s.id))?.secret);
    expect(new WebhookSecrets(LEDGER_HMAC_KEY).open(stored, s.id)).toBe(again.body.secret);
  });

  it('refuses URLs the rules forbid, saying why, before the seller is looked up when the text shows it, and changes nothing', async () => {
    const s = await createSeller(strictClient, 'Strict');
    const refusals: Array<[string, string]> = [
      ['http://127.0.0.1:8080/hook', 'private_address'],
      ['http://[::1]/hook', 'private_address'],
      ['http://[::ffff:127.0.0.1]/hook', 'private_address'],
      ['http://10.1.2.3/hook', 'private_address'],
      ['http://169.254.169.254/latest/meta-data', 'private_address'],
      ['http://localhost:8080/hook', 'private_address'],
      ['http://no-such-host.invalid/hook', 'unresolvable'],
      ['ftp://93.184.215.14/hook', 'scheme'],
      ['https://user:secret@93.184.215.14/hook', 'credentials'],
      [`https://93.184.215.14/${'a'.repeat(2100)}`, 'too_long'],
      ['not a url', 'not_a_url'],
    ];
    for (const [url, reason] of refusals) {
      const res = await put(strictClient, s.id, s.apiKey, { url });
      expect(res.status, `${url}: ${JSON.stringify(res.body)}`).toBe(400);
      expect(res.body).toMatchObject({ code: 'invalid_webhook_url', reason, fields: { url: expect.any(String) } });
      expect(res.body.error).toMatch(/^The webhook URL may not be used: /);
    }
    for (const body of [{}, { url: 42 }, { url: 'https://93.184.215.14/', secret: 'mine' }]) {
      const res = await put(strictClient, s.id, s.apiKey, body);
      expect(res.status, JSON.stringify(body)).toBe(400);
      expect(res.body.code).toBe('validation_error');
    }
    expect(await endpointOf(s.id)).toBeUndefined();
    expect(await auditOf(s.id)).toEqual([]);

    // 400 before 403 when the text alone shows it; a name is resolved only for a caller allowed to set it.
    expect((await put(strictClient, s.id, other.apiKey, { url: 'ftp://93.184.215.14/' })).status).toBe(400);
    expect((await put(strictClient, s.id, other.apiKey, { url: 'http://127.0.0.1/' })).status).toBe(400);
    expect((await put(strictClient, s.id, other.apiKey, { url: 'http://localhost/' })).status).toBe(403);
    expect((await put(strictClient, randomUUID(), ADMIN_TOKEN, { url: 'http://localhost/' })).status).toBe(404);
    // A public address is set (nothing is sent here).
    const ok = await put(strictClient, s.id, s.apiKey, { url: 'https://93.184.215.14/hooks' });
    expect(ok.status, JSON.stringify(ok.body)).toBe(200);
    // WEBHOOK_ALLOW_PRIVATE lets loopback through.
    expect((await put(client, seller.id, seller.apiKey, { url: 'http://127.0.0.1:9/hook' })).status).toBe(200);
    expect((await put(client, seller.id, seller.apiKey, { url: 'http://localhost:9/hook' })).status).toBe(200);
  });

  it('lets a seller touch its own webhook only, operators read it, only the seller and admins change it, only admins retry', async () => {
    const s = await createSeller(client, 'Owned');
    await put(client, s.id, s.apiKey, { url: 'http://127.0.0.1:9/owned' });
    const base = `/api/sellers/${s.id}/webhook`;
    const calls: Array<[string, string, unknown?]> = [
      ['PUT', base, { url: 'http://127.0.0.1:9/taken' }],
      ['GET', base],
      ['DELETE', base],
      ['POST', `${base}/secret`],
      ['GET', `${base}/deliveries`],
    ];
    for (const [method, path, body] of calls) {
      const none = await client.request(method, path, { body });
      expect(none.status, `${method} ${path}`).toBe(401);
      expect(none.body.code).toBe('unauthorized');
      const wrong = await client.request(method, path, { token: 'cs_not-a-key', body });
      expect(wrong.status).toBe(401);
      const theirs = await client.request(method, path, { token: other.apiKey, body });
      expect(theirs.status, `${method} ${path} by another seller`).toBe(403);
      expect(theirs.body.code).toBe('forbidden');
      const unknown = await client.request(method, path.replace(s.id, randomUUID()), { token: ADMIN_TOKEN, body });
      expect(unknown.status, `${method} ${path} of no seller`).toBe(404);
      expect(unknown.body.code).toBe('not_found');
      const malformed = await client.request(method, path.replace(s.id, 'not-an-id'), { token: s.apiKey, body });
      expect(malformed.status).toBe(404);
    }
    // A viewer reads like an admin, and changes nothing.
    expect((await client.get(base, { token: viewer })).status).toBe(200);
    expect((await client.get(`${base}/deliveries`, { token: viewer })).status).toBe(200);
    for (const [method, path, body] of calls.filter(([m]) => m !== 'GET')) {
      const res = await client.request(method, path, { token: viewer, body });
      expect(res.status, `${method} ${path} by a viewer`).toBe(403);
    }
    expect(await endpointOf(s.id)).toMatchObject({ url: 'http://127.0.0.1:9/owned', is_active: true });

    await writeEvents(outbox.db, [{ sellerId: s.id, type: 'credit_request.approved', data: {} }]);
    const [delivery] =
      await sql`update webhook_deliveries set status = 'failed' where seller_id = ${s.id} returning id`;
    const retry = `/api/webhook-deliveries/${delivery?.id}/retry`;
    for (const token of [s.apiKey, other.apiKey, viewer]) {
      const res = await client.post(retry, { token });
      expect(res.status).toBe(403);
      expect(res.body.code).toBe('forbidden');
    }
    expect((await client.post(retry)).status).toBe(401);
    const [still] = await sql`select status from webhook_deliveries where id = ${delivery?.id}`;
    expect(still?.status).toBe('failed');
  });

  it('lists deliveries newest first, by page and by status; retries only a failed one', async () => {
    const s = await createSeller(client, 'Listed');
    await put(client, s.id, s.apiKey, { url: 'http://127.0.0.1:9/listed' });
    for (let i = 0; i < 3; i++)
      await writeEvents(outbox.db, [{ sellerId: s.id, type: 'charge_sale.succeeded', data: { i } }]);
    const ids = (await sql`select id from webhook_deliveries where seller_id = ${s.id} order by id desc`).map(
      (r) => r.id,
    );
    expect(ids).toHaveLength(3);
    const [newest, middle, oldest] = ids as [string, string, string];
    await sql`update webhook_deliveries set status = 'failed', attempts = 5, last_status_code = 500, last_error = 'HTTP 500'
              where id = ${oldest}`;
    await sql`update webhook_deliveries set status = 'delivered', attempts = 1, last_status_code = 200, delivered_at = now()
              where id = ${middle}`;

    const first = await client.get(`/api/sellers/${s.id}/webhook/deliveries?limit=2`, { token: s.apiKey });
    expect(first.status).toBe(200);
    expect(first.body.items.map((d: { id: string }) => d.id)).toEqual([newest, middle]);
    expect(first.body.items[0]).toEqual({
      id: newest,
      seller_id: s.id,
      event_type: 'charge_sale.succeeded',
      status: 'pending',
      attempts: 0,
      last_status_code: null,
      last_error: null,
      next_attempt_at: expect.any(String),
      created_at: expect.any(String),
      delivered_at: null,
    });
    expect(first.body.items[1]).toMatchObject({
      status: 'delivered',
      next_attempt_at: null,
      delivered_at: expect.any(String),
    });
    const second = await client.get(
      `/api/sellers/${s.id}/webhook/deliveries?limit=2&cursor=${first.body.next_cursor}`,
      { token: ADMIN_TOKEN },
    );
    expect(second.body).toEqual({
      items: [
        expect.objectContaining({
          id: oldest,
          status: 'failed',
          attempts: 5,
          last_status_code: 500,
          next_attempt_at: null,
        }),
      ],
      next_cursor: null,
    });
    const failed = await client.get(`/api/sellers/${s.id}/webhook/deliveries?status=failed`, { token: viewer });
    expect(failed.body.items.map((d: { id: string }) => d.id)).toEqual([oldest]);
    for (const query of ['?limit=0', '?limit=501', '?cursor=bm9wZQ', '?status=lost']) {
      const bad = await client.get(`/api/sellers/${s.id}/webhook/deliveries${query}`, { token: s.apiKey });
      expect(bad.status, query).toBe(400);
      expect(bad.body.code).toBe('validation_error');
    }
    // 400 (the request) before 403 (the caller's right to it).
    expect((await client.get(`/api/sellers/${s.id}/webhook/deliveries?limit=0`, { token: other.apiKey })).status).toBe(
      400,
    );

    for (const id of [newest, middle]) {
      const res = await client.post(`/api/webhook-deliveries/${id}/retry`, { token: ADMIN_TOKEN });
      expect(res.status).toBe(409);
      expect(res.body.code).toBe('not_failed');
    }
    for (const id of ['msg_00000000000000000000000000000000', 'nope', randomUUID()]) {
      const res = await client.post(`/api/webhook-deliveries/${id}/retry`, { token: ADMIN_TOKEN });
      expect(res.status, id).toBe(404);
      expect(res.body.code).toBe('not_found');
    }
    const retried = await client.post(`/api/webhook-deliveries/${oldest}/retry`, { token: ADMIN_TOKEN, rawBody: '' });
    expect(retried.status, JSON.stringify(retried.body)).toBe(202);
    expect(retried.body).toMatchObject({
      id: oldest,
      status: 'pending',
      attempts: 5,
      next_attempt_at: expect.any(String),
    });
    expect(Math.abs(Date.parse(retried.body.next_attempt_at) - Date.now())).toBeLessThan(5000);
    expect((await client.post(`/api/webhook-deliveries/${oldest}/retry`, { token: ADMIN_TOKEN })).body.code).toBe(
      'not_failed',
    );
    // A delivery of a seller whose webhook is gone is not sent again.
    await sql`update webhook_deliveries set status = 'failed' where id = ${oldest}`;
    await client.request('DELETE', `/api/sellers/${s.id}/webhook`, { token: s.apiKey });
    const orphan = await client.post(`/api/webhook-deliveries/${oldest}/retry`, { token: ADMIN_TOKEN });
    expect(orphan.status).toBe(404);
    expect(orphan.body.code).toBe('webhook_not_found');
  });

  it('audits every change as webhook.updated, by who made it, never with the secret', async () => {
    const s = await createSeller(client, 'Audited');
    const set = await put(client, s.id, s.apiKey, { url: 'http://127.0.0.1:9/audited' });
    await client.post(`/api/sellers/${s.id}/webhook/secret`, { token: ADMIN_TOKEN });
    await client.request('DELETE', `/api/sellers/${s.id}/webhook`, { token: s.apiKey });
    // Nothing to remove: nothing to audit.
    await client.request('DELETE', `/api/sellers/${s.id}/webhook`, { token: s.apiKey });
    // Refused: nothing to audit either.
    await put(client, s.id, other.apiKey, { url: 'http://127.0.0.1:9/theirs' });
    await put(client, s.id, viewer, { url: 'http://127.0.0.1:9/viewer' });
    await client.post(`/api/sellers/${s.id}/webhook/secret`, { token: s.apiKey });

    const rows = await auditOf(s.id);
    expect(rows).toEqual([
      {
        actor_type: 'seller',
        actor_id: s.id,
        action: 'webhook.updated',
        target_type: 'webhook',
        target_id: s.id,
        details: { url: 'http://127.0.0.1:9/audited', change: 'set' },
      },
      expect.objectContaining({
        actor_type: 'bootstrap',
        actor_id: null,
        details: { url: 'http://127.0.0.1:9/audited', change: 'secret_rotated' },
      }),
      expect.objectContaining({
        actor_type: 'seller',
        details: { url: 'http://127.0.0.1:9/audited', change: 'removed' },
      }),
    ]);
    const trail = await client.get(`/api/audit?action=webhook.updated&target_id=${s.id}`, { token: ADMIN_TOKEN });
    expect(trail.status).toBe(200);
    expect(trail.body.items).toHaveLength(3);
    expect(JSON.stringify(trail.body)).not.toContain('whsec_');
    expect(JSON.stringify(rows)).not.toContain(String(set.body.secret).slice(6, 20));
  });
});
