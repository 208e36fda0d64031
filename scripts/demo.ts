// `npm run demo`: the reference scenario against a running system, through the public API only:
// 2 sellers, 10 credit requests of 1,000,000 approved, 1,000 sales of 5,000 from 32 clients.
// Each sale asks to wait for its result (Prefer: wait), so its latency is submission → committed
// (of the attempt that was accepted: one refused with 429 is sent again after its Retry-After).
// Then the delivery of a top-up, on a third seller: one sale delivered, and one to 09990000001,
// which the simulator declines at once, refunded by a charge_refund row; their final jobs and the
// seller's ledger are printed.
//   BASE_URL (default http://127.0.0.1:3000)   ADMIN_TOKEN (required)
import { randomUUID } from 'node:crypto';

const baseUrl = process.env.BASE_URL ?? `http://127.0.0.1:${process.env.PORT ?? 3000}`;
const adminToken = process.env.ADMIN_TOKEN;
if (!adminToken) {
  console.error('demo: set ADMIN_TOKEN to the admin token of the running system (npm start prints it)');
  process.exit(1);
}

/** Answers 429 that were waited out and sent again. */
let rateLimited = 0;

/**
 * One call, and how long its accepted attempt took; a 429 (past a seller's sales a second,
 * SELLER_RATE_LIMIT) is sent again after its Retry-After.
 */
async function timedCall(
  method: string,
  path: string,
  token: string,
  body?: unknown,
  headers: Record<string, string> = {},
): Promise<{ json: any; ms: number }> {
  for (;;) {
    const t0 = performance.now();
    const res = await fetch(`${baseUrl}${path}`, {
      method,
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json', ...headers },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const json = (await res.json()) as any;
    if (res.status === 429) {
      rateLimited++;
      await new Promise((r) => setTimeout(r, Number(res.headers.get('retry-after') ?? 1) * 1000));
      continue;
    }
    if (res.status >= 400) throw new Error(`${method} ${path} → ${res.status} ${JSON.stringify(json)}`);
    return { json, ms: performance.now() - t0 };
  }
}

async function call(method: string, path: string, token: string, body?: unknown, headers: Record<string, string> = {}) {
  return (await timedCall(method, path, token, body, headers)).json;
}

function progress(label: string, done: number, total: number) {
  const width = 30;
  const filled = Math.round((done / total) * width);
  const line = `${label} [${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${done}/${total}`;
  if (process.stdout.isTTY) process.stdout.write(`\r${line}${done === total ? '\n' : ''}`);
  else if (done === total || done % Math.ceil(total / 10) === 0) console.log(line);
}

const percentile = (sorted: number[], p: number) =>
  sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? 0;

try {
  await fetch(`${baseUrl}/healthz`);
} catch {
  console.error(`demo: nothing answers at ${baseUrl}; start the system with npm start`);
  process.exit(1);
}

const started = performance.now();
const sellers: Array<{ id: string; key: string; name: string }> = [];
/** Sales alternate between the two sellers. */
const sellerFor = (i: number) => sellers[i % sellers.length] as (typeof sellers)[number];
for (const name of ['Demo North', 'Demo South']) {
  const s = await call('POST', '/api/sellers', adminToken, {
    name,
    email: `${randomUUID()}@demo.example`,
    phone: '09120000000',
  });
  sellers.push({ id: s.id as string, key: s.api_key as string, name });
}

let approved = 0;
for (let i = 0; i < 10; i++) {
  const seller = sellerFor(i);
  const request = await call('POST', '/api/credit-requests', seller.key, { seller: seller.id, amount: 1_000_000 });
  const job = await call(
    'POST',
    `/api/credit-requests/${request.id}/process`,
    adminToken,
    { action: 'approve' },
    { prefer: 'wait=30' },
  );
  if (job.status !== 'succeeded') throw new Error(`approval ended ${job.status}`);
  progress('credit approvals', ++approved, 10);
}

const latencies: number[] = [];
const outcomes = { succeeded: 0, rejected: 0, failed: 0, other: 0 };
let next = 0;
const salesStarted = performance.now();
await Promise.all(
  Array.from({ length: 32 }, async () => {
    while (next < 1000) {
      const i = next++;
      const seller = sellerFor(i);
      const { json: job, ms } = await timedCall(
        'POST',
        '/api/charge-sales',
        seller.key,
        { seller_id: seller.id, phone_number: `0935${String(i).padStart(7, '0')}`, amount: 5000 },
        { prefer: 'wait=30' },
      );
      latencies.push(ms);
      const status = job.status as keyof typeof outcomes;
      outcomes[status in outcomes ? status : 'other']++;
      progress('charge sales    ', latencies.length, 1000);
    }
  }),
);
const salesSeconds = (performance.now() - salesStarted) / 1000;
latencies.sort((a, b) => a - b);

const rows = [];
for (const seller of sellers) {
  const r = await call('GET', `/api/sellers/${seller.id}/reconcile`, seller.key);
  rows.push({
    seller: seller.name,
    balance: r.current_balance,
    'ledger sum': r.calculated_from_transactions,
    rows: r.total_transactions,
    reconciled: r.is_reconciled,
  });
}
console.log();
console.table(rows);
console.table({
  sales: {
    value: `${outcomes.succeeded} succeeded, ${outcomes.rejected} rejected, ${outcomes.failed + outcomes.other} other`,
  },
  'sales/s': { value: (1000 / salesSeconds).toFixed(0) },
  // Past SELLER_RATE_LIMIT (100 a second per seller by default) a sale waits out its 429 and is sent again.
  'answers 429, sent again': { value: String(rateLimited) },
  'p50 latency': { value: `${percentile(latencies, 50).toFixed(1)} ms` },
  'p99 latency': { value: `${percentile(latencies, 99).toFixed(1)} ms` },
  'wall time': { value: `${((performance.now() - started) / 1000).toFixed(2)} s` },
});

// The delivery of a top-up: the sale is debited, then the provider delivers it (succeeded), or
// refuses it for certain and a charge_refund row gives the amount back (rejected, delivery_failed).
console.log('\nDelivery of a top-up (a third seller, 100,000 credited; the simulator declines 09990000001):');
const shop = await call('POST', '/api/sellers', adminToken, {
  name: 'Demo Delivery',
  email: `${randomUUID()}@demo.example`,
  phone: '09120000000',
});
const shopRequest = await call('POST', '/api/credit-requests', shop.api_key, { seller: shop.id, amount: 100_000 });
await call(
  'POST',
  `/api/credit-requests/${shopRequest.id}/process`,
  adminToken,
  { action: 'approve' },
  { prefer: 'wait=30' },
);

/** A sale's job once final: Prefer: wait for up to 30 s, then polling (a slow provider takes longer). */
async function finalSale(phone: string, amount: number): Promise<any> {
  let job = await call(
    'POST',
    '/api/charge-sales',
    shop.api_key,
    { seller_id: shop.id, phone_number: phone, amount },
    { prefer: 'wait=30' },
  );
  const deadline = Date.now() + 60_000;
  while (!['succeeded', 'rejected', 'failed'].includes(job.status) && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 500));
    job = await call('GET', `/api/jobs/${job.job_id}`, adminToken);
  }
  return job;
}

const deliveredJob = await finalSale('09351234567', 20_000);
console.log(`\nA delivered sale of 20,000 to 09351234567: ${deliveredJob.status}`);
console.log(JSON.stringify(deliveredJob, null, 2));
const refundedJob = await finalSale('09990000001', 30_000);
console.log(`\nA refused sale of 30,000 to 09990000001: ${refundedJob.status} (${refundedJob.error?.code})`);
console.log(JSON.stringify(refundedJob, null, 2));

const refunds = await call('GET', `/api/transactions?seller_id=${shop.id}&type=charge_refund`, adminToken);
const refundRow = refunds.items.find((t: any) => t.id === refundedJob.error?.refund_transaction_id);
const ledger = await call('GET', `/api/sellers/${shop.id}/transactions`, adminToken);
console.log("\nThe seller's ledger, oldest first: the refund is a row of its own, the sale's row is never edited");
console.table(
  [...ledger.items].reverse().map((t: any) => ({
    id: t.id,
    type: t.type,
    amount: t.amount,
    balance_after: t.balance_after,
    phone: t.phone_number ?? '',
  })),
);
console.log('The refund row:');
console.log(JSON.stringify(refundRow, null, 2));
const shopCheck = await call('GET', `/api/sellers/${shop.id}/reconcile`, adminToken);
const deliveryOk =
  deliveredJob.status === 'succeeded' &&
  deliveredJob.result?.delivery?.status === 'delivered' &&
  refundedJob.status === 'rejected' &&
  refundedJob.error?.code === 'delivery_failed' &&
  refundRow?.amount === '30000' &&
  shopCheck.is_reconciled &&
  shopCheck.current_balance === '80000';
console.log(
  deliveryOk
    ? `delivery: one sale delivered, one refunded by ledger row #${refundRow.id}; Demo Delivery at 80,000 and reconciled`
    : 'delivery FAILED: see the jobs and the ledger above',
);

const ok = rows.every((r) => r.reconciled && r.balance === '2500000') && outcomes.succeeded === 1000 && deliveryOk;
console.log(
  ok
    ? 'demo passed: both sellers at 2,500,000 and reconciled, a top-up delivered and one refunded'
    : 'demo FAILED: see the tables above',
);
process.exit(ok ? 0 : 1);
