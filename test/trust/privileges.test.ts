import { randomUUID } from 'node:crypto';
import { roleOf } from '@cs/db';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { testSql } from '../support/db.ts';
import { createSeller, fundSeller } from '../support/factories.ts';
import { Client } from '../support/http.ts';
import { System } from '../support/system.ts';

/** Any well-formed hmac: these rows test privileges, not the chain. */
const ANY_HMAC = 'b'.repeat(64);
/** What PostgreSQL says when a role lacks a privilege or is not the owner; never the ledger trigger's words. */
const PRIVILEGE_MESSAGE = /permission denied|must be owner|must have admin option|must be superuser/;

interface PgError {
  code?: string;
  message: string;
}

/**
 * The API and workers connect as an application role that can read, insert and update a few
 * columns, and nothing else. Everything that would rewrite history is refused by PostgreSQL's
 * privilege system itself (SQLSTATE 42501), before any trigger of ours runs: the trigger raises
 * 42501 too, so each refusal is also checked not to be the trigger's "append-only" message.
 */
describe('connected as the application role, history cannot be rewritten', () => {
  const ownerUrl = inject('ownerDatabaseUrl');
  const applicationUrl = inject('databaseUrl');
  const applicationRole = roleOf(applicationUrl).role;
  const ownerRole = roleOf(ownerUrl).role;
  let owner: postgres.Sql;
  let app: postgres.Sql;
  const notices: Array<{ code?: string; message?: string }> = [];
  const sellerId = randomUUID();
  const jobId = randomUUID();
  const probe = `cs_priv_probe_${process.pid}`;

  const ledgerRow = async () => {
    const rows = await owner`select id, seller_id, type, amount, balance_after, job_id, credit_request_id,
                                    phone_number, hmac, created_at
                             from transactions where job_id = ${jobId}`;
    expect(rows).toHaveLength(1);
    return rows[0];
  };
  const jobRow = async () => (await owner`select * from jobs where id = ${jobId}`)[0];
  const sellerRow = async () => (await owner`select * from sellers where id = ${sellerId}`)[0];

  /** Runs a statement as the application role and returns PostgreSQL's refusal; fails if it ran. */
  async function refusal(statement: string): Promise<PgError> {
    try {
      await app.unsafe(statement);
    } catch (error) {
      return error as PgError;
    }
    throw new Error(`the application role was allowed to run: ${statement}`);
  }

  beforeAll(async () => {
    owner = testSql();
    app = postgres(applicationUrl, {
      max: 1,
      onnotice: (notice) => notices.push(notice as { code?: string; message?: string }),
      types: { bigint: postgres.BigInt },
    });
    await owner`insert into sellers (id, name, email, phone, api_key_hash, credit_balance)
                values (${sellerId}, 'Privileges', ${`${sellerId}@privileges.test`}, '09120000000', ${`hash-${sellerId}`}, 1000)`;
    await owner`insert into jobs (id, type, seller_id, partition, queue_job_id, amount, phone_number, status, applied_at,
                                  finished_at)
                values (${jobId}, 'charge_sale', ${sellerId}, 0, ${jobId}, 500, '09121111111', 'succeeded', now(), now())`;
    await owner`insert into transactions (seller_id, type, amount, balance_after, job_id, phone_number, hmac)
                values (${sellerId}, 'charge_sale', -500, 500, ${jobId}, '09121111111', ${ANY_HMAC})`;
  });
  afterAll(async () => {
    await app?.end({ timeout: 5 });
    await owner?.end({ timeout: 5 });
  });

  it('is a plain role: not a superuser, no role attributes, no memberships, owns nothing', async () => {
    const [me] = await app`
      select current_user as role, r.rolsuper, r.rolcreaterole, r.rolcreatedb, r.rolbypassrls, r.rolreplication,
             (select count(*)::int from pg_class c where c.relowner = r.oid) as owned_relations,
             (select count(*)::int from pg_namespace n where n.nspowner = r.oid) as owned_schemas,
             (select count(*)::int from pg_proc p where p.proowner = r.oid) as owned_functions,
             (select count(*)::int from pg_auth_members m where m.member = r.oid) as memberships
      from pg_roles r where r.rolname = current_user`;
    expect(me).toEqual({
      role: applicationRole,
      rolsuper: false,
      rolcreaterole: false,
      rolcreatedb: false,
      rolbypassrls: false,
      rolreplication: false,
      owned_relations: 0,
      owned_schemas: 0,
      owned_functions: 0,
      memberships: 0,
    });
    expect(applicationRole).not.toBe(ownerRole);
    // The tables of the test database do belong to someone: the owner.
    const [tables] = await owner`
      select count(*)::int as n from pg_tables
      where schemaname = 'public' and tableowner = ${ownerRole}
        and tablename in ('sellers', 'jobs', 'transactions', 'credit_requests', 'phone_numbers', 'operators',
                          'operator_sessions', 'audit_events')`;
    expect(tables?.n).toBe(8);
  });

  it('refuses every rewrite of history, DDL and grant with a privilege error (42501), not the ledger trigger', async () => {
    const before = { ledger: await ledgerRow(), job: await jobRow(), seller: await sellerRow() };
    const statements = [
      `update transactions set amount = -1 where job_id = '${jobId}'`,
      `update transactions set hmac = '${'c'.repeat(64)}' where job_id = '${jobId}'`,
      `delete from transactions where job_id = '${jobId}'`,
      'truncate transactions',
      'truncate transactions, jobs, sellers cascade',
      'alter table transactions disable trigger all',
      'alter table transactions disable trigger transactions_no_update_or_delete',
      'alter table transactions disable trigger transactions_no_truncate',
      'alter table transactions disable trigger transactions_match_their_jobs',
      'alter table deliveries disable trigger deliveries_name_their_sale',
      'alter table jobs disable trigger jobs_keep_what_is_named',
      'drop trigger transactions_no_update_or_delete on transactions',
      'drop table transactions',
      'drop table transactions cascade',
      'alter table transactions owner to current_user',
      `create table ${probe} (x int)`,
      `create table public.${probe} (x int)`,
      `create temp table ${probe} (x int)`,
      `create function public.${probe}() returns int language sql as 'select 1'`,
      'create or replace function public.ledger_refuse_change() returns trigger language plpgsql as $$ begin return new; end $$',
      `create schema ${probe}`,
      `update jobs set amount = 1 where id = '${jobId}'`,
      `update jobs set phone_number = '09129999999' where id = '${jobId}'`,
      `update jobs set seller_id = '${randomUUID()}' where id = '${jobId}'`,
      `update sellers set name = 'Rewritten' where id = '${sellerId}'`,
      `update sellers set email = 'stolen@shops.test' where id = '${sellerId}'`,
      `update jobs set processed_by = 'someone else' where id = '${jobId}'`,
      `update jobs set actor_id = '${randomUUID()}' where id = '${jobId}'`,
      `update audit_events set action = 'seller.created'`,
      `delete from audit_events`,
      'truncate audit_events',
      'alter table audit_events disable trigger all',
      `update operators set email = 'stolen@ops.test'`,
      `update operators set password_hash = 'x'`,
      `delete from operators`,
      `update operator_sessions set expires_at = now() + interval '10 years'`,
      `update credit_requests set amount = 1`,
      `delete from jobs where id = '${jobId}'`,
      `delete from sellers where id = '${sellerId}'`,
      `grant ${applicationRole} to ${ownerRole}`,
      `alter role ${applicationRole} superuser`,
      `alter role ${applicationRole} createrole`,
      `set role ${ownerRole}`,
      `set session authorization ${ownerRole}`,
      `copy transactions from program 'true'`,
    ];
    const unexpected: string[] = [];
    for (const statement of statements) {
      const error = await refusal(statement);
      if (error.code !== '42501' || !PRIVILEGE_MESSAGE.test(error.message) || /append-only/.test(error.message))
        unexpected.push(`${statement}\n    → ${error.code}: ${error.message}`);
    }
    expect(unexpected, `refused, but not as a privilege error:\n${unexpected.join('\n')}`).toEqual([]);

    // Nothing moved: the rows, the ledger's triggers, and no object of the probes exists.
    expect(await ledgerRow()).toEqual(before.ledger);
    expect(await jobRow()).toEqual(before.job);
    expect(await sellerRow()).toEqual(before.seller);
    const triggers = await owner`
      select tgname, tgenabled from pg_trigger
      where tgrelid = 'transactions'::regclass and not tgisinternal order by tgname`;
    expect(triggers).toEqual([
      { tgname: 'transactions_match_their_jobs', tgenabled: 'O' },
      { tgname: 'transactions_no_truncate', tgenabled: 'O' },
      { tgname: 'transactions_no_update_or_delete', tgenabled: 'O' },
      { tgname: 'transactions_refund_matches_sale', tgenabled: 'O' },
    ]);
    const [leftovers] = await owner`
      select (select count(*)::int from pg_class where relname = ${probe}) as relations,
             (select count(*)::int from pg_proc where proname = ${probe}) as functions,
             (select count(*)::int from pg_namespace where nspname = ${probe}) as schemas`;
    expect(leftovers).toEqual({ relations: 0, functions: 0, schemas: 0 });
    const [role] = await owner`select rolsuper, rolcreaterole from pg_roles where rolname = ${applicationRole}`;
    expect(role).toEqual({ rolsuper: false, rolcreaterole: false });
    const [membership] = await owner`
      select count(*)::int as n from pg_auth_members m join pg_roles r on r.oid = m.roleid
      where r.rolname = ${applicationRole}`;
    expect(membership?.n).toBe(0);
  });

  it('passes on no privilege by GRANT: PostgreSQL grants nothing (warning 01007) and nobody gains a right', async () => {
    // A role holding a privilege without its grant option gets a warning, not an error, from a
    // table GRANT (PostgreSQL's own behaviour): what matters is that nothing is granted.
    notices.length = 0;
    for (const statement of [
      'grant delete, truncate, update on transactions to public',
      `grant all on sellers, jobs to ${ownerRole}, public`,
      'grant create on schema public to public',
    ]) {
      await app.unsafe(statement).catch((error: PgError) => {
        // An error is fine too, as long as it is a privilege error.
        expect(error.code, error.message).toBe('42501');
      });
    }
    expect(notices.length).toBeGreaterThan(0);
    for (const notice of notices) expect(notice, JSON.stringify(notice)).toMatchObject({ code: '01007' });
    const [rights] = await owner`
      select has_table_privilege('public', 'transactions', 'DELETE') as delete_ledger,
             has_table_privilege('public', 'transactions', 'TRUNCATE') as truncate_ledger,
             has_table_privilege('public', 'transactions', 'UPDATE') as update_ledger,
             has_table_privilege('public', 'sellers', 'UPDATE') as update_sellers,
             has_table_privilege('public', 'jobs', 'DELETE') as delete_jobs,
             has_schema_privilege('public', 'public', 'CREATE') as create_in_public,
             has_table_privilege(${applicationRole}, 'transactions', 'DELETE') as app_delete_ledger,
             has_table_privilege(${applicationRole}, 'transactions', 'UPDATE') as app_update_ledger,
             has_column_privilege(${applicationRole}, 'jobs', 'amount', 'UPDATE') as app_update_job_amount`;
    expect(rights).toEqual({
      delete_ledger: false,
      truncate_ledger: false,
      update_ledger: false,
      update_sellers: false,
      delete_jobs: false,
      create_in_public: false,
      app_delete_ledger: false,
      app_update_ledger: false,
      app_update_job_amount: false,
    });
    // The one table the processes may delete from: the delivery holds, a to-do list, not a record.
    const deletable = await owner<{ table_name: string }[]>`
      select table_name from information_schema.role_table_grants
      where grantee = ${applicationRole} and privilege_type in ('DELETE', 'TRUNCATE') order by table_name`;
    expect(deletable.map((r) => r.table_name)).toEqual(['delivery_holds']);
  });

  it('allows what the processes need: insert a seller, update its balance, draw a ledger id', async () => {
    const id = randomUUID();
    await app`insert into sellers (id, name, email, phone, api_key_hash)
              values (${id}, 'Inserted by the app', ${`${id}@privileges.test`}, '09120000000', ${`hash-${id}`})`;
    const updated = await app`update sellers set credit_balance = credit_balance + 700 where id = ${id} returning id`;
    expect(updated).toHaveLength(1);
    const [first] = await app`select nextval('transactions_id_seq') as id`;
    const [second] = await app`select nextval('transactions_id_seq') as id`;
    expect(typeof first?.id).toBe('bigint');
    expect(second?.id).toBeGreaterThan(first?.id);
    const [row] = await owner`select name, credit_balance from sellers where id = ${id}`;
    expect(row).toEqual({ name: 'Inserted by the app', credit_balance: 700n });
  });

  describe('the processes of a system', () => {
    let system: System;
    let client: Client;
    const apiName = `cs-priv-api-${process.pid}`;
    const workerName = `cs-priv-worker-${process.pid}`;

    beforeAll(async () => {
      // PGAPPNAME names each process's connections (postgres.js reads it), so pg_stat_activity
      // tells the system's connections apart from this test's own.
      system = await System.start({ workers: 0, env: { PGAPPNAME: apiName } });
      system.startWorker({ PGAPPNAME: workerName });
      client = new Client(system.baseUrl);
    });
    afterAll(() => system?.stop());

    it('connect as the application role, never as the owner', async () => {
      const seller = await createSeller(client, 'Least privilege');
      await fundSeller(client, seller, 10_000);
      const sale = await client.post('/api/charge-sales', {
        token: seller.apiKey,
        headers: { prefer: 'wait=20' },
        body: { seller_id: seller.id, phone_number: '09121234567', amount: 4000 },
      });
      expect(sale.status, `${JSON.stringify(sale.body)}\n${system.recentLogs()}`).toBe(200);
      expect(sale.body).toMatchObject({ status: 'succeeded', result: { new_balance: '6000' } });
      const ledger = await owner`select type, amount from transactions where seller_id = ${seller.id} order by id`;
      expect(ledger).toEqual([
        { type: 'credit_increase', amount: 10_000n },
        { type: 'charge_sale', amount: -4000n },
      ]);

      const connections = await owner<{ application_name: string; usename: string; n: number }[]>`
        select application_name, usename, count(*)::int as n from pg_stat_activity
        where datname = current_database() and application_name in (${apiName}, ${workerName})
        group by application_name, usename order by application_name`;
      expect(connections.map(({ application_name, usename }) => ({ application_name, usename }))).toEqual([
        { application_name: apiName, usename: applicationRole },
        { application_name: workerName, usename: applicationRole },
      ]);
      for (const row of connections) expect(row.n).toBeGreaterThanOrEqual(1);
    });
  });
});
