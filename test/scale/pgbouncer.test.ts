import type { ChildProcess } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { createDb, isRetryableDatabaseError } from '@cs/db';
import { partitionOf } from '@cs/queue';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import {
  exhaustBalance,
  expectReconciled,
  msSince,
  runMixedLoad,
  runSeed,
  seededRandom,
  verifyMixedLoad,
} from '../support/concurrency.ts';
import { testSql } from '../support/db.ts';
import { createSeller, fundSeller, type TestSeller } from '../support/factories.ts';
import {
  auditMoney,
  cleanUp,
  fundAll,
  holdSellers,
  PARTITIONS,
  partitionsOf,
  SaleTraffic,
  sellersOnEveryPartition,
  type ThrowawayPostgres,
  throwawayPostgres,
  until,
  waitAllFinal,
  waitPartitionsSettled,
  waitTakenOver,
  watchOutput,
} from '../support/faults.ts';
import { Client } from '../support/http.ts';
import { type PgBouncer, startPgBouncer } from '../support/pgbouncer.ts';
import { ADMIN_TOKEN, freePort, System } from '../support/system.ts';

/**
 * The API and the workers behind PgBouncer 1.18 in transaction pooling, with DATABASE_PREPARE=false:
 * server connections pass from client to client between transactions, startup parameters PgBouncer
 * does not know are refused, and named prepared statements are not carried. Nothing of the system
 * may rely on its session: plan_cache_mode is the application role's default (the migration sets
 * it), the idle-in-transaction timeout is set per transaction (SET LOCAL).
 */

/** Server connections per database and role: fewer than the clients, so they are shared. */
const POOL_SIZE = 4;
const APP = { name: 'cs_app', password: 'cs_app' };

const databaseOf = (url: string) => decodeURIComponent(new URL(url).pathname.slice(1));
const upstreamOf = (url: string) => {
  const u = new URL(url);
  return { host: u.hostname, port: Number(u.port || 5432) };
};
const num = (value: unknown) => Number(value ?? 0);

interface PoolRow {
  database: string;
  user: string;
  cl_active: string;
  cl_waiting: string;
  sv_active: string;
  sv_idle: string;
  sv_used: string;
  sv_tested: string;
  sv_login: string;
}

/**
 * Samples, every 25 ms while a load runs, the pooler's pool of `database` and the server side:
 * the most client connections PgBouncer held for it, the most that waited for a server, and the
 * most backends of the application role PostgreSQL had in the database.
 */
function watchPool(bouncer: PgBouncer, owner: ReturnType<typeof testSql>, alias: string, dbname: string) {
  const seen = { clients: 0, waiting: 0, servers: 0, backends: 0, samples: 0 };
  let running = true;
  const done = (async () => {
    while (running) {
      const [pools, clients, [backends]] = await Promise.all([
        bouncer.show<PoolRow>('POOLS'),
        bouncer.show<{ database: string }>('CLIENTS'),
        owner<[{ n: number }]>`
          select count(*)::int as n from pg_stat_activity where datname = ${dbname} and usename = ${APP.name}`,
      ]);
      const pool = pools.find((p) => p.database === alias && p.user === APP.name);
      if (pool) {
        seen.waiting = Math.max(seen.waiting, num(pool.cl_waiting));
        seen.servers = Math.max(
          seen.servers,
          num(pool.sv_active) + num(pool.sv_idle) + num(pool.sv_used) + num(pool.sv_tested) + num(pool.sv_login),
        );
      }
      seen.clients = Math.max(seen.clients, clients.filter((c) => c.database === alias).length);
      seen.backends = Math.max(seen.backends, backends?.n ?? 0);
      seen.samples++;
      await sleep(25);
    }
  })();
  return {
    seen,
    stop: async () => {
      running = false;
      await done;
      return seen;
    },
  };
}

describe('behind PgBouncer 1.18 in transaction pooling', () => {
  describe('the session settings hold per role and per transaction, not per session', () => {
    let bouncer: PgBouncer;
    let owner: ReturnType<typeof testSql>;
    const dbname = databaseOf(inject('databaseUrl'));

    beforeAll(async () => {
      owner = testSql();
      bouncer = await startPgBouncer({
        upstream: upstreamOf(inject('ownerDatabaseUrl')),
        // `cs_one` has a single server connection: every client of it shares that one session.
        databases: { cs: { dbname }, cs_one: { dbname, poolSize: 1 } },
        users: [APP],
        poolSize: POOL_SIZE,
      });
    });
    afterAll(() =>
      cleanUp(
        () => bouncer?.stop(),
        () => owner?.end(),
      ),
    );

    it('refuses the startup parameters the client used to send; the client sends none of them now', async () => {
      for (const connection of [
        { plan_cache_mode: 'force_custom_plan' },
        { idle_in_transaction_session_timeout: 4000 },
      ]) {
        const old = postgres(bouncer.url('cs', APP.name, APP.password), { max: 1, connection, onnotice: () => {} });
        try {
          await expect(old`select 1`).rejects.toThrow(`unsupported startup parameter: ${Object.keys(connection)[0]}`);
        } finally {
          await old.end({ timeout: 1 });
        }
      }
      const current = createDb(bouncer.url('cs', APP.name, APP.password), {
        max: 1,
        prepare: false,
        idleInTransactionTimeoutMs: 4000,
      });
      try {
        const [row] = await current.client<[{ one: number }]>`select 1 as one`;
        expect(row?.one).toBe(1);
      } finally {
        await current.close();
      }
    });

    it('plans every execution: plan_cache_mode is force_custom_plan on every server connection, by the role', async () => {
      // More clients than server connections, each asking several times: whichever server
      // connection answers, the role's default is there.
      const clients = Array.from({ length: POOL_SIZE * 2 }, () =>
        createDb(bouncer.url('cs', APP.name, APP.password), { max: 2, prepare: false }),
      );
      try {
        const answers = await Promise.all(
          clients.flatMap((db) =>
            Array.from({ length: 4 }, () =>
              db.client.begin(async (tx) => {
                const [row] = await tx<[{ mode: string; pid: number }]>`
                  select current_setting('plan_cache_mode') as mode, pg_backend_pid() as pid, pg_sleep(0.05)`;
                return row;
              }),
            ),
          ),
        );
        expect(new Set(answers.map((a) => a?.mode))).toEqual(new Set(['force_custom_plan']));
        const servers = new Set(answers.map((a) => a?.pid));
        expect(servers.size, 'server connections used').toBeLessThanOrEqual(POOL_SIZE);
        expect(servers.size).toBeGreaterThan(1);
        // `show` itself, as the brief's check reads it, on a bare driver with nothing of ours.
        const bare = postgres(bouncer.url('cs', APP.name, APP.password), { max: 1, prepare: false });
        try {
          const [shown] = await bare<[{ plan_cache_mode: string }]>`show plan_cache_mode`;
          expect(shown?.plan_cache_mode).toBe('force_custom_plan');
        } finally {
          await bare.end();
        }
      } finally {
        await Promise.all(clients.map((db) => db.close()));
      }
    });

    it('ends a worker-like transaction left idle past SET LOCAL’s timeout; the next transaction on that server connection does not inherit it', async () => {
      const url = bouncer.url('cs_one', APP.name, APP.password);
      const worker = createDb(url, { max: 1, prepare: false, idleInTransactionTimeoutMs: 500 });
      const other = createDb(url, { max: 1, prepare: false });
      const probe = <T extends Record<string, unknown>>(tx: postgres.TransactionSql<T>) =>
        tx<[{ timeout: string; pid: number }]>`
          select current_setting('idle_in_transaction_session_timeout') as timeout, pg_backend_pid() as pid`;
      try {
        // The worker's transaction has its timeout; another client's transaction right after, on
        // the very same server connection (the pool has one), has none, and may sit idle.
        const [mine] = await worker.client.begin((tx) => probe(tx));
        const [theirs, idleCommitted] = await other.client.begin(async (tx) => {
          const [row] = await probe(tx);
          await sleep(1200);
          const [after] = await tx<[{ one: number }]>`select 1 as one`;
          return [row, after?.one === 1] as const;
        });
        expect(mine?.timeout).toBe('500ms');
        expect(theirs?.pid, 'the same server connection').toBe(mine?.pid);
        expect(theirs?.timeout).toBe('0');
        expect(idleCommitted, 'a transaction without the timeout, idle 1.2 s, commits').toBe(true);

        // The worker's transaction left idle past its timeout: PostgreSQL ends it, the error is a
        // retryable one, nothing commits, and the pool goes on with a new server connection.
        let pid = 0;
        let next: unknown;
        const outcome = await worker.client
          .begin(async (tx) => {
            const [row] = await probe(tx);
            pid = row?.pid ?? 0;
            await sleep(1500);
            try {
              await tx`select 1`;
            } catch (error) {
              next = error;
              throw error;
            }
          })
          .then(
            () => 'committed',
            (error: unknown) => error,
          );
        expect(outcome, 'a transaction idle 1.5 s past a 0.5 s timeout').not.toBe('committed');
        expect(isRetryableDatabaseError(outcome), String(outcome)).toBe(true);
        if (next !== undefined) expect(isRetryableDatabaseError(next), String(next)).toBe(true);
        const [gone] = await owner<[{ n: number }]>`select count(*)::int as n from pg_stat_activity where pid = ${pid}`;
        expect(gone?.n, 'PostgreSQL ended the backend').toBe(0);
        const [again] = await worker.client.begin((tx) => probe(tx));
        expect(again?.timeout).toBe('500ms');
        expect(again?.pid).not.toBe(pid);
      } finally {
        await worker.close();
        await other.close();
      }
    });

    it('(why: a session-level SET would leak to whichever client gets the server connection next)', async () => {
      const url = bouncer.url('cs_one', APP.name, APP.password);
      const a = postgres(url, { max: 1, prepare: false, onnotice: () => {} });
      const b = postgres(url, { max: 1, prepare: false, onnotice: () => {} });
      try {
        await a.unsafe('set statement_timeout = 1234');
        const [row] = await b<[{ value: string }]>`select current_setting('statement_timeout') as value`;
        expect(row?.value).toBe('1234ms');
        await b.unsafe('reset statement_timeout');
      } finally {
        await a.end();
        await b.end();
      }
    });
  });

  describe('the core path: sellers funded, concurrent sales from many clients, balances exhausted', () => {
    let bouncer: PgBouncer;
    let system: System;
    let client: Client;
    const sql = testSql();
    const dbname = databaseOf(inject('databaseUrl'));

    beforeAll(async () => {
      bouncer = await startPgBouncer({
        upstream: upstreamOf(inject('ownerDatabaseUrl')),
        databases: { cs_core: { dbname } },
        users: [APP],
        poolSize: POOL_SIZE,
      });
      // An API and two workers, 5 client connections each (System's DB_POOL_SIZE): 15 clients of
      // PgBouncer, for 4 server connections.
      system = await System.start({
        workers: 2,
        databaseUrl: bouncer.url('cs_core', APP.name, APP.password),
        env: { DATABASE_PREPARE: 'false' },
      });
      client = new Client(system.baseUrl);
    });
    afterAll(() =>
      cleanUp(
        () => system?.stop(),
        () => bouncer?.stop(),
        () => sql.end(),
      ),
    );

    it('applies every sale and credit once, reconciles, and PgBouncer carried it on ≤ 4 server connections', async () => {
      const seed = runSeed();
      const log = (line: string) => console.log(`pgbouncer core path (seed ${seed}): ${line}`);
      // Sellers only read while the load runs: their reconciliations (a repeatable-read
      // transaction reading the ledger through a cursor) must agree throughout.
      const quiet = await Promise.all([0, 1, 2].map((i) => createSeller(client, `Quiet ${i}`)));
      await Promise.all(quiet.map((seller) => fundSeller(client, seller, 10_000)));

      const statsBefore = await bouncer.show<{ database: string; total_xact_count: string }>('STATS');
      const pool = watchPool(bouncer, sql, 'cs_core', dbname);
      const started = performance.now();
      let loading = true;
      const reconciliations: Array<{ status: number; reconciled: boolean }> = [];
      const readers = Promise.all(
        Array.from({ length: 12 }, async (_, i) => {
          while (loading) {
            const seller = quiet[i % quiet.length] as TestSeller;
            const res = await client.get(`/api/sellers/${seller.id}/reconcile`, { token: ADMIN_TOKEN });
            reconciliations.push({ status: res.status, reconciled: res.body?.is_reconciled === true });
          }
        }),
      );

      // Sales, credit requests and approvals from 40 clients over 5 sellers, the poorest of which
      // run out; beside them, sellers whose balances concurrent sales exhaust exactly.
      const [load, exhausted] = await Promise.all([
        runMixedLoad(client, {
          sales: 600,
          clients: 40,
          sellers: 5,
          creditsPer100Sales: 5,
          random: seededRandom(seed),
          log,
        }),
        Promise.all([
          exhaustBalance(client, sql, { balance: 50_000n, amount: 10_000n, attempts: 10 }),
          exhaustBalance(client, sql, { balance: 99_999n, amount: 10_000n, attempts: 15 }),
          exhaustBalance(client, sql, { balance: 250_000n, amount: 1_000n, attempts: 300 }),
        ]),
      ]);
      loading = false;
      await readers;
      const outcome = await verifyMixedLoad(client, sql, load);
      const seen = await pool.stop();
      const tookMs = msSince(started);

      expect(exhausted).toEqual([
        { sold: 5, remaining: 0n },
        { sold: 9, remaining: 9_999n },
        { sold: 250, remaining: 0n },
      ]);
      expect(reconciliations.length).toBeGreaterThan(12);
      expect(reconciliations.filter((r) => r.status !== 200 || !r.reconciled)).toEqual([]);
      for (const seller of quiet) await expectReconciled(client, seller.id, 10_000n);
      expect(outcome.refusedBySeller.at(-1), 'the poorest seller ran out').toBeGreaterThan(0);
      expect(outcome.succeeded).toBeGreaterThan(0);

      // PgBouncer carried the traffic: every backend of the application role in this database is
      // one of its server connections, there were never more than the pool's size, and more
      // clients than that shared them.
      const servers = await bouncer.show<{ database: string; remote_pid: string }>('SERVERS');
      const serverPids = new Set(servers.filter((s) => s.database === 'cs_core').map((s) => num(s.remote_pid)));
      const backends = await sql<{ pid: number }[]>`
        select pid from pg_stat_activity where datname = ${dbname} and usename = ${APP.name}`;
      expect(backends.length).toBeGreaterThan(0);
      for (const b of backends) expect(serverPids.has(b.pid), `backend ${b.pid} is PgBouncer's`).toBe(true);
      expect(seen.samples).toBeGreaterThan(10);
      expect(seen.backends, 'backends of the application role').toBeLessThanOrEqual(POOL_SIZE);
      expect(seen.servers, "PgBouncer's server connections").toBeLessThanOrEqual(POOL_SIZE);
      expect(seen.clients, "PgBouncer's client connections").toBeGreaterThan(POOL_SIZE);
      const statsAfter = await bouncer.show<{ database: string; total_xact_count: string }>('STATS');
      const xacts = (rows: typeof statsAfter) => num(rows.find((r) => r.database === 'cs_core')?.total_xact_count);
      const transactions = xacts(statsAfter) - xacts(statsBefore);
      expect(transactions, 'transactions through PgBouncer').toBeGreaterThan(load.sales.length / 10);
      expect(bouncer.logs(), 'no protocol trouble').not.toMatch(/prepared statement|unsupported|protocol error/i);

      log(
        `${load.sales.length} mixed sales (${outcome.succeeded} sold, ${outcome.refused} refused) and ` +
          `${load.credits.length} credit processings, ${reconciliations.length} reconciliations meanwhile, plus ${exhausted.reduce((n, e) => n + e.sold, 0)} of 325 ` +
          `exhausting sales sold, all final and reconciled in ${tookMs} ms; ${transactions} transactions through ` +
          `PgBouncer; at most ${seen.clients} client connections (${seen.waiting} waiting at once) on ` +
          `${seen.servers} server connections, ${seen.backends} backends (pool ${POOL_SIZE}, ${seen.samples} samples)`,
      );
    });
  });

  describe('a worker paused (SIGSTOP) past its lease inside a batch transaction', () => {
    // A PostgreSQL of its own, as in test/faults/worker-stall.test.ts, with PgBouncer in front.
    let pg: ThrowawayPostgres;
    let bouncer: PgBouncer;
    let sql: ReturnType<typeof testSql>;
    let system: System;
    let client: Client;
    const healthPorts: number[] = [];

    beforeAll(async () => {
      pg = await throwawayPostgres();
      sql = testSql(pg.ownerUrl);
      bouncer = await startPgBouncer({
        upstream: upstreamOf(pg.ownerUrl),
        databases: { cs_stall: { dbname: databaseOf(pg.ownerUrl) } },
        users: [APP],
        poolSize: POOL_SIZE,
      });
      system = await System.start({
        workers: 0,
        databaseUrl: bouncer.url('cs_stall', APP.name, APP.password),
        env: { DATABASE_PREPARE: 'false' },
      });
      for (let i = 0; i < 2; i++) {
        const port = await freePort();
        healthPorts.push(port);
        system.startWorker({ WORKER_HEALTH_PORT: String(port) });
      }
      client = new Client(system.baseUrl);
    });
    afterAll(async () => {
      // Never leave a stopped process behind, whatever failed.
      const paused = system?.workers[0];
      if (paused?.pid && paused.exitCode === null && paused.signalCode === null) process.kill(paused.pid, 'SIGCONT');
      await cleanUp(
        () => system?.stop(),
        () => bouncer?.stop(),
        () => sql?.end({ timeout: 1 }),
        () => pg?.remove(),
      );
    });

    it('PostgreSQL ends its idle transaction (SET LOCAL timeout), the other worker applies its jobs; resumed, it applies nothing twice', async () => {
      const sellers = await sellersOnEveryPartition(client, 2);
      const funding = 60_000n;
      await fundAll(client, sellers, funding);
      await waitPartitionsSettled(healthPorts);

      const traffic = new SaleTraffic(system.baseUrl, sellers, { concurrency: 8, timeoutMs: 10_000 });
      await until('sales flowing', () => traffic.accepted.length >= 100, 30_000, 20);

      // The paused worker's sellers are held, so its batch transaction waits on them; it is paused
      // while it waits, and the sellers let go: its transaction is left open, idle, in PostgreSQL.
      const paused = await partitionsOf(healthPorts[0] as number);
      const pausedSellers = sellers.filter((s) => paused.includes(partitionOf(s.id, PARTITIONS)));
      const hold = await holdSellers(sql, pausedSellers);
      const waiting = async () =>
        sql<{ pid: number }[]>`
          select pid from pg_stat_activity
          where datname = current_database() and usename = ${APP.name}
            and wait_event_type = 'Lock' and query like '%from sellers%'`;
      await until('the worker waiting inside a transaction', async () => (await waiting()).length > 0);
      const pausedWorker = system.workers[0] as ChildProcess;
      const pid = pausedWorker.pid as number;
      const noticed = watchOutput(pausedWorker, /partition lease lost/);
      process.kill(pid, 'SIGSTOP');
      const pausedAt = Date.now();
      // Its backends: the server connections PgBouncer lent its open transaction.
      const held = (await waiting()).map((r) => r.pid);
      await hold.release();
      const releasedAt = Date.now();

      let endedMs = 0;
      let handedOverMs = 0;
      try {
        // PostgreSQL ends the paused worker's transaction once it has sat idle JOB_LOCK_MS (4 s):
        // the SET LOCAL of its batch transaction, since nothing is set on the session.
        await until(
          "the paused worker's transaction ended by PostgreSQL",
          async () => {
            const [row] = await sql<[{ n: number }]>`
              select count(*)::int as n from pg_stat_activity where pid = any(${held}::int[])`;
            return row?.n === 0;
          },
          15_000,
          50,
        );
        endedMs = Date.now() - releasedAt;
        await waitTakenOver(sql, healthPorts[1] as number, pausedSellers, pausedAt);
        handedOverMs = Date.now() - pausedAt;
      } finally {
        process.kill(pid, 'SIGCONT');
      }
      expect(held.length).toBeGreaterThan(0);
      // Not at once (nothing else ended it), and about when the timeout says.
      expect(endedMs, 'ended after about JOB_LOCK_MS idle').toBeGreaterThanOrEqual(3000);

      await until('the resumed worker noticing it lost its partitions', () => noticed.seen(), 15_000);
      await sleep(2000);
      await traffic.stop();
      expect(traffic.tally().timeout ?? 0, system.recentLogs()).toBe(0);
      expect(Object.keys(traffic.tally())).toEqual(['202']);

      await waitAllFinal(sql, sellers, 60_000);
      const audit = await auditMoney(sql, client, { sellers, requests: traffic.requests, funding });
      expect(audit.failed).toBe(0);
      expect(pausedWorker.exitCode, system.recentLogs()).toBeNull();
      expect(bouncer.logs(), 'no protocol trouble').not.toMatch(/prepared statement|unsupported|protocol error/i);
      console.log(
        `pgbouncer worker pause: ${traffic.accepted.length} sales (${audit.succeeded} succeeded, ${audit.rejected} rejected); ` +
          `PostgreSQL ended the paused worker's transaction ${(endedMs / 1000).toFixed(1)} s after its rows were free; ` +
          `its ${paused.length} partitions' sales applied by the other worker ${(handedOverMs / 1000).toFixed(1)} s ` +
          'after the pause; none applied twice after it resumed',
      );
    });
  });
});
