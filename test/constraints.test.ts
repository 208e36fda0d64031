import { randomUUID } from 'node:crypto';
import type postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isolatedDatabase, testSql } from './support/db.ts';

/** Any well-formed hmac: these rows test the constraints, not the chain. */
const ANY_HMAC = 'a'.repeat(64);
const sale = (sql: postgres.Sql, id: string, sellerId: string, extra = sql``) =>
  sql`insert into jobs (id, type, seller_id, partition, queue_job_id, amount, phone_number)
      values (${id}, 'charge_sale', ${sellerId}, 0, ${id}, 500, '09121111111') ${extra}`;

/**
 * The database is the backstop: these hold even when the application is bypassed. On a database
 * of its own: the rows written here by hand (open jobs on partition 0 among them) are no
 * deployment's, and processes started on the run's database would take them for one's.
 */
describe('database constraints, with the application bypassed', () => {
  let database: Awaited<ReturnType<typeof isolatedDatabase>>;
  let sql: postgres.Sql;
  let sellerId: string;
  let jobId: string;

  beforeAll(async () => {
    database = await isolatedDatabase('constraints');
    sql = testSql(database.ownerUrl);
    sellerId = randomUUID();
    jobId = randomUUID();
    await sql`insert into sellers (id, name, email, phone, api_key_hash, credit_balance)
              values (${sellerId}, 'Direct', ${`${sellerId}@direct.test`}, '09120000000', ${`hash-${sellerId}`}, 1000)`;
    await sql`insert into jobs (id, type, seller_id, partition, queue_job_id, amount, phone_number, status, applied_at,
                                finished_at)
              values (${jobId}, 'charge_sale', ${sellerId}, 0, ${jobId}, 500, '09121111111', 'succeeded', now(), now())`;
    await sql`insert into transactions (seller_id, type, amount, balance_after, job_id, phone_number, hmac)
              values (${sellerId}, 'charge_sale', -500, 500, ${jobId}, '09121111111', ${ANY_HMAC})`;
  });
  afterAll(async () => {
    await sql?.end();
    await database?.drop();
  });

  it('refuses a negative balance', async () => {
    await expect(sql`update sellers set credit_balance = -1 where id = ${sellerId}`).rejects.toMatchObject({
      code: '23514',
      constraint_name: 'sellers_credit_balance_non_negative',
    });
    await expect(
      sql`update sellers set credit_balance = credit_balance - 1001 where id = ${sellerId}`,
    ).rejects.toThrow();
    const [row] = await sql`select credit_balance from sellers where id = ${sellerId}`;
    expect(row?.credit_balance).toBe(1000n);
  });

  it('refuses to update, delete or truncate ledger rows', async () => {
    await expect(sql`update transactions set amount = -1 where job_id = ${jobId}`).rejects.toThrow(/append-only/);
    await expect(sql`delete from transactions where job_id = ${jobId}`).rejects.toThrow(/append-only/);
    // Alone it is refused by the deliveries' foreign key; with them, by the trigger.
    await expect(sql`truncate transactions`).rejects.toThrow(/referenced in a foreign key/);
    await expect(sql`truncate transactions cascade`).rejects.toThrow(/append-only/);
    const [row] = await sql`select amount from transactions where job_id = ${jobId}`;
    expect(row?.amount).toBe(-500n);
  });

  it('refuses a second ledger row for the same job', async () => {
    await expect(
      sql`insert into transactions (seller_id, type, amount, balance_after, job_id, phone_number, hmac)
          values (${sellerId}, 'charge_sale', -500, 0, ${jobId}, '09121111111', ${ANY_HMAC})`,
    ).rejects.toMatchObject({ code: '23505', constraint_name: 'transactions_job_unique' });
  });

  it('refuses a sale with a positive amount, a zero amount, or a negative balance_after', async () => {
    const cases: Array<[amount: number, balanceAfter: number]> = [
      [500, 1500],
      [0, 1000],
      [-500, -1],
    ];
    for (const [amount, after] of cases) {
      const otherJob = randomUUID();
      await sale(sql, otherJob, sellerId);
      await expect(
        sql`insert into transactions (seller_id, type, amount, balance_after, job_id, phone_number, hmac)
            values (${sellerId}, 'charge_sale', ${amount}, ${after}, ${otherJob}, '09121111111', ${ANY_HMAC})`,
      ).rejects.toMatchObject({ code: '23514' });
    }
  });

  it('refuses a ledger row without a well-formed hmac', async () => {
    for (const hmac of [null, 'not-hex', 'A'.repeat(64)]) {
      const otherJob = randomUUID();
      await sale(sql, otherJob, sellerId);
      await expect(
        sql`insert into transactions (seller_id, type, amount, balance_after, job_id, phone_number, hmac)
            values (${sellerId}, 'charge_sale', -500, 500, ${otherJob}, '09121111111', ${hmac})`,
      ).rejects.toMatchObject({ code: '23514', constraint_name: 'transactions_hmac_present' });
    }
  });

  it('refuses a job whose facts do not fit its type', async () => {
    const bad = [
      sql`insert into jobs (id, type, seller_id, partition, queue_job_id, phone_number)
          values (${randomUUID()}, 'charge_sale', ${sellerId}, 0, ${randomUUID()}, '09121111111')`,
      sql`insert into jobs (id, type, seller_id, partition, queue_job_id, amount, phone_number)
          values (${randomUUID()}, 'charge_sale', ${sellerId}, 0, ${randomUUID()}, -5, '09121111111')`,
      sql`insert into jobs (id, type, seller_id, partition, queue_job_id, amount, phone_number)
          values (${randomUUID()}, 'charge_sale', ${sellerId}, 0, ${randomUUID()}, 5, '+989121111111')`,
      sql`insert into jobs (id, type, seller_id, partition, queue_job_id, amount, phone_number, action)
          values (${randomUUID()}, 'charge_sale', ${sellerId}, 0, ${randomUUID()}, 5, '09121111111', 'approve')`,
      sql`insert into jobs (id, type, seller_id, partition, queue_job_id, amount, processed_by)
          values (${randomUUID()}, 'credit_approval', ${sellerId}, 0, ${randomUUID()}, 5, 'admin')`,
    ];
    for (const insert of bad) {
      await expect(insert).rejects.toMatchObject({ code: '23514', constraint_name: 'jobs_facts_of_type' });
    }
  });

  it("refuses a ledger row that does not match its job: another seller's, another amount or phone, no job at all", async () => {
    const otherSeller = randomUUID();
    await sql`insert into sellers (id, name, email, phone, api_key_hash)
              values (${otherSeller}, 'Other', ${`${otherSeller}@direct.test`}, '09120000000', ${`hash-${otherSeller}`})`;
    const row = (job: string, seller: string, amount: number, phone: string) =>
      sql`insert into transactions (seller_id, type, amount, balance_after, job_id, phone_number, hmac)
          values (${seller}, 'charge_sale', ${amount}, 0, ${job}, ${phone}, ${ANY_HMAC})`;
    const cases: Array<[job: string, seller: string, amount: number, phone: string]> = [];
    for (const [seller, amount, phone] of [
      [otherSeller, -500, '09121111111'],
      [sellerId, -400, '09121111111'],
      [sellerId, -500, '09122222222'],
    ] as const) {
      const job = randomUUID();
      await sale(sql, job, sellerId);
      cases.push([job, seller, amount, phone]);
    }
    cases.push([randomUUID(), sellerId, -500, '09121111111']);
    for (const [job, seller, amount, phone] of cases) {
      await expect(row(job, seller, amount, phone)).rejects.toMatchObject({ code: '23503' });
    }
    // The same row, matching its job, is taken.
    const [job, , , phone] = cases[1] as (typeof cases)[number];
    await row(job, sellerId, -500, phone);
  });

  it('refuses a job of no seller, and a delivery that does not name its own sale', async () => {
    await expect(sale(sql, randomUUID(), randomUUID())).rejects.toMatchObject({ code: '23503' });
    const [paid] = await sql<[{ id: string }]>`select id::text from transactions where job_id = ${jobId}`;
    const delivery = (job: string, saleId: string, amount: number) =>
      sql`insert into deliveries (job_id, seller_id, partition, sale_transaction_id, phone_number, amount, provider)
          values (${job}, ${sellerId}, 0, ${saleId}, '09121111111', ${amount}, 'simulator')`;
    const unpaid = randomUUID();
    await sale(sql, unpaid, sellerId);
    // A top-up for a job that was never debited, one for more than was paid, one for an unknown row.
    await expect(delivery(unpaid, paid.id, 500)).rejects.toMatchObject({ code: '23503' });
    await expect(delivery(jobId, paid.id, 5000)).rejects.toMatchObject({ code: '23503' });
    await expect(delivery(jobId, '999999999', 500)).rejects.toMatchObject({ code: '23503' });
    await delivery(jobId, paid.id, 500);
  });

  it('refuses to delete, renumber or truncate away a seller or a job the ledger names, even for the owner', async () => {
    await expect(sql`delete from jobs where id = ${jobId}`).rejects.toMatchObject({ code: '23503' });
    await expect(sql`update jobs set id = ${randomUUID()} where id = ${jobId}`).rejects.toMatchObject({
      code: '23503',
    });
    await expect(sql`delete from sellers where id = ${sellerId}`).rejects.toMatchObject({ code: '23503' });
    await expect(sql`truncate jobs cascade`).rejects.toThrow(/cannot be truncated while the ledger/);
    await expect(sql`truncate sellers cascade`).rejects.toThrow(/cannot be truncated while the ledger|append-only/);
    // A job nothing names may go (the owner's own clean-up).
    const loose = randomUUID();
    await sale(sql, loose, sellerId);
    await sql`delete from jobs where id = ${loose}`;
    const [row] = await sql`select count(*)::int as n from jobs where id = ${jobId}`;
    expect(row?.n).toBe(1);
  });

  it('refuses two sellers with the same email, whatever its case', async () => {
    const email = `${randomUUID()}@case.test`;
    await sql`insert into sellers (id, name, email, phone, api_key_hash) values (${randomUUID()}, 'A', ${email}, '09120000000', ${randomUUID()})`;
    await expect(
      sql`insert into sellers (id, name, email, phone, api_key_hash) values (${randomUUID()}, 'B', ${email.toUpperCase()}, '09120000000', ${randomUUID()})`,
    ).rejects.toMatchObject({ code: '23505' });
  });

  it('refuses a job open and applied, or final and unapplied: the open-jobs index relies on it', async () => {
    const violates = { code: '23514', constraint_name: 'jobs_open_iff_unapplied' };
    await expect(sale(sql, randomUUID(), sellerId, sql`returning id`)).resolves.toHaveLength(1);
    // queued, yet applied or failed
    await expect(
      sql`insert into jobs (id, type, seller_id, partition, queue_job_id, amount, phone_number, applied_at)
          values (${randomUUID()}, 'charge_sale', ${sellerId}, 0, ${randomUUID()}, 500, '09121111111', now())`,
    ).rejects.toMatchObject(violates);
    await expect(
      sql`insert into jobs (id, type, seller_id, partition, queue_job_id, amount, phone_number, error)
          values (${randomUUID()}, 'charge_sale', ${sellerId}, 0, ${randomUUID()}, 500, '09121111111', '{}'::jsonb)`,
    ).rejects.toMatchObject(violates);
    // debited or final, yet neither applied nor failed
    await expect(
      sql`insert into jobs (id, type, seller_id, partition, queue_job_id, amount, phone_number, status)
          values (${randomUUID()}, 'charge_sale', ${sellerId}, 0, ${randomUUID()}, 500, '09121111111', 'delivering')`,
    ).rejects.toMatchObject(violates);
    await expect(sql`update jobs set applied_at = null where id = ${jobId}`).rejects.toMatchObject(violates);
  });

  it("indexes no column a sale's settlement changes, so that it can be a HOT update", async () => {
    // Every column an index of jobs reads: its keys, its expressions and its predicate.
    const [row] = await sql<[{ columns: string[] }]>`
      select array_agg(distinct a.attname order by a.attname) as columns
      from pg_index i
      join pg_attribute a on a.attrelid = i.indrelid and a.attnum > 0 and (
        a.attnum = any(i.indkey)
        or a.attname = any(regexp_split_to_array(coalesce(pg_get_expr(i.indexprs, i.indrelid), ''), '[^a-z_]+'))
        or a.attname = any(regexp_split_to_array(coalesce(pg_get_expr(i.indpred, i.indrelid), ''), '[^a-z_]+')))
      where i.indrelid = 'jobs'::regclass`;
    // The settlement writes status, finished_at and result (packages/ledger/src/delivery-records.ts).
    expect(row.columns).toEqual([
      'applied_at',
      'error',
      'id',
      'idempotency_key',
      'partition',
      'seller_id',
      'submitted_at',
    ]);
    const [options] = await sql<
      [{ reloptions: string[] }]
    >`select reloptions from pg_class where oid = 'jobs'::regclass`;
    expect(options.reloptions).toContain('fillfactor=70');
  });

  it('refuses a reused idempotency key for one seller, and an unknown job status', async () => {
    const insertJob = (key: string) =>
      sql`insert into jobs (id, type, seller_id, partition, queue_job_id, amount, phone_number, idempotency_key)
          values (${randomUUID()}, 'charge_sale', ${sellerId}, 0, ${randomUUID()}, 500, '09121111111', ${key})`;
    await insertJob('key-1');
    await expect(insertJob('key-1')).rejects.toMatchObject({ code: '23505' });
    await expect(
      sql`insert into jobs (id, type, seller_id, partition, queue_job_id, amount, phone_number, status)
          values (${randomUUID()}, 'charge_sale', ${sellerId}, 0, ${randomUUID()}, 500, '09121111111', 'done')`,
    ).rejects.toMatchObject({ code: '23514' });
  });
});
