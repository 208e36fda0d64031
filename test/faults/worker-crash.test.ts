import type { ChildProcess } from 'node:child_process';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  auditMoney,
  firstCommitAfter,
  fundAll,
  holdSellers,
  PARTITIONS,
  partitionsOf,
  SaleTraffic,
  sellersOnEveryPartition,
  startWorkerFleet,
  type WorkerFleet,
  waitAllFinal,
  waitPartitionsSettled,
  watchOutput,
} from '../support/faults.ts';
import type { Client } from '../support/http.ts';
import { freePort, type System } from '../support/system.ts';

const SALES = Number(process.env.FAULT_SALES ?? 1000);

describe('a worker process killed with kill -9 while sales are in flight', () => {
  // A PostgreSQL of its own: the test holds rows and pauses processes, and needs connections
  // that no other test run competes for.
  let fleet: WorkerFleet;
  let system: System;
  let client: Client;
  let sql: WorkerFleet['sql'];
  let healthPorts: number[];

  beforeAll(async () => {
    fleet = await startWorkerFleet(3);
    ({ system, client, sql, healthPorts } = fleet);
  });
  afterAll(async () => {
    await fleet?.stop();
  });

  it(`applies each of ${SALES} sales in flight exactly once, and the dead worker's partitions stand still for under 10 s`, async () => {
    const sellers = await sellersOnEveryPartition(client, 3);
    // About 30 sales of 5,000 on average per seller against 80,000: many succeed, many are refused.
    const funding = 80_000n;
    await fundAll(client, sellers, funding);
    await waitPartitionsSettled(healthPorts);
    // A live worker keeps its leases whatever its batches wait on: giving up a partition while a
    // batch is stuck must not stall the renewal of the others.
    const survivorsLostALease = [1, 2].map((i) =>
      watchOutput(system.workers[i] as ChildProcess, /partition lease lost/),
    );

    // A backlog: the sellers' rows are held, so every accepted sale is still in flight at the kill,
    // some of them in the hands of the worker that dies.
    const hold = await holdSellers(sql, sellers);
    const backlog = new SaleTraffic(system.baseUrl, sellers, { count: SALES, concurrency: 32, timeoutMs: 10_000 });
    await backlog.done;
    expect(backlog.tally(), system.recentLogs()).toEqual({ 202: SALES });
    const [open] = await sql<{ n: number }[]>`
      select count(*)::int as n from jobs
      where id = any(${backlog.accepted.map((s) => s.jobId)}::uuid[]) and status in ('queued', 'processing')`;
    expect(open?.n).toBe(SALES);

    const dead = await partitionsOf(healthPorts[0] as number);
    expect(dead.length).toBeGreaterThan(0);
    const killedAt = Date.now();
    system.killWorker(0);
    await hold.release();
    const replacementPort = await freePort();
    system.startWorker({ WORKER_HEALTH_PORT: String(replacementPort) });
    // Sales keep coming while the partitions move.
    const more = new SaleTraffic(system.baseUrl, sellers, { count: SALES / 2, concurrency: 16, timeoutMs: 10_000 });
    await more.done;
    expect(more.tally(), system.recentLogs()).toEqual({ 202: SALES / 2 });

    const requests = [...backlog.requests, ...more.requests];
    await waitAllFinal(sql, sellers);
    const audit = await auditMoney(sql, client, { sellers, requests, funding });
    expect(audit.failed).toBe(0);
    expect(audit.succeeded + audit.rejected).toBe(requests.length);
    expect(audit.succeeded).toBeGreaterThan(0);
    expect(audit.rejected).toBeGreaterThan(0);

    const frozen = await firstCommitAfter(sql, sellers, dead, killedAt);
    const worstMs = Math.max(...frozen.values());
    console.log(
      `worker kill: ${SALES} sales in flight at the kill, ${more.accepted.length} more after it ` +
        `(${audit.succeeded} succeeded, ${audit.rejected} rejected, none lost or doubled); the dead worker's ` +
        `${dead.length} partitions stood still ${[...frozen.values()].map((ms) => (ms / 1000).toFixed(1)).join(', ')} s ` +
        `(worst ${(worstMs / 1000).toFixed(1)} s)`,
    );
    expect(worstMs).toBeLessThan(10_000);
    expect(survivorsLostALease.map((w) => w.seen())).toEqual([false, false]);

    // The survivors and the replacement share every partition again.
    const owned = await waitPartitionsSettled([healthPorts[1] as number, healthPorts[2] as number, replacementPort]);
    expect(owned.flat().sort((a, b) => a - b)).toEqual(Array.from({ length: PARTITIONS }, (_, i) => i));
  });
});
