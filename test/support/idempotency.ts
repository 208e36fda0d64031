import { randomUUID } from 'node:crypto';
import type postgres from 'postgres';
import { expect } from 'vitest';
import { expectReconciled, ledgerOf, type StatusTally, waitForJobsFinal } from './concurrency.ts';
import { balanceOf, createSeller, fundSeller, type TestSeller } from './factories.ts';
import type { Answer, Client } from './http.ts';

type Sql = postgres.Sql<{ bigint: bigint }>;

/** What every seller of these races is funded with. */
export const IDEMPOTENCY_FUNDING = 100_000n;

/**
 * The pieces of the Idempotency-Key races, bound to one system: submissions counted in `tally`
 * (whose 5xx the caller checks), funded sellers, and the check that a key sold exactly once.
 */
export function idempotencyRaces(client: Client, sql: Sql, tally: StatusTally) {
  const submit = async (seller: TestSeller, key: string, body: Record<string, unknown>, token = seller.apiKey) =>
    tally.add(
      'POST /api/charge-sales',
      await client.post('/api/charge-sales', {
        token,
        headers: { 'idempotency-key': key },
        body: { seller_id: seller.id, ...body },
      }),
    );

  async function fundedSeller(name: string) {
    const seller = await createSeller(client, name);
    await fundSeller(client, seller, IDEMPOTENCY_FUNDING.toString());
    return seller;
  }

  /** Opens the connections first, so that the submissions leave together. */
  const warm = (n: number) => Promise.all(Array.from({ length: n }, () => client.get('/healthz')));

  /** The job succeeded, and it is the seller's only sale job, only sale and only debit. */
  async function expectSoldOnce(seller: TestSeller, jobId: string, amount: bigint) {
    const [job] = (await waitForJobsFinal(sql, [jobId])).values();
    expect(job?.status).toBe('succeeded');
    const sales = (await ledgerOf(sql, seller.id)).filter((r) => r.type === 'charge_sale');
    expect(sales).toHaveLength(1);
    expect(sales[0]).toMatchObject({ job_id: jobId, amount: -amount });
    const jobRows =
      await sql`select count(*)::int as n from jobs where seller_id = ${seller.id} and type = 'charge_sale'`;
    expect(jobRows[0]?.n).toBe(1);
    expect(await balanceOf(client, seller.id)).toBe(IDEMPOTENCY_FUNDING - amount);
    await expectReconciled(client, seller.id, IDEMPOTENCY_FUNDING - amount);
  }

  const jobIdsOf = (answers: Answer[]) => new Set(answers.map((a) => a.body.job_id));

  /**
   * The core race: `count` identical submissions at once under one key, from a fresh funded
   * seller, all 202 with one job, which sells once; the same key again afterwards returns that
   * job and still sells once. Returns the job id.
   */
  async function oneKeyManyTimes(name: string, count = 50): Promise<string> {
    const seller = await fundedSeller(name);
    const key = randomUUID();
    await warm(count);
    const answers = await Promise.all(
      Array.from({ length: count }, () => submit(seller, key, { phone_number: '09121234567', amount: 4000 })),
    );
    expect(
      answers.map((a) => a.status),
      JSON.stringify(answers.find((a) => a.status !== 202)?.body),
    ).toEqual(Array(count).fill(202));
    const ids = jobIdsOf(answers);
    expect(ids.size).toBe(1);
    const [jobId] = ids;
    await expectSoldOnce(seller, jobId, 4000n);
    const again = await submit(seller, key, { phone_number: '09121234567', amount: 4000 });
    expect(again.status).toBe(202);
    expect(again.body.job_id).toBe(jobId);
    await expectSoldOnce(seller, jobId, 4000n);
    return jobId;
  }

  return { submit, fundedSeller, warm, expectSoldOnce, jobIdsOf, oneKeyManyTimes };
}
