import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testSql } from '../support/db.ts';
import {
  auditMoney,
  cleanUp,
  fundAll,
  SaleTraffic,
  sellersOnEveryPartition,
  superviseWorkers,
  type ThrowawayPostgres,
  throwawayPostgres,
  until,
  waitAllFinal,
} from '../support/faults.ts';
import { Client } from '../support/http.ts';
import { System } from '../support/system.ts';

const OUTAGE_MS = Number(process.env.FAULT_OUTAGE_MS ?? 3000);
/** The longest an answer may take, outage or not: a 503 must come back, not a hang. */
const ANSWER_WITHIN_MS = 5000;

// The immediate shutdown is the harsher restart: every backend quits mid-statement, nothing is
// checkpointed, and PostgreSQL replays its WAL on start. The stress file also does clean stops.
describe('PostgreSQL crashed (immediate shutdown) and started again while sales flow', () => {
  let postgres: ThrowawayPostgres;
  let system: System;
  let client: Client;
  let sql: ReturnType<typeof testSql>;

  beforeAll(async () => {
    postgres = await throwawayPostgres();
    system = await System.start({ workers: 2, databaseUrl: postgres.databaseUrl });
    client = new Client(system.baseUrl);
    sql = testSql(postgres.ownerUrl);
  });
  afterAll(async () => {
    await cleanUp(
      () => system?.stop(),
      () => sql?.end({ timeout: 1 }),
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
    const downAt = Date.now();
    await postgres.crash();
    await sleep(OUTAGE_MS);
    const startingAt = Date.now();
    await postgres.start();
    const upAt = Date.now();
    const acceptedAtRestart = traffic.accepted.length;
    await until(
      'sales accepted again after the restart',
      () => traffic.accepted.length >= acceptedAtRestart + 100,
      30_000,
    );
    const recoveredMs = Date.now() - upAt;
    await sleep(1000);
    await traffic.stop();

    // Money first: whatever the API answered, nothing accepted is lost and nothing applies twice.
    const stoppedAt = Date.now();
    await waitAllFinal(sql, sellers, 60_000);
    const drainedMs = Date.now() - stoppedAt;
    const audit = await auditMoney(sql, client, { sellers, requests: traffic.requests, funding });
    expect(audit.failed).toBe(0);
    supervisor.stop();
    const timeline = traffic.timeline(downAt, 500);
    console.log(
      `PostgreSQL crash-restart: down ${((upAt - downAt) / 1000).toFixed(1)} s; answers ${JSON.stringify(traffic.tally())}; ` +
        `202 again ${(recoveredMs / 1000).toFixed(1)} s after the start; ${traffic.accepted.length} accepted sales: ` +
        `${audit.succeeded} succeeded, ${audit.rejected} rejected, none lost or doubled; ` +
        `all final ${(drainedMs / 1000).toFixed(1)} s after the traffic stopped; ` +
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

    // And the workers rode it out: they retried, none of them died.
    expect(supervisor.deaths, system.recentLogs()).toEqual([]);
  });
});
