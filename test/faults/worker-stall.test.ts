import type { ChildProcess } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { partitionOf } from '@cs/queue';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  auditMoney,
  fundAll,
  holdSellers,
  PARTITIONS,
  partitionsOf,
  SaleTraffic,
  sellersOnEveryPartition,
  startWorkerFleet,
  until,
  type WorkerFleet,
  waitAllFinal,
  waitPartitionsSettled,
  waitTakenOver,
  watchOutput,
} from '../support/faults.ts';
import type { Client } from '../support/http.ts';
import type { System } from '../support/system.ts';

describe('a worker process paused (SIGSTOP) past its lease and job locks, then resumed', () => {
  // A PostgreSQL of its own: the test holds rows and pauses processes, and needs connections
  // that no other test run competes for.
  let fleet: WorkerFleet;
  let system: System;
  let client: Client;
  let sql: WorkerFleet['sql'];
  let healthPorts: number[];

  beforeAll(async () => {
    fleet = await startWorkerFleet(2);
    ({ system, client, sql, healthPorts } = fleet);
  });
  afterAll(async () => {
    // Never leave a stopped process behind, whatever failed.
    const paused = system?.workers[0];
    if (paused?.pid && paused.exitCode === null && paused.signalCode === null) process.kill(paused.pid, 'SIGCONT');
    await fleet?.stop();
  });

  it('hands its jobs to the other worker, which applies them while it sleeps; resumed, it applies nothing twice', async () => {
    const sellers = await sellersOnEveryPartition(client, 2);
    const funding = 60_000n;
    await fundAll(client, sellers, funding);
    await waitPartitionsSettled(healthPorts);

    const traffic = new SaleTraffic(system.baseUrl, sellers, { concurrency: 8, timeoutMs: 10_000 });
    await until('sales flowing', () => traffic.accepted.length >= 100, 30_000, 20);

    // Catch the worker in the worst place: inside a transaction that holds its jobs' row locks.
    // Its sellers are held for a moment, so its batches wait on them; it is paused while they
    // wait, and the sellers let go, so its transactions are left open in PostgreSQL.
    const paused = await partitionsOf(healthPorts[0] as number);
    const pausedSellers = sellers.filter((s) => paused.includes(partitionOf(s.id, PARTITIONS)));
    const hold = await holdSellers(sql, pausedSellers);
    await until('the worker waiting inside a transaction', async () => {
      const [row] = await sql<{ n: number }[]>`
        select count(*)::int as n from pg_stat_activity
        where datname = current_database() and wait_event_type = 'Lock' and query like '%from sellers%'`;
      return (row?.n ?? 0) > 0;
    });
    const pausedWorker = system.workers[0] as ChildProcess;
    const pid = pausedWorker.pid as number;
    const noticed = watchOutput(pausedWorker, /partition lease lost/);
    process.kill(pid, 'SIGSTOP');
    const pausedAt = Date.now();
    await hold.release();

    let handedOverMs = 0;
    try {
      // Every sale accepted on the paused worker's partitions before the pause, those it held
      // included, is applied by the other worker while the paused one still sleeps.
      await waitTakenOver(sql, healthPorts[1] as number, pausedSellers, pausedAt);
      handedOverMs = Date.now() - pausedAt;
    } finally {
      process.kill(pid, 'SIGCONT');
    }

    // Resumed, the worker finds its leases gone and stops those consumers; whatever it still had
    // in hand meets jobs that are already final.
    await until('the resumed worker noticing it lost its partitions', () => noticed.seen(), 15_000);
    await sleep(2000);
    await traffic.stop();
    expect(traffic.tally().timeout ?? 0, system.recentLogs()).toBe(0);
    expect(Object.keys(traffic.tally())).toEqual(['202']);

    await waitAllFinal(sql, sellers, 60_000);
    const audit = await auditMoney(sql, client, { sellers, requests: traffic.requests, funding });
    expect(audit.failed).toBe(0);
    // It rode out its own stall: no crash on waking to a transaction PostgreSQL had ended.
    expect(pausedWorker.exitCode, system.recentLogs()).toBeNull();
    console.log(
      `worker pause: ${traffic.accepted.length} sales (${audit.succeeded} succeeded, ${audit.rejected} rejected); ` +
        `the paused worker's ${paused.length} partitions were taken over and their sales applied ` +
        `${(handedOverMs / 1000).toFixed(1)} s after the pause; none applied twice after it resumed`,
    );
  });
});
