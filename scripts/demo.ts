// `npm run demo`: the reference scenario against a running system, through the public API only:
// 2 sellers, 10 credit requests of 1,000,000 approved, 1,000 sales of 5,000 from 32 clients.
// Each sale asks to wait for its result (Prefer: wait), so its latency is submission → committed
// (of the attempt that was accepted: one refused with 429 is sent again after its Retry-After).
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
const ok = rows.every((r) => r.reconciled && r.balance === '2500000') && outcomes.succeeded === 1000;
console.log(ok ? 'demo passed: both sellers at 2,500,000 and reconciled' : 'demo FAILED: see the table above');
process.exit(ok ? 0 : 1);
