import type { ChildProcess } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
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
  type WorkerFleet,
  waitAllFinal,
  waitPartitionsSettled,
  watchOutput,
} from '../support/faults.ts';
import type { Client } from '../support/http.ts';
import { freePort, type System } from '../support/system.ts';

describe('a worker process joining while every batch waits on a row lock', () => {
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
    await fleet?.stop();
  });

  it('hands partitions over only once their batch is done, and never lets the others lapse meanwhile', async () => {
    const sellers = await sellersOnEveryPartition(client, 2);
    const funding = 60_000n;
    await fundAll(client, sellers, funding);
    await waitPartitionsSettled(healthPorts);
    const lostALease = [0, 1].map((i) => watchOutput(system.workers[i] as ChildProcess, /partition lease lost/));

    // Every batch now waits on the sellers' rows; a third worker joins, so the two must each give
    // partitions up while the batches of those partitions cannot finish.
    const hold = await holdSellers(sql, sellers);
    const traffic = new SaleTraffic(system.baseUrl, sellers, { concurrency: 8, timeoutMs: 10_000 });
    await sleep(1000);
    const port = await freePort();
    healthPorts.push(port);
    system.startWorker({ WORKER_HEALTH_PORT: String(port) });

    // Well past a lease's life, no partition is claimed by two processes at once.
    const doubleClaims: string[] = [];
    const until = Date.now() + 8000;
    while (Date.now() < until) {
      const owned = await Promise.all(healthPorts.map((p) => partitionsOf(p).catch(() => [])));
      const all = owned.flat();
      if (new Set(all).size !== all.length) doubleClaims.push(JSON.stringify(owned));
      await sleep(200);
    }
    await hold.release();
    const settled = await waitPartitionsSettled(healthPorts);
    await traffic.stop();

    expect(doubleClaims.slice(0, 3)).toEqual([]);
    expect(
      lostALease.map((w) => w.seen()),
      system.recentLogs(),
    ).toEqual([false, false]);
    expect(settled.flat().sort((a, b) => a - b)).toEqual(Array.from({ length: PARTITIONS }, (_, i) => i));
    expect(settled.every((o) => o.length > 0)).toBe(true);

    await waitAllFinal(sql, sellers, 60_000);
    const audit = await auditMoney(sql, client, { sellers, requests: traffic.requests, funding });
    expect(audit.failed).toBe(0);
    expect(traffic.tally()).toEqual({ 202: traffic.requests.length });
  });
});
