/**
 * The run's sellers, made and funded through the product's public API as a client would: each
 * created by the admin, then credited by a credit request and its approval.
 */
import { randomBytes } from 'node:crypto';
import { callApi } from './api-client.ts';
import type { BenchContext } from './context.ts';
import { drain } from './drain.ts';
import type { BenchSeller } from './load.ts';
import { elapsed, fmt, log } from './output.ts';
import { inParallel } from './processes.ts';
import { retrying } from './storage.ts';

/** Every seller starts with this, credited through the API's credit request and approval path. */
const FUNDING = 100_000_000_000n;

/** Creates and funds `count` sellers; `problems` says what did not arrive. */
export async function seedSellers(
  ctx: BenchContext,
  count: number,
): Promise<{ sellers: BenchSeller[]; problems: string[] }> {
  const setupStarted = Date.now();
  const sellers = await createSellers(ctx, count);
  log(`  created ${fmt(sellers.length)} sellers through the API in ${elapsed(setupStarted)}`);
  const fundStarted = Date.now();
  const problems = await fundSellers(ctx, sellers);
  if (problems.length === 0) {
    log(
      `  funded each with ${fmt(Number(FUNDING))} rials (credit request + approval through the API) in ${elapsed(fundStarted)}`,
    );
  }
  return { sellers, problems };
}

async function createSellers(ctx: BenchContext, count: number): Promise<BenchSeller[]> {
  const run = randomBytes(4).toString('hex');
  return inParallel(
    Array.from({ length: count }, (_, i) => i),
    16,
    async (i) => {
      const res = await callApi<{ id: string; api_key: string }>(
        ctx.processes.apiUrl,
        'POST',
        '/api/sellers',
        ctx.run.adminToken,
        {
          name: `Bench seller ${i}`,
          email: `bench-${run}-${i}@example.com`,
          phone: `0935${String(i).padStart(7, '0')}`,
        },
      );
      if (res.status !== 201) throw new Error(`creating a seller answered ${res.status}: ${JSON.stringify(res.body)}`);
      return { id: res.body.id, key: res.body.api_key };
    },
  );
}

/** Credits every seller through the product's own path, then checks every balance arrived. */
async function fundSellers(ctx: BenchContext, sellers: BenchSeller[]): Promise<string[]> {
  const { apiUrl } = ctx.processes;
  const { adminToken } = ctx.run;
  await inParallel(sellers, 16, async (seller) => {
    const request = await callApi<{ id: string }>(apiUrl, 'POST', '/api/credit-requests', adminToken, {
      seller: seller.id,
      amount: FUNDING.toString(),
    });
    if (request.status !== 201) throw new Error(`credit request answered ${request.status}`);
    const processed = await callApi(apiUrl, 'POST', `/api/credit-requests/${request.body.id}/process`, adminToken, {
      action: 'approve',
    });
    if (processed.status !== 202 && processed.status !== 200) throw new Error(`approval answered ${processed.status}`);
  });
  const left = await drain(ctx.sql, 'funding', ctx.config.drainTimeoutMs);
  const [funded] = await retrying(
    () => ctx.sql<{ n: number }[]>`
      select count(*)::int as n from sellers where credit_balance = ${FUNDING.toString()}::bigint`,
  );
  const problems: string[] = [];
  if (left.jobs > 0) problems.push(`${left.jobs} funding jobs still unfinished`);
  if (funded?.n !== sellers.length) problems.push(`${funded?.n ?? 0} of ${sellers.length} sellers were funded`);
  return problems;
}
