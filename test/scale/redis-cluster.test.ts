import { setTimeout as sleep } from 'node:timers/promises';
import { partitionLeaseKey, partitionQueueName } from '@cs/queue';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { exhaustBalance, expectLedgersReconcile, StatusTally, waitForJobsFinal } from '../support/concurrency.ts';
import { testSql } from '../support/db.ts';
import {
  auditMoney,
  cleanUp,
  firstCommitAfter,
  fundAll,
  PARTITIONS,
  partitionsOf,
  SaleTraffic,
  sellersOnEveryPartition,
  until,
  waitAllFinal,
  waitPartitionsSettled,
} from '../support/faults.ts';
import type { Client } from '../support/http.ts';
import { idempotencyRaces } from '../support/idempotency.ts';
import { type LocalRedisCluster, systemOnCluster } from '../support/redis-cluster.ts';
import { describeScenario, runRequiredScenario } from '../support/scenario.ts';
import { freePort, type System } from '../support/system.ts';

/** The keys under `pattern` on one node alone (redis-cli without -c scans only that node). */
async function keysOn(cluster: LocalRedisCluster, port: number, pattern: string): Promise<string[]> {
  return (await cluster.cli(port, '--scan', '--pattern', pattern)).split('\n').filter(Boolean);
}

describe('on a Redis Cluster (3 masters, a replica each), with two workers', () => {
  let cluster: LocalRedisCluster;
  let system: System;
  let client: Client;
  let healthPorts: number[];
  const sql = testSql();
  const tally = new StatusTally();

  beforeAll(async () => {
    ({ cluster, system, healthPorts, client } = await systemOnCluster());
  });
  afterAll(async () => {
    await cleanUp(
      () => system?.stop(),
      () => cluster?.stop(),
      () => sql.end({ timeout: 1 }),
    );
    expect(tally.serverErrors).toEqual([]);
  });

  it('keeps every key of the system on the cluster: each partition on the master of its slot, all 3 masters used, nothing on the single Redis', async () => {
    // A sale on every partition, so that every partition's queue has keys.
    const sellers = await sellersOnEveryPartition(client, 1);
    await fundAll(client, sellers, 100_000n);
    const sales = new SaleTraffic(system.baseUrl, sellers, { count: 4 * PARTITIONS, concurrency: 16 });
    await sales.done;
    expect(sales.tally()).toEqual({ 202: 4 * PARTITIONS });
    await waitAllFinal(sql, sellers, 30_000);
    // Right after start the second worker is still taking its share: a lease in hand-over is
    // briefly absent, so look once every partition has exactly one holder.
    await waitPartitionsSettled(healthPorts);

    const prefix = system.env.REDIS_PREFIX as string;
    const masters = await cluster.masters();
    expect(masters).toHaveLength(3);
    const held = new Map<number, string[]>();
    for (const port of masters) held.set(port, await keysOn(cluster, port, `${prefix}:*`));
    for (const port of masters) expect(held.get(port)?.length, `keys on the master at ${port}`).toBeGreaterThan(0);
    for (let p = 0; p < PARTITIONS; p++) {
      // Its lease and its queue's keys live on the master that serves its hash tag's slot.
      const lease = partitionLeaseKey(prefix, p);
      const owner = await cluster.masterOf(lease);
      expect(held.get(owner), `partition ${p}'s lease on ${owner}`).toContain(lease);
      const queueKeys = (held.get(owner) ?? []).filter((k) => k.startsWith(`${prefix}:${partitionQueueName(p)}:`));
      expect(queueKeys.length, `partition ${p}'s queue keys on ${owner}`).toBeGreaterThan(0);
    }

    const single = new Redis(inject('redisUrl'), { lazyConnect: true, maxRetriesPerRequest: 1 });
    try {
      const onSingle: string[] = [];
      let cursor = '0';
      do {
        const [next, keys] = await single.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 10_000);
        onSingle.push(...keys);
        cursor = next;
      } while (cursor !== '0');
      expect(onSingle, `keys of ${prefix} on the single Redis at ${inject('redisUrl')}`).toEqual([]);
    } finally {
      single.disconnect();
    }
    console.log(
      `cluster keys of ${prefix}: ${masters.map((port) => `${held.get(port)?.length} on :${port}`).join(', ')}; none on the single Redis`,
    );
  });

  it('runs the required scenario: 2 sellers at 2,500,000 each, reconciled, 1,010 ledger rows', async () => {
    console.log(describeScenario('required scenario on the cluster', await runRequiredScenario(client)));
  });

  it('sells a balance out exactly', async () => {
    const result = await exhaustBalance(client, sql, { balance: 100_000n, amount: 3_000n, attempts: 60 });
    expect(result.sold).toBe(33);
  });

  it('50 identical submissions at once with one Idempotency-Key: one job, one sale, one ledger row', async () => {
    await idempotencyRaces(client, sql, tally).oneKeyManyTimes('Cluster idempotent', 50);
  });

  it('kill -9 of a worker under traffic: every accepted sale applied exactly once, its partitions taken over, every seller reconciled', async () => {
    const sellers = await sellersOnEveryPartition(client, 2);
    const funding = 80_000n;
    await fundAll(client, sellers, funding);
    await waitPartitionsSettled(healthPorts);

    const traffic = new SaleTraffic(system.baseUrl, sellers, { concurrency: 16, timeoutMs: 10_000 });
    try {
      await until('sales flowing', () => traffic.accepted.length >= 200, 30_000, 20);
      const dead = await partitionsOf(healthPorts[0] as number);
      expect(dead.length).toBeGreaterThan(0);
      const killedAt = Date.now();
      system.killWorker(0);
      const replacement = await freePort();
      system.startWorker({ WORKER_HEALTH_PORT: String(replacement) });
      // Sales keep coming until every partition of the dead worker commits again.
      await until(
        "the dead worker's partitions committing again",
        async () => [...(await firstCommitAfter(sql, sellers, dead, killedAt)).values()].every(Number.isFinite),
        20_000,
        250,
      );
      await sleep(500);
      await traffic.stop();

      expect(traffic.tally(), system.recentLogs()).toEqual({ 202: traffic.requests.length });
      await waitForJobsFinal(
        sql,
        traffic.accepted.map((s) => s.jobId),
        60_000,
      );
      await waitAllFinal(sql, sellers, 30_000);
      const audit = await auditMoney(sql, client, { sellers, requests: traffic.requests, funding });
      expect(audit.failed).toBe(0);
      expect(audit.succeeded + audit.rejected).toBe(traffic.requests.length);
      expect(audit.succeeded).toBeGreaterThan(0);
      await expectLedgersReconcile(
        client,
        sql,
        sellers.map((s) => s.id),
      );

      const frozen = await firstCommitAfter(sql, sellers, dead, killedAt);
      const worstMs = Math.max(...frozen.values());
      console.log(
        `worker kill on the cluster: ${traffic.requests.length} sales (${audit.succeeded} succeeded, ${audit.rejected} rejected, ` +
          `none lost or doubled); the dead worker's ${dead.length} partitions stood still ` +
          `${[...frozen.values()].map((ms) => (ms / 1000).toFixed(1)).join(', ')} s`,
      );
      expect(worstMs).toBeLessThan(10_000);
    } finally {
      await traffic.stop();
    }
  });
});
