/**
 * The required scenario, as a client written from /openapi.json would run it: every request and
 * answer is typed by `src/generated/api.d.ts` (made by `npm run generate` with openapi-typescript)
 * and sent by openapi-fetch. Amounts go out as JSON integers, `limit` as a number: the document
 * says both are allowed, so neither needs a cast.
 *
 *   ADMIN_TOKEN=… API_URL=http://127.0.0.1:3000 npm start
 *
 * Two sellers; ten credit requests of 1,000,000 (five each), each approved by the operator;
 * 1,000 sales of 5,000 spread over the two; then each balance is 2,500,000 and reconciles.
 * Exits 1 at the first answer that is not what the contract says.
 */
import { randomUUID } from 'node:crypto';
import createClient from 'openapi-fetch';
import type { components, paths } from './generated/api';

type Job = components['schemas']['Job'];
type Client = ReturnType<typeof createClient<paths>>;

const baseUrl = process.env.API_URL ?? 'http://127.0.0.1:3000';
const adminToken = process.env.ADMIN_TOKEN;
if (!adminToken) throw new Error('Set ADMIN_TOKEN to the API operator token');

const clientFor = (token: string): Client =>
  createClient<paths>({ baseUrl, headers: { Authorization: `Bearer ${token}` } });
const admin = clientFor(adminToken);

const CREDIT_REQUESTS = 10;
const CREDIT = 1_000_000;
const SALES = 1000;
const SALE = 5000;
const IN_FLIGHT = 32;
const FINAL: ReadonlyArray<Job['status']> = ['succeeded', 'rejected', 'failed'];

/** The body of a 2xx answer, or an error naming the operation, its status and the error body. */
function ok<T>(what: string, answer: { data?: T; error?: unknown; response: Response }): T {
  if (answer.data === undefined || !answer.response.ok) {
    throw new Error(`${what}: HTTP ${answer.response.status} ${JSON.stringify(answer.error)}`);
  }
  return answer.data;
}

function expectEqual<T>(what: string, actual: T, expected: T): void {
  if (actual !== expected) throw new Error(`${what}: expected ${String(expected)}, got ${String(actual)}`);
}

/** Runs `task` over `items` with at most `concurrency` in flight; results in input order. */
async function inParallel<T, R>(items: T[], concurrency: number, task: (item: T) => Promise<R>): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const runner = async () => {
    while (next < items.length) {
      const index = next++;
      results[index] = await task(items[index] as T);
    }
  };
  await Promise.all(Array.from({ length: Math.min(concurrency, items.length) }, runner));
  return results;
}

/** getJob until the job is final. */
async function waitForJob(client: Client, jobId: string, timeoutMs = 60_000): Promise<Job> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const job = ok('getJob', await client.GET('/api/jobs/{id}', { params: { path: { id: jobId } } }));
    if (FINAL.includes(job.status)) return job;
    if (Date.now() > deadline) throw new Error(`job ${jobId} not final after ${timeoutMs} ms: ${job.status}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}

async function createSeller(name: string) {
  const seller = ok(
    'createSeller',
    await admin.POST('/api/sellers', {
      body: { name, email: `${randomUUID()}@sellers.example`, phone: '09120000000' },
    }),
  );
  return { id: seller.id, name, client: clientFor(seller.api_key) };
}

const started = performance.now();
const sellers = [await createSeller('North'), await createSeller('South')];
const sellerOf = (i: number) => sellers[i % sellers.length] as (typeof sellers)[number];

// Credit: each seller asks, the operator approves (a job on the seller's partition).
const requests = await inParallel(
  Array.from({ length: CREDIT_REQUESTS }, (_, i) => sellerOf(i)),
  CREDIT_REQUESTS,
  async (seller) => {
    const request = ok(
      'createCreditRequest',
      await seller.client.POST('/api/credit-requests', { body: { seller: seller.id, amount: CREDIT } }),
    );
    expectEqual('credit request status', request.status, 'pending');
    return request.id;
  },
);
const approvals = await inParallel(requests, CREDIT_REQUESTS, async (id) => {
  const answer = await admin.POST('/api/credit-requests/{id}/process', {
    params: { path: { id } },
    body: { action: 'approve' },
  });
  return ok('processCreditRequest', answer).job_id;
});
for (const jobId of approvals) expectEqual('approval job', (await waitForJob(admin, jobId)).status, 'succeeded');

// Sales: submitted as jobs, then awaited.
const salesStarted = performance.now();
const saleJobs = await inParallel(
  Array.from({ length: SALES }, (_, i) => i),
  IN_FLIGHT,
  async (i) => {
    const seller = sellerOf(i);
    const answer = await seller.client.POST('/api/charge-sales', {
      body: { seller_id: seller.id, phone_number: `0912${String(i).padStart(7, '0')}`, amount: SALE },
    });
    return { seller, jobId: ok('createChargeSale', answer).job_id };
  },
);
const outcomes = await inParallel(saleJobs, IN_FLIGHT, ({ seller, jobId }) => waitForJob(seller.client, jobId));
const salesSeconds = (performance.now() - salesStarted) / 1000;
expectEqual('sales succeeded', outcomes.filter((job) => job.status === 'succeeded').length, SALES);

// Each seller: 5 × 1,000,000 credited, 500 × 5,000 sold.
const expected = String((CREDIT * CREDIT_REQUESTS - SALE * SALES) / sellers.length);
for (const seller of sellers) {
  const path = { id: seller.id };
  const balance = ok('getSellerBalance', await seller.client.GET('/api/sellers/{id}/balance', { params: { path } }));
  expectEqual(`${seller.name} balance`, balance.credit_balance, expected);
  const check = ok('reconcileSeller', await seller.client.GET('/api/sellers/{id}/reconcile', { params: { path } }));
  expectEqual(`${seller.name} is_reconciled`, check.is_reconciled, true);
  expectEqual(`${seller.name} current_balance`, check.current_balance, expected);
  expectEqual(`${seller.name} difference`, check.difference, '0');
  expectEqual(`${seller.name} total_transactions`, check.total_transactions, (CREDIT_REQUESTS + SALES) / 2);
  // An integer query parameter, typed as a number.
  const latest = ok(
    'listSellerTransactions',
    await seller.client.GET('/api/sellers/{id}/transactions', { params: { path, query: { limit: 10 } } }),
  );
  expectEqual(`${seller.name} latest page`, latest.items.length, 10);
  expectEqual(`${seller.name} latest row`, latest.items[0]?.amount, `-${SALE}`);
  console.log(
    `${seller.name}: credit_balance ${balance.credit_balance}, is_reconciled ${check.is_reconciled}, ${check.total_transactions} transactions`,
  );
}
console.log(
  `typed client: ${SALES} sales in ${salesSeconds.toFixed(2)} s, whole scenario ${((performance.now() - started) / 1000).toFixed(2)} s`,
);
