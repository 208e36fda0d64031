import { setTimeout as sleep } from 'node:timers/promises';
import { createDb, databaseErrorCode, isRetryableDatabaseError, migrateDatabase, roleOf } from '@cs/db';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { isolatedDatabase, testSql } from './support/db.ts';

type Client = ReturnType<typeof createDb>['client'];

/**
 * Opens a transaction, stays idle in it for `idleMs`, then sends the connection's next query.
 * Returns whether the transaction committed, how that next query fared, and whether the
 * transaction's backend still exists afterwards.
 */
async function idleInTransaction(client: Client, idleMs: number) {
  const owner = testSql();
  try {
    let pid = 0;
    let next: { ok: true } | { ok: false; error: unknown } | undefined;
    const transaction = client.begin(async (tx) => {
      const [row] = await tx<{ pid: number }[]>`select pg_backend_pid() as pid`;
      pid = row?.pid ?? 0;
      await sleep(idleMs);
      try {
        await tx`select 1`;
        next = { ok: true };
      } catch (error) {
        next = { ok: false, error };
        throw error;
      }
    });
    const outcome = await transaction.then(
      () => ({ committed: true as const }),
      (error: unknown) => ({ committed: false as const, error }),
    );
    // begin() may give up as soon as the connection closes; the callback goes on until its query.
    const deadline = Date.now() + idleMs + 5000;
    while (next === undefined && Date.now() < deadline) await sleep(20);
    const [backend] = await owner<{ n: number }[]>`select count(*)::int as n from pg_stat_activity where pid = ${pid}`;
    return { ...outcome, next, backendAlive: (backend?.n ?? 0) > 0 };
  } finally {
    await owner.end();
  }
}

describe('the database client of the API and the workers', () => {
  describe('idle_in_transaction_session_timeout', () => {
    const timed = createDb(inject('databaseUrl'), { max: 2, idleInTransactionTimeoutMs: 500 });
    const untimed = createDb(inject('databaseUrl'), { max: 2 });
    afterAll(async () => {
      await timed.close();
      await untimed.close();
    });

    it('ends a transaction left idle past it: the next query fails, retryably, and nothing commits', async () => {
      const result = await idleInTransaction(timed.client, 1500);
      expect(result.committed, 'a transaction idle 1.5 s past a 0.5 s timeout').toBe(false);
      expect(result.next?.ok, 'the connection’s next query').toBe(false);
      const error = result.next?.ok === false ? result.next.error : undefined;
      // PostgreSQL ends the session (25P03, idle-in-transaction timeout) and closes the connection.
      expect(['25P03', 'CONNECTION_CLOSED', 'CONNECTION_ENDED', 'CONNECTION_DESTROYED']).toContain(
        databaseErrorCode(error),
      );
      // The worker counts on that: a transient error, so the batch is retried and finds its jobs.
      expect(isRetryableDatabaseError(error)).toBe(true);
      if (!result.committed) expect(isRetryableDatabaseError(result.error)).toBe(true);
      expect(result.backendAlive, 'PostgreSQL ended the backend').toBe(false);
      // The pool goes on with a new connection.
      const [row] = await timed.client`select 1 as one`;
      expect(row?.one).toBe(1);
    });

    it('leaves alone a transaction that is busy (waiting on a query) longer than it, and one without it', async () => {
      const busy = await timed.client.begin(async (tx) => {
        await tx`select pg_sleep(1.2)`;
        const [row] = await tx<{ one: number }[]>`select 1 as one`;
        return row?.one;
      });
      expect(busy).toBe(1);
      // Without the setting the same idle transaction commits: the failure above is the setting's.
      const result = await idleInTransaction(untimed.client, 1500);
      expect(result).toMatchObject({ committed: true, next: { ok: true }, backendAlive: true });
    });

    it('is set per transaction (SET LOCAL), never on the session: nothing a pooled connection could carry over', async () => {
      // One connection, so that every statement below runs in the same session.
      const one = createDb(inject('databaseUrl'), { max: 1, idleInTransactionTimeoutMs: 500 });
      try {
        const show = async (run: typeof one.client | postgres.TransactionSql<{ bigint: bigint }>) => {
          const [row] = await run<[{ value: string; pid: number }]>`
            select current_setting('idle_in_transaction_session_timeout') as value, pg_backend_pid() as pid`;
          return row;
        };
        const before = await show(one.client);
        const inside = await one.client.begin((tx) => show(tx));
        // Drizzle's transactions go through the same begin: they get it too.
        const viaDrizzle = await one.db.transaction(async (tx) => {
          const rows = await tx.execute<{ value: string }>(
            "select current_setting('idle_in_transaction_session_timeout') as value",
          );
          return rows[0]?.value;
        });
        const after = await show(one.client);
        expect(inside?.pid, 'one session throughout').toBe(before?.pid);
        expect(after?.pid).toBe(before?.pid);
        expect({ before: before?.value, inside: inside?.value, viaDrizzle, after: after?.value }).toEqual({
          before: '0',
          inside: '500ms',
          viaDrizzle: '500ms',
          after: '0',
        });
        // No startup parameter but the driver's own: a pooler refuses those it does not know.
        expect(Object.keys(one.client.options.connection)).toEqual(['application_name']);
      } finally {
        await one.close();
      }
    });
  });

  describe('prepare', () => {
    it('names and keeps prepared statements by default; with prepare: false (DATABASE_PREPARE=false) none', async () => {
      const prepared = createDb(inject('databaseUrl'), { max: 1 });
      const unnamed = createDb(inject('databaseUrl'), { max: 1, prepare: false });
      try {
        const count = (db: typeof prepared) =>
          db.client<[{ n: number }]>`
            select count(*)::int as n from pg_prepared_statements where statement like ${'%cs_prepare_probe%'}`;
        for (const db of [prepared, unnamed]) {
          for (let i = 0; i < 3; i++) await db.client`select ${i}::int as cs_prepare_probe`;
        }
        expect((await count(prepared))[0]?.n).toBeGreaterThanOrEqual(1);
        expect((await count(unnamed))[0]?.n).toBe(0);
      } finally {
        await prepared.close();
        await unnamed.close();
      }
    });
  });

  describe('plan_cache_mode', () => {
    // A database of its own: its phone_numbers table starts empty, and only this test grows it.
    let database: Awaited<ReturnType<typeof isolatedDatabase>>;
    let owner: ReturnType<typeof testSql>;
    let app: ReturnType<typeof createDb>;

    beforeAll(async () => {
      database = await isolatedDatabase('db_client');
      owner = testSql(database.ownerUrl);
      // The state of a fresh deployment: the table analysed while empty. Autovacuum is kept off
      // it, so that no ANALYZE invalidates a cached plan while the test runs.
      await owner`alter table phone_numbers set (autovacuum_enabled = false)`;
      await owner`analyze phone_numbers`;
      app = createDb(database.applicationUrl, { max: 1 });
    });
    afterAll(async () => {
      await app?.close();
      await owner?.end();
      await database?.drop();
    });

    it("is the application role's default in its database, set by the migration: every session has it, pooled or not", async () => {
      const { role } = roleOf(database.applicationUrl);
      // A bare driver, no startup parameter of ours: what a pooler's server connection gets.
      const bare = postgres(database.applicationUrl, { max: 1, onnotice: () => {} });
      try {
        const [row] = await bare<[{ plan_cache_mode: string }]>`show plan_cache_mode`;
        expect(row?.plan_cache_mode).toBe('force_custom_plan');
      } finally {
        await bare.end();
      }
      const settings = () => owner<{ db: string; config: string[] }[]>`
        select d.datname as db, s.setconfig as config from pg_db_role_setting s
        join pg_roles r on r.oid = s.setrole left join pg_database d on d.oid = s.setdatabase
        where r.rolname = ${role} and (d.datname = current_database() or s.setdatabase = 0)`;
      const [{ db }] = await owner<[{ db: string }]>`select current_database() as db`;
      // In this database only (roles are shared by the server), not for every database of the role.
      expect(await settings()).toEqual([{ db, config: ['plan_cache_mode=force_custom_plan'] }]);
      // The owner's sessions are left as they were.
      const [mine] = await owner<[{ plan_cache_mode: string }]>`show plan_cache_mode`;
      expect(mine?.plan_cache_mode).toBe('auto');
      // Migrating again changes nothing.
      await migrateDatabase(database.ownerUrl, { applicationUrl: database.applicationUrl });
      expect(await settings()).toEqual([{ db, config: ['plan_cache_mode=force_custom_plan'] }]);
    });

    it('a statement prepared while a table was empty still uses its index once the table has grown', async () => {
      // One connection throughout: prepared statements and their plans belong to a session.
      const conn = await app.client.reserve();
      try {
        const numbers = ['09120000001', '09120000002'];
        const lookup = (list: string[]) =>
          conn`select number, total_charged from phone_numbers where number = any(${list}::text[])`;
        // Prepared statements made while the table is empty, executed more than the five times
        // after which PostgreSQL may settle on a generic plan (here: a sequential scan).
        await conn.unsafe(
          'prepare cs_probe(text[]) as select number, total_charged from phone_numbers where number = any($1)',
        );
        for (let i = 0; i < 8; i++) {
          await lookup(numbers);
          await conn.unsafe(`execute cs_probe('{${numbers.join(',')}}')`);
        }

        await owner`
          insert into phone_numbers (number)
          select '0912' || lpad(i::text, 7, '0') from generate_series(1, 20000) as i`;

        const [explained] = await conn.unsafe<{ 'QUERY PLAN': unknown }[]>(
          `explain (format json) execute cs_probe('{${numbers.join(',')}}')`,
        );
        const plan = JSON.stringify(explained?.['QUERY PLAN']);
        expect(plan, plan).not.toContain('"Seq Scan"');
        expect(plan, plan).toContain('"Index Name":"phone_numbers_pkey"');

        // The driver's own prepared statement (what the workers and the API execute) was planned
        // afresh at every execution: never a generic plan.
        expect(await lookup(numbers)).toHaveLength(2);
        const pattern = '%from phone_numbers where number = any(%';
        const statements = await conn<{ name: string; generic_plans: number; custom_plans: number }[]>`
          select name, generic_plans::int, custom_plans::int from pg_prepared_statements where statement like ${pattern}`;
        expect(statements.length).toBeGreaterThanOrEqual(2);
        for (const s of statements) {
          expect({ name: s.name, generic_plans: s.generic_plans }).toEqual({ name: s.name, generic_plans: 0 });
          expect(s.custom_plans).toBeGreaterThanOrEqual(8);
        }
      } finally {
        conn.release();
      }
    });
  });

  it('does not hand the error of a connection PostgreSQL killed to the next connection', async () => {
    // Seen in the PostgreSQL restart stress test before the driver was patched: the error of the
    // query a connection was killed in failed the first query of the next one, seconds later,
    // and the API answered 503 long after PostgreSQL was back.
    const { db, close } = createDb(inject('databaseUrl'), { max: 1 });
    const owner = testSql();
    try {
      const [me] = await db.$client<[{ pid: number }]>`select pg_backend_pid() as pid`;
      const sleeping = db.$client`select pg_sleep(5)`.catch((error: unknown) => error);
      await sleep(300);
      await owner`select pg_terminate_backend(${me?.pid ?? 0})`;
      expect(isRetryableDatabaseError(await sleeping)).toBe(true);
      await sleep(1000);
      const [row] = await db.$client<[{ ok: number }]>`select 1 as ok`;
      expect(row?.ok).toBe(1);
    } finally {
      await owner.end();
      await close();
    }
  });
});
