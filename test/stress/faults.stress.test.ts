import type { ChildProcess } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { partitionOf } from '@cs/queue';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testSql } from '../support/db.ts';
import {
  auditMoney,
  cleanUp,
  firstCommitAfter,
  fundAll,
  holdSellers,
  PARTITIONS,
  partitionsOf,
  SaleTraffic,
  sellersOnEveryPartition,
  superviseWorkers,
  type ThrowawayPostgres,
  type ThrowawayRedis,
  throwawayPostgres,
  throwawayRedis,
  until,
  waitAllFinal,
  waitPartitionsSettled,
  waitTakenOver,
  watchOutput,
} from '../support/faults.ts';
import { Client } from '../support/http.ts';
import { freePort, System } from '../support/system.ts';

/**
 * The fault proofs of test/faults, larger and repeated. STRESS_FAULT_SALES sets the backlog in
 * flight at the first worker kill (default 3,000), STRESS_FAULT_ROUNDS how many times each fault
 * is repeated (default 3). Every wait is bounded; progress is printed.
 */
const SALES = Number(process.env.STRESS_FAULT_SALES) || 3000;
const ROUNDS = Number(process.env.STRESS_FAULT_ROUNDS) || 3;
const ANSWER_WITHIN_MS = 5000;
const log = (line: string) => console.log(`[faults stress] ${line}`);

/** The answers that break the contract during an outage: anything but 202/503, or too slow. */
function oddAnswers(traffic: SaleTraffic): string[] {
  return traffic.answers
    .filter((a) => (a.status !== 202 && a.status !== 503) || a.tookMs > ANSWER_WITHIN_MS)
    .map((a) => `${a.status} after ${a.tookMs} ms`);
}

describe('worker processes killed with kill -9, again and again', () => {
  let postgres: ThrowawayPostgres;
  let system: System;
  let client: Client;
  let sql: ReturnType<typeof testSql>;
  /** Live workers: index in system.workers and health port. */
  const live: Array<{ index: number; port: number }> = [];

  const startWorker = async () => {
    const port = await freePort();
    system.startWorker({ WORKER_HEALTH_PORT: String(port) });
    live.push({ index: system.workers.length - 1, port });
  };

  beforeAll(async () => {
    postgres = await throwawayPostgres();
    sql = testSql(postgres.ownerUrl);
    system = await System.start({ workers: 0, databaseUrl: postgres.databaseUrl });
    for (let i = 0; i < 3; i++) await startWorker();
    client = new Client(system.baseUrl);
  });
  afterAll(async () => {
    await cleanUp(
      () => system?.stop(),
      () => sql?.end({ timeout: 1 }),
      () => postgres?.remove(),
    );
  });

  it(`${SALES} sales in flight at the first kill, ${ROUNDS} more kills under live traffic: none lost or doubled, no partition still for 10 s`, async () => {
    const sellers = await sellersOnEveryPartition(client, 4);
    const funding = 250_000n;
    await fundAll(client, sellers, funding);
    await waitPartitionsSettled(live.map((w) => w.port));
    const freezes: number[] = [];

    const killOne = async () => {
      const victim = live.shift();
      if (!victim) throw new Error('no live worker');
      const dead = await partitionsOf(victim.port);
      const killedAt = Date.now();
      system.killWorker(victim.index);
      await startWorker();
      return { dead, killedAt };
    };
    const measure = async ({ dead, killedAt }: { dead: number[]; killedAt: number }) => {
      await until('the dead worker’s partitions committing again', async () => {
        const frozen = await firstCommitAfter(sql, sellers, dead, killedAt);
        return [...frozen.values()].every((ms) => Number.isFinite(ms));
      });
      const worst = Math.max(...(await firstCommitAfter(sql, sellers, dead, killedAt)).values());
      freezes.push(worst);
      return worst;
    };

    // Round 0: a backlog of SALES held in flight, then the kill.
    const hold = await holdSellers(sql, sellers);
    const backlog = new SaleTraffic(system.baseUrl, sellers, { count: SALES, concurrency: 32, timeoutMs: 20_000 });
    await backlog.done;
    expect(backlog.tally()).toEqual({ 202: SALES });
    log(`${SALES} sales accepted and held in flight; killing a worker`);
    const first = await killOne();
    await hold.release();
    log(`round 0: the dead worker's partitions stood still ${((await measure(first)) / 1000).toFixed(1)} s`);

    // Rounds 1..ROUNDS: kills under live traffic.
    const traffic = new SaleTraffic(system.baseUrl, sellers, { concurrency: 16, timeoutMs: 20_000 });
    for (let round = 1; round <= ROUNDS; round++) {
      await waitPartitionsSettled(
        live.map((w) => w.port),
        60_000,
      );
      await sleep(1000);
      const kill = await killOne();
      log(`round ${round}: partitions still ${((await measure(kill)) / 1000).toFixed(1)} s after the kill`);
    }
    await sleep(2000);
    await traffic.stop();
    expect(traffic.tally()).toEqual({ 202: traffic.requests.length });

    const requests = [...backlog.requests, ...traffic.requests];
    log(`waiting for ${requests.length} sales to be final`);
    await waitAllFinal(sql, sellers, 180_000);
    const audit = await auditMoney(sql, client, { sellers, requests, funding });
    log(
      `${requests.length} sales: ${audit.succeeded} succeeded, ${audit.rejected} rejected, none lost or doubled; ` +
        `worst stand-still per kill: ${freezes.map((ms) => (ms / 1000).toFixed(1)).join(', ')} s`,
    );
    expect(audit.failed).toBe(0);
    expect(Math.max(...freezes)).toBeLessThan(10_000);
  });
});

describe('Redis killed again and again without persistence', () => {
  let redis: ThrowawayRedis;
  let postgres: ThrowawayPostgres;
  let system: System;
  let client: Client;
  let sql: ReturnType<typeof testSql>;

  beforeAll(async () => {
    redis = await throwawayRedis({ appendonly: false });
    postgres = await throwawayPostgres();
    sql = testSql(postgres.ownerUrl);
    system = await System.start({ workers: 3, redisUrl: redis.url, databaseUrl: postgres.databaseUrl });
    client = new Client(system.baseUrl);
  });
  afterAll(async () => {
    await cleanUp(
      () => system?.stop(),
      () => sql?.end({ timeout: 1 }),
      () => redis?.remove(),
      () => postgres?.remove(),
    );
  });

  it(`${ROUNDS} restarts with a backlog each time: every accepted sale applied once, 503 while down, no worker dies`, async () => {
    const sellers = await sellersOnEveryPartition(client, 2);
    const funding = 300_000n;
    await fundAll(client, sellers, funding);
    const supervisor = superviseWorkers(system);
    const traffic = new SaleTraffic(system.baseUrl, sellers, { concurrency: 16, timeoutMs: ANSWER_WITHIN_MS + 3000 });
    for (let round = 1; round <= ROUNDS; round++) {
      await until('sales flowing', () => traffic.accepted.length >= 200 * round, 60_000, 20);
      const hold = await holdSellers(sql, sellers);
      await sleep(1500);
      await redis.stop();
      await sleep(3000);
      await redis.start();
      await hold.release();
      log(`Redis round ${round}: restarted; answers so far ${JSON.stringify(traffic.tally())}`);
      await sleep(3000);
    }
    await traffic.stop();
    log(`waiting for ${traffic.requests.length} sales to be final (lost ones come back from PostgreSQL)`);
    await waitAllFinal(sql, sellers, 180_000);
    const audit = await auditMoney(sql, client, { sellers, requests: traffic.requests, funding });
    supervisor.stop();
    log(
      `Redis: ${traffic.accepted.length} accepted: ${audit.succeeded} succeeded, ${audit.rejected} rejected, ` +
        `none lost or doubled; answers ${JSON.stringify(traffic.tally())}; worker deaths ${supervisor.deaths.length}`,
    );
    expect(audit.failed).toBe(0);
    expect(oddAnswers(traffic).slice(0, 10)).toEqual([]);
    expect(supervisor.deaths).toEqual([]);
  });
});

describe('PostgreSQL stopped and crashed again and again', () => {
  let postgres: ThrowawayPostgres;
  let system: System;
  let client: Client;
  let sql: ReturnType<typeof testSql>;

  beforeAll(async () => {
    postgres = await throwawayPostgres();
    sql = testSql(postgres.ownerUrl);
    system = await System.start({ workers: 3, databaseUrl: postgres.databaseUrl });
    client = new Client(system.baseUrl);
  });
  afterAll(async () => {
    await cleanUp(
      () => system?.stop(),
      () => sql?.end({ timeout: 1 }),
      () => postgres?.remove(),
    );
  });

  it(`${2 * ROUNDS} restarts, fast and immediate in turn: every accepted sale applied once, 503 while down, no worker dies`, async () => {
    const sellers = await sellersOnEveryPartition(client, 2);
    const funding = 300_000n;
    await fundAll(client, sellers, funding);
    const supervisor = superviseWorkers(system);
    const traffic = new SaleTraffic(system.baseUrl, sellers, { concurrency: 16, timeoutMs: ANSWER_WITHIN_MS + 3000 });
    for (let round = 1; round <= 2 * ROUNDS; round++) {
      const accepted = traffic.accepted.length;
      await until('sales flowing', () => traffic.accepted.length >= accepted + 200, 60_000, 20);
      const mode = round % 2 === 1 ? 'stop' : 'crash';
      await (mode === 'stop' ? postgres.stop() : postgres.crash());
      await sleep(3000);
      await postgres.start();
      log(`PostgreSQL round ${round} (${mode}): restarted; answers so far ${JSON.stringify(traffic.tally())}`);
    }
    const accepted = traffic.accepted.length;
    await until('sales accepted after the last restart', () => traffic.accepted.length >= accepted + 100, 60_000);
    await traffic.stop();
    log(`waiting for ${traffic.requests.length} sales to be final`);
    await waitAllFinal(sql, sellers, 180_000);
    const audit = await auditMoney(sql, client, { sellers, requests: traffic.requests, funding });
    supervisor.stop();
    log(
      `PostgreSQL: ${traffic.accepted.length} accepted: ${audit.succeeded} succeeded, ${audit.rejected} rejected, ` +
        `none lost or doubled; answers ${JSON.stringify(traffic.tally())}; worker deaths ${supervisor.deaths.length}`,
    );
    expect(audit.failed).toBe(0);
    expect(oddAnswers(traffic).slice(0, 10)).toEqual([]);
    expect(supervisor.deaths).toEqual([]);
  });
});

describe('worker processes paused past their leases, again and again', () => {
  let postgres: ThrowawayPostgres;
  let system: System;
  let client: Client;
  let sql: ReturnType<typeof testSql>;
  const healthPorts: number[] = [];
  /** Each worker's connections carry a name of their own (PGAPPNAME), so pg_stat_activity tells them apart. */
  const appName = (i: number) => `cs-stress-pause-worker${i}-${process.pid}`;

  beforeAll(async () => {
    postgres = await throwawayPostgres();
    sql = testSql(postgres.ownerUrl);
    system = await System.start({ workers: 0, databaseUrl: postgres.databaseUrl });
    for (let i = 0; i < 2; i++) {
      const port = await freePort();
      healthPorts.push(port);
      system.startWorker({ WORKER_HEALTH_PORT: String(port), PGAPPNAME: appName(i) });
    }
    client = new Client(system.baseUrl);
  });
  afterAll(async () => {
    // Never leave a stopped process behind, whatever failed.
    for (const w of system?.workers ?? []) {
      if (w.pid && w.exitCode === null && w.signalCode === null) process.kill(w.pid, 'SIGCONT');
    }
    await cleanUp(
      () => system?.stop(),
      () => sql?.end({ timeout: 1 }),
      () => postgres?.remove(),
    );
  });

  it(`${ROUNDS} pauses, each caught inside a transaction: its jobs move on without it, and it applies nothing twice`, async () => {
    const sellers = await sellersOnEveryPartition(client, 2);
    const funding = 300_000n;
    await fundAll(client, sellers, funding);
    const applicationRole = decodeURIComponent(new URL(postgres.databaseUrl).username);
    const traffic = new SaleTraffic(system.baseUrl, sellers, { concurrency: 8, timeoutMs: 20_000 });
    for (let round = 1; round <= ROUNDS; round++) {
      await waitPartitionsSettled(healthPorts, 60_000);
      const victim = (round - 1) % 2;
      const other = 1 - victim;
      const worker = system.workers[victim] as ChildProcess;
      const paused = await partitionsOf(healthPorts[victim] as number);
      const pausedSellers = sellers.filter((s) => paused.includes(partitionOf(s.id, PARTITIONS)));
      const hold = await holdSellers(sql, pausedSellers);
      // The victim's own backend (the processes connect as the application role, not as the
      // owner this test's SQL uses), waiting on a lock inside a transaction that already holds
      // row locks of its jobs: it has a transaction id. Matched by the process, not by the
      // statement's text, which changes whenever the batch's SQL is reworded.
      await until('the worker waiting inside a transaction', async () => {
        const [row] = await sql<{ n: number }[]>`
          select count(*)::int as n from pg_stat_activity
          where datname = current_database() and usename = ${applicationRole}
            and application_name = ${appName(victim)} and state = 'active' and wait_event_type = 'Lock' and backend_xid is not null`;
        return (row?.n ?? 0) > 0;
      });
      const noticed = watchOutput(worker, /partition lease lost/);
      process.kill(worker.pid as number, 'SIGSTOP');
      const pausedAt = Date.now();
      await hold.release();
      try {
        await waitTakenOver(sql, healthPorts[other] as number, pausedSellers, pausedAt, 30_000);
        log(
          `pause round ${round}: worker ${victim}'s sales applied by the other ${Date.now() - pausedAt} ms after the pause`,
        );
      } finally {
        process.kill(worker.pid as number, 'SIGCONT');
      }
      await until('the resumed worker noticing it lost its partitions', () => noticed.seen(), 30_000);
      expect(worker.exitCode, system.recentLogs()).toBeNull();
    }
    await sleep(2000);
    await traffic.stop();
    await waitAllFinal(sql, sellers, 120_000);
    const audit = await auditMoney(sql, client, { sellers, requests: traffic.requests, funding });
    log(
      `pauses: ${traffic.accepted.length} sales: ${audit.succeeded} succeeded, ${audit.rejected} rejected, none applied twice`,
    );
    expect(audit.failed).toBe(0);
    expect(traffic.tally()).toEqual({ 202: traffic.requests.length });
  });
});
