import { randomUUID } from 'node:crypto';
import type postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isolatedDatabase, testSql } from '../support/db.ts';
import { runReconcile } from '../support/reconcile.ts';

/** Any well-formed hmac: these rows test the refund rules, not the chain. */
const ANY_HMAC = 'a'.repeat(64);
const PHONE = '09121111111';

/**
 * A refund gives back one sale, once, whole. The database refuses anything else even with the
 * application bypassed; `npm run reconcile` still finds it when someone who owns the tables went
 * around those guards. On a database of its own: its rows are hand-made.
 */
describe('refunds: one per sale, whole, and reconcile finds one that is not', () => {
  let database: Awaited<ReturnType<typeof isolatedDatabase>>;
  let sql: postgres.Sql;
  let sellerId: string;
  let jobId: string;
  let saleId: bigint;

  const insertRefund = (refundOf: bigint | null, amount = 500, job = jobId, seller = sellerId, balanceAfter = 1000) =>
    sql`insert into transactions (seller_id, type, amount, balance_after, job_id, phone_number, refund_of, hmac)
        values (${seller}, 'charge_refund', ${amount}, ${balanceAfter}, ${job}, ${PHONE}, ${refundOf?.toString() ?? null}, ${ANY_HMAC})
        returning id`;

  beforeAll(async () => {
    database = await isolatedDatabase('refunds');
    sql = testSql(database.ownerUrl);
    sellerId = randomUUID();
    jobId = randomUUID();
    await sql`insert into sellers (id, name, email, phone, api_key_hash, credit_balance)
              values (${sellerId}, 'Direct', ${`${sellerId}@direct.test`}, '09120000000', ${`hash-${sellerId}`}, 500)`;
    await sql`insert into jobs (id, type, seller_id, partition, queue_job_id, amount, phone_number, status, applied_at)
              values (${jobId}, 'charge_sale', ${sellerId}, 0, ${jobId}, 500, ${PHONE}, 'delivering', now())`;
    const [sale] = await sql<[{ id: bigint }]>`
      insert into transactions (seller_id, type, amount, balance_after, job_id, phone_number, hmac)
      values (${sellerId}, 'charge_sale', -500, 500, ${jobId}, ${PHONE}, ${ANY_HMAC}) returning id`;
    saleId = sale.id;
  });
  afterAll(async () => {
    await sql?.end();
    await database?.drop();
  });

  it('refuses a refund that names no sale, another amount, another job or another seller', async () => {
    await expect(insertRefund(null)).rejects.toMatchObject({ code: '23514' });
    await expect(insertRefund(saleId, 400)).rejects.toThrow(/must give back its own sale/);
    const otherJob = randomUUID();
    await sql`insert into jobs (id, type, seller_id, partition, queue_job_id, amount, phone_number)
              values (${otherJob}, 'charge_sale', ${sellerId}, 0, ${otherJob}, 500, ${PHONE})`;
    await expect(insertRefund(saleId, 500, otherJob)).rejects.toThrow(/must give back its own sale/);
    await expect(insertRefund(saleId + 1_000_000n)).rejects.toThrow(/must give back its own sale/);
  });

  it('takes one refund of the sale, and refuses a second', async () => {
    await insertRefund(saleId);
    await expect(insertRefund(saleId, 500, jobId, sellerId, 1500)).rejects.toMatchObject({
      code: '23505',
      constraint_name: 'transactions_refund_of_unique',
    });
    const rows = await sql`select type from transactions where job_id = ${jobId} order by id`;
    expect(rows.map((r) => r.type)).toEqual(['charge_sale', 'charge_refund']);
  });

  it('npm run reconcile exits 1 on a sale refunded twice and on a refund without its sale, once the guards are gone', async () => {
    const reconcile = () => runReconcile({ DATABASE_URL: database.ownerUrl });
    const before = await reconcile();
    expect(before.stdout).not.toMatch(/FAULT/);

    // What only the tables' owner (or a superuser) could do: drop the unique key and the triggers.
    await sql`drop index transactions_refund_of_unique`;
    await sql`alter table transactions disable trigger transactions_refund_matches_sale`;
    await sql`alter table transactions disable trigger transactions_match_their_jobs`;
    await insertRefund(saleId, 500, jobId, sellerId, 1500);
    const credit = randomUUID();
    await sql`insert into credit_requests (id, seller_id, amount, status, processed_at, processed_by)
              values (${credit}, ${sellerId}, 700, 'approved', now(), 'bootstrap')`;
    const creditJob = randomUUID();
    await sql`insert into jobs (id, type, seller_id, partition, queue_job_id, credit_request_id, action, processed_by, status,
                                applied_at, finished_at)
              values (${creditJob}, 'credit_approval', ${sellerId}, 0, ${creditJob}, ${credit}, 'approve', 'bootstrap', 'succeeded',
                      now(), now())`;
    const [increase] = await sql<[{ id: bigint }]>`
      insert into transactions (seller_id, type, amount, balance_after, job_id, credit_request_id, hmac)
      values (${sellerId}, 'credit_increase', 700, 2200, ${creditJob}, ${credit}, ${ANY_HMAC}) returning id`;
    await insertRefund(increase.id, 700, creditJob, sellerId, 2900);

    const after = await reconcile();
    expect(after.stdout).toMatch(/FAULT: 1 sale\(s\) refunded more than once/);
    expect(after.stdout).toMatch(/FAULT: 1 refund\(s\) without their sale/);
    expect(after.status).toBe(1);
  });
});
