/**
 * The synchronous reference the benchmark compares the product with: a bench-only HTTP server
 * (not the product API) where one request authenticates the seller like the product does and
 * then makes the sale in one transaction on the request path (`sellInOneTransaction`). It takes
 * the product's request shape on the same path, so the same load drives both.
 *
 * Environment: DATABASE_URL, PORT, DB_POOL_SIZE (default 10, the product's default pool),
 * LEDGER_HMAC_KEY (the product's key, 32 characters or more: its ledger rows join the same chains).
 */
import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { serve } from '@hono/node-server';
import { Hono } from 'hono';
import { connect, sellInOneTransaction } from './direct-sale.ts';

const databaseUrl = process.env.DATABASE_URL;
if (!databaseUrl) {
  console.error('sync-server: DATABASE_URL is required');
  process.exit(1);
}
// The rows it writes are links of the same sellers' chains as the product's, so it seals them with
// the same key; without it every seller it sold for would fail to reconcile.
const ledgerKey = process.env.LEDGER_HMAC_KEY ?? '';
if (ledgerKey.length < 32) {
  console.error('sync-server: LEDGER_HMAC_KEY of 32 characters or more is required');
  process.exit(1);
}
const port = Number(process.env.PORT ?? 0);
const poolSize = Number(process.env.DB_POOL_SIZE ?? 10);
const sql = connect(databaseUrl, poolSize);

// Every pooled connection is opened before the server says it is ready: PostgreSQL may be shared,
// and a connection refused mid-run (too many clients) would measure the neighbours, not this.
for (let attempt = 1; ; attempt++) {
  try {
    await Promise.all(Array.from({ length: poolSize }, () => sql`select 1`));
    break;
  } catch (error) {
    if (attempt >= 20) {
      console.error(`sync-server: cannot open ${poolSize} PostgreSQL connections: ${(error as Error).message}`);
      process.exit(1);
    }
    await sleep(250 * attempt);
  }
}

const phonePattern = /^09[0-9]{9}$/;
const amountPattern = /^[1-9][0-9]{0,12}$/;

const app = new Hono();
app.get('/healthz', (c) => c.json({ status: 'ok' }));

/**
 * Sales still being handled. The load generator stops without waiting for its last answers, so
 * the bench waits for this to reach 0 before it reads a phase: a sale committing meanwhile would
 * be in one of its queries and not the next (reconcile reads the heads, then the chains).
 */
let inFlight = 0;
app.get('/in-flight', (c) => c.json({ in_flight: inFlight }));
app.use('/api/*', async (_c, next) => {
  inFlight++;
  try {
    await next();
  } finally {
    inFlight--;
  }
});
app.post('/api/charge-sales', async (c) => {
  const receivedAt = new Date();
  const token = /^Bearer\s+(\S+)$/i.exec(c.req.header('authorization') ?? '')?.[1];
  if (!token) return c.json({ error: 'A valid bearer token is required', code: 'unauthorized' }, 401);
  const hash = createHash('sha256').update(token).digest('hex');
  const [caller] = await sql<{ id: string }[]>`select id from sellers where api_key_hash = ${hash} limit 1`;
  if (!caller) return c.json({ error: 'A valid bearer token is required', code: 'unauthorized' }, 401);

  const body = (await c.req.json().catch(() => null)) as Record<string, unknown> | null;
  const phone = body?.phone_number;
  const amount = String(body?.amount ?? '');
  if (typeof phone !== 'string' || !phonePattern.test(phone) || !amountPattern.test(amount)) {
    return c.json({ error: 'Invalid request', code: 'validation_error' }, 400);
  }
  if (body?.seller_id !== caller.id) return c.json({ error: 'Not your seller', code: 'forbidden' }, 403);

  const outcome = await sellInOneTransaction(
    sql,
    {
      sellerId: caller.id,
      phoneNumber: phone,
      amount: BigInt(amount),
      requestId: c.req.header('x-request-id') ?? `sync-${receivedAt.getTime()}`,
      receivedAt,
    },
    ledgerKey,
  );
  if (!outcome.ok) return c.json({ error: 'Sale refused', code: outcome.code }, 409);
  return c.json(
    {
      job_id: outcome.jobId,
      transaction_id: outcome.transactionId.toString(),
      new_balance: outcome.newBalance.toString(),
    },
    200,
  );
});
app.onError((error, c) => {
  console.error(`sync-server: ${error.message}`);
  return c.json({ error: 'Internal error', code: 'internal_error' }, 500);
});

const server = serve({ fetch: app.fetch, port, hostname: '127.0.0.1' }, (info) => {
  // The parent reads the port from this line when it asked for port 0.
  console.log(`sync-server listening on ${info.port}`);
});

async function stop() {
  server.close();
  await sql.end({ timeout: 5 });
  process.exit(0);
}
process.on('SIGTERM', () => void stop());
process.on('SIGINT', () => void stop());
