import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testSql } from '../support/db.ts';
import {
  auditMoney,
  cleanUp,
  fundAll,
  holdSellers,
  SaleTraffic,
  sellersOnEveryPartition,
  superviseWorkers,
  type ThrowawayPostgres,
  type ThrowawayRedis,
  throwawayPostgres,
  throwawayRedis,
  until,
  waitAllFinal,
} from '../support/faults.ts';
import { Client } from '../support/http.ts';
import { System } from '../support/system.ts';

const OUTAGE_MS = Number(process.env.FAULT_OUTAGE_MS ?? 3000);
/** The longest an answer may take, outage or not: a 503 must come back, not a hang. */
const ANSWER_WITHIN_MS = 5000;

describe.each([
  { how: 'without persistence (every queued job lost)', appendonly: false },
  { how: 'with AOF (fsync every second)', appendonly: true },
])('Redis killed and started again while sales flow, $how', ({ appendonly }) => {
  let redis: ThrowawayRedis;
  let postgres: ThrowawayPostgres;
  let system: System;
  let client: Client;
  let sql: ReturnType<typeof testSql>;

  beforeAll(async () => {
    redis = await throwawayRedis({ appendonly });
    postgres = await throwawayPostgres();
    sql = testSql(postgres.ownerUrl);
    // Small batches: workers then hold few jobs in hand, and most of the backlog waits in Redis
    // when it dies, where only the rebuild from PostgreSQL can bring it back.
    system = await System.start({
      workers: 2,
      redisUrl: redis.url,
      databaseUrl: postgres.databaseUrl,
      env: { BATCH_SIZE: '2' },
    });
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

  it('applies every accepted sale once, answers 503 while it is down (never 500, never a hang), and recovers by itself', async () => {
    const sellers = await sellersOnEveryPartition(client, 1);
    const funding = 150_000n;
    await fundAll(client, sellers, funding);
    const supervisor = superviseWorkers(system);

    const traffic = new SaleTraffic(system.baseUrl, sellers, { concurrency: 8, timeoutMs: ANSWER_WITHIN_MS + 3000 });
    await until('sales flowing', () => traffic.accepted.length >= 200, 30_000, 20);
    // A backlog in Redis when it dies: with the sellers' rows held, accepted sales wait in the
    // queues (and in the workers' hands) instead of being applied at once.
    const hold = await holdSellers(sql, sellers);
    await sleep(1500);
    const downAt = Date.now();
    await redis.stop();
    const [backlog] = await sql<{ n: number }[]>`
      select count(*)::int as n from jobs
      where seller_id = any(${sellers.map((s) => s.id)}::uuid[]) and status in ('queued', 'processing')`;
    await sleep(OUTAGE_MS);
    const startingAt = Date.now();
    await redis.start();
    const upAt = Date.now();
    await hold.release();
    const acceptedAtRestart = traffic.accepted.length;
    await until(
      'sales accepted again after the restart',
      () => traffic.accepted.length >= acceptedAtRestart + 100,
      30_000,
    );
    const recoveredMs = Date.now() - upAt;
    await sleep(1000);
    await traffic.stop();

    // Money first: jobs Redis lost come back from PostgreSQL; none is lost, none applies twice.
    const stoppedAt = Date.now();
    await waitAllFinal(sql, sellers, 90_000);
    const drainedMs = Date.now() - stoppedAt;
    const requeued = /requeued jobs the queue would never deliver/.test(system.recentLogs(500));
    const audit = await auditMoney(sql, client, { sellers, requests: traffic.requests, funding });
    expect(audit.failed).toBe(0);
    expect(backlog?.n).toBeGreaterThan(0);
    // Without persistence the queues came back empty: the backlog was rebuilt from PostgreSQL.
    if (!appendonly) expect(requeued).toBe(true);
    supervisor.stop();
    const timeline = traffic.timeline(downAt, 500);
    console.log(
      `Redis ${appendonly ? 'with AOF' : 'without persistence'}: down ${((upAt - downAt) / 1000).toFixed(1)} s; ` +
        `${backlog?.n} accepted sales unapplied when it died; ` +
        `answers ${JSON.stringify(traffic.tally())}; 202 again ${(recoveredMs / 1000).toFixed(1)} s after the start; ` +
        `${traffic.accepted.length} accepted sales: ${audit.succeeded} succeeded, ${audit.rejected} rejected, ` +
        `none lost or doubled; all final ${(drainedMs / 1000).toFixed(1)} s after the traffic stopped ` +
        `(${requeued ? 'some put back from PostgreSQL' : 'none had to be put back from PostgreSQL'}); ` +
        `worker deaths: ${supervisor.deaths.length}\n${timeline}`,
    );

    // Then the answers: only 202 or 503, each within the bound, and 503 while it was down.
    const odd = traffic.answers
      .filter((a) => (a.status !== 202 && a.status !== 503) || a.tookMs > ANSWER_WITHIN_MS)
      .map((a) => `${a.status} sent ${a.sentAt - downAt} ms after the stop, took ${a.tookMs} ms`);
    expect(odd.slice(0, 10), `up after ${upAt - downAt} ms; answers:\n${timeline}`).toEqual([]);
    const whileDown = traffic.answers.filter((a) => a.sentAt > downAt + 1000 && a.sentAt + a.tookMs < startingAt);
    expect(whileDown.length).toBeGreaterThan(0);
    expect(traffic.tally(whileDown)).toEqual({ 503: whileDown.length });

    // And the workers rode it out: none of them died.
    expect(supervisor.deaths, system.recentLogs()).toEqual([]);
  });
});
