import type { ChildProcess } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { partitionOf } from '@cs/queue';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { testSql } from './support/db.ts';
import { inParallel, type TestSeller, waitForJob } from './support/factories.ts';
import {
  fundAll,
  holdSellers,
  PARTITIONS,
  sellersOnEveryPartition,
  until,
  waitPartitionsSettled,
  watchOutput,
} from './support/faults.ts';
import { Client } from './support/http.ts';
import { ADMIN_TOKEN, freePort, System } from './support/system.ts';

describe('graceful shutdown', () => {
  let system: System;
  let client: Client;
  let sql: ReturnType<typeof testSql>;
  const healthPorts: number[] = [];
  /** Each worker's connections carry a name of their own (PGAPPNAME), so pg_stat_activity tells them apart. */
  const appName = (i: number) => `cs-shutdown-worker${i}-${process.pid}`;
  const applicationRole = decodeURIComponent(new URL(inject('databaseUrl')).username);

  beforeAll(async () => {
    system = await System.start({ workers: 0 });
    for (let i = 0; i < 2; i++) {
      const port = await freePort();
      healthPorts.push(port);
      // Info level: the worker says when its shutdown begins.
      system.startWorker({ WORKER_HEALTH_PORT: String(port), PGAPPNAME: appName(i), LOG_LEVEL: 'info' });
    }
    client = new Client(system.baseUrl);
    sql = testSql();
  });
  afterAll(async () => {
    await system?.stop();
    await sql?.end();
  });

  it('a worker told SIGTERM while it holds a batch commits that batch and exits 0; every job ends once', async () => {
    const sellers = await sellersOnEveryPartition(client, 1);
    await fundAll(client, sellers, 1_000_000n);
    const [owned = []] = await waitPartitionsSettled(healthPorts);
    const heldSellers = sellers.filter((s) => owned.includes(partitionOf(s.id, PARTITIONS)));
    expect(heldSellers.length).toBeGreaterThan(0);

    // Worker 0's sellers are locked by the owner, as a long transaction would: the next batch of
    // worker 0 locks its job rows, then waits inside its transaction for these sellers.
    const hold = await holdSellers(sql, heldSellers);
    let released = false;
    const release = async () => {
      if (released) return;
      released = true;
      await hold.release();
    };
    try {
      const sales = Array.from({ length: 400 }, (_, i) => sellers[i % sellers.length] as TestSeller);
      const sending = inParallel(sales, 16, async (seller) => {
        const res = await client.post('/api/charge-sales', {
          token: seller.apiKey,
          body: { seller_id: seller.id, phone_number: '09121234567', amount: 1000 },
        });
        expect(res.status, JSON.stringify(res.body)).toBe(202);
        return res.body.job_id as string;
      });
      // Awaited below; a failure before that must not also surface as an unhandled rejection.
      sending.catch(() => {});

      // The proof that worker 0 holds a batch: its backend waits on a lock inside a transaction
      // that has already locked job rows (it has a transaction id).
      const waiting = async () => {
        const [row] = await sql<{ pid: number; xid: string | null }[]>`
          select pid, backend_xid::text as xid from pg_stat_activity
          where datname = current_database() and usename = ${applicationRole}
            and application_name = ${appName(0)} and state = 'active' and wait_event_type = 'Lock'`;
        return row;
      };
      let batch: { pid: number; xid: string | null } | undefined;
      await until('worker 0 waiting inside its batch transaction', async () => {
        batch = await waiting();
        return batch !== undefined;
      });
      expect(batch?.xid, 'the waiting transaction holds row locks').toBeTruthy();

      const worker = system.workers[0] as ChildProcess;
      const shuttingDown = watchOutput(worker, /shutting down/);
      const exited = system.stopWorker(0, 'SIGTERM');
      await until('worker 0 beginning its shutdown', () => shuttingDown.seen(), 10_000, 20);
      // It does not walk away from the batch: a second later it is still waiting in the same
      // transaction, and still running.
      await sleep(1000);
      expect(await waiting(), 'the batch still in hand during the shutdown').toEqual(batch);
      expect(worker.exitCode, system.recentLogs()).toBeNull();

      await release();
      expect(await exited, system.recentLogs()).toBe(0);

      // That very transaction committed: the ledger rows it wrote carry its transaction id (the
      // jobs rows were written again since, when their top-ups were delivered).
      const committed = await sql<{ id: string; status: string; seller_id: string }[]>`
        select j.id, j.status, j.seller_id from transactions t join jobs j on j.id = t.job_id
        where t.xmin::text = ${batch?.xid ?? ''}`;
      expect(committed.length, 'jobs committed by the batch in hand').toBeGreaterThan(0);
      const final = await inParallel(
        committed.map((j) => j.id),
        8,
        (id) => waitForJob(client, id),
      );
      expect(final.filter((j) => j.status !== 'succeeded').map((j) => `${j.job_id}: ${j.status}`)).toEqual([]);
      const heldIds = new Set(heldSellers.map((s) => s.id));
      expect(committed.every((j) => heldIds.has(j.seller_id))).toBe(true);
      console.log(
        `shutdown: SIGTERM reached worker 0 while its batch in hand (${committed.length} job(s)) waited on a ` +
          'lock; that transaction committed it and the worker exited 0',
      );

      const jobIds = await sending;
      const outcomes = await inParallel(jobIds, 16, (id) => waitForJob(client, id));
      expect(
        outcomes
          .filter((o) => o.status !== 'succeeded')
          .map((o) => `${o.job_id}: ${o.status} ${JSON.stringify(o.error)}`),
        'every sale succeeded',
      ).toEqual([]);

      const ledger = await sql<{ job_id: string; rows: number }[]>`
        select j.id as job_id, count(t.id)::int as rows
        from unnest(${jobIds}::uuid[]) as j(id) left join transactions t on t.job_id = j.id
        group by j.id`;
      expect(
        ledger.filter((r) => r.rows !== 1).map((r) => `${r.job_id}: ${r.rows} ledger rows`),
        'one ledger row per sale',
      ).toEqual([]);
      expect(ledger).toHaveLength(400);
      for (const seller of sellers) {
        const check = await client.get(`/api/sellers/${seller.id}/reconcile`, { token: ADMIN_TOKEN });
        expect(check.body).toMatchObject({ is_reconciled: true, current_balance: '975000', difference: '0' });
      }
    } finally {
      await release();
    }
  });

  it('the API told SIGTERM stops accepting connections and exits 0', async () => {
    expect(await system.stopApi('SIGTERM')).toBe(0);
    await expect(fetch(`${system.baseUrl}/healthz`)).rejects.toThrow();
  });
});
