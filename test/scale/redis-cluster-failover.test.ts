import type { ChildProcess } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import {
  createRedis,
  openPartitionQueue,
  partitionLeaseKey,
  partitionOf,
  partitionQueueName,
  type RedisClient,
} from '@cs/queue';
import { Worker } from 'bullmq';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expectLedgersReconcile, sell, waitForJobsFinal } from '../support/concurrency.ts';
import { testSql } from '../support/db.ts';
import type { TestSeller } from '../support/factories.ts';
import {
  auditMoney,
  cleanUp,
  firstCommitAfter,
  fundAll,
  PARTITIONS,
  partitionsOf,
  type SaleRequest,
  SaleTraffic,
  sellersOnEveryPartition,
  until,
  waitAllFinal,
  waitPartitionsSettled,
} from '../support/faults.ts';
import type { Client } from '../support/http.ts';
import { type LocalRedisCluster, startRedisCluster, systemOnCluster } from '../support/redis-cluster.ts';
import type { System } from '../support/system.ts';

/** The longest a partition served by a surviving master may go without a commit. */
const SURVIVOR_GAP_MS = 3000;
/** The longest an answer may take, failover or not: a 503 must come back, not a hang. */
const ANSWER_WITHIN_MS = 5000;

/** The longest stretch of `window` without one of `times` (ms, Date.now clock). */
function longestGap(times: number[], [from, to]: [number, number]): number {
  const inside = times.filter((t) => t >= from && t <= to).sort((a, b) => a - b);
  let worst = 0;
  let last = from;
  for (const t of [...inside, to]) {
    worst = Math.max(worst, t - last);
    last = t;
  }
  return worst;
}

/**
 * For a failure message: the jobs of `sellerIds` still open, by partition, with the state BullMQ
 * gives their message (waiting, active, unknown...) and the partition's lease holder.
 */
async function describeOpenJobs(
  sql: ReturnType<typeof testSql>,
  cluster: LocalRedisCluster,
  prefix: string,
  sellerIds: string[],
) {
  const open = await sql<{ partition: number; queue_job_id: string; status: string; n: number }[]>`
    select partition, queue_job_id::text, status, count(*)::int as n from jobs
    where seller_id = any(${sellerIds}::uuid[]) and status in ('queued', 'processing')
    group by partition, queue_job_id, status order by partition`;
  const redis = createRedis({ url: 'redis://127.0.0.1', clusterNodes: cluster.nodes.split(',').map(parseNode) });
  redis.on('error', () => {});
  try {
    const lines: string[] = [];
    for (const row of open) {
      const queue = openPartitionQueue(redis, prefix, row.partition, () => {});
      const state = await queue.getJobState(row.queue_job_id).catch((e: Error) => e.message);
      const lease = await redis.get(partitionLeaseKey(prefix, row.partition)).catch((e: Error) => e.message);
      lines.push(`p${row.partition} message ${row.queue_job_id} ${state}: ${row.n} ${row.status} (lease ${lease})`);
      await queue.close();
    }
    return lines.join('\n');
  } finally {
    redis.disconnect();
  }
}

/** The partitions whose lease a worker process said it lost, from now on (its log lines). */
function watchLeaseLosses(workers: readonly ChildProcess[]): Set<number> {
  const lost = new Set<number>();
  for (const worker of workers) {
    let partial = '';
    const look = (chunk: Buffer) => {
      const lines = (partial + chunk.toString()).split('\n');
      partial = lines.pop() ?? '';
      for (const line of lines) {
        const match = /"partition":(\d+),"msg":"partition lease lost/.exec(line);
        if (match) lost.add(Number(match[1]));
      }
    };
    worker.stdout?.on('data', look);
    worker.stderr?.on('data', look);
  }
  return lost;
}

describe.each([
  {
    coverage: 'cluster-require-full-coverage no (as advised)',
    fullCoverage: false,
    // Only the failed master's partitions can get a 503; the other masters keep serving theirs.
    mayRefuse: (onVictim: boolean) => onVictim,
  },
  {
    coverage: "Redis' default cluster-require-full-coverage yes",
    fullCoverage: true,
    // From the moment the master is marked failing until its replica is promoted, every master
    // answers CLUSTERDOWN to everything: any partition may get a 503 then.
    mayRefuse: () => true,
  },
])('a Redis Cluster master killed with kill -9 under traffic, $coverage', ({ fullCoverage, mayRefuse }) => {
  let cluster: LocalRedisCluster;
  let system: System;
  let client: Client;
  let healthPorts: number[];
  const sql = testSql();

  beforeAll(async () => {
    ({ cluster, system, healthPorts, client } = await systemOnCluster({ fullCoverage }));
  });
  afterAll(async () => {
    await cleanUp(
      () => system?.stop(),
      () => cluster?.stop(),
      () => sql.end({ timeout: 1 }),
    );
  });

  it('its replica takes over; every accepted sale is applied once; the other masters’ partitions never stop; no 500', async () => {
    const prefix = system.env.REDIS_PREFIX as string;
    const sellers = await sellersOnEveryPartition(client, 2);
    const funding = 300_000n;
    await fundAll(client, sellers, funding);
    // The partitions have stopped moving between the workers: a handover is not what is measured.
    await waitPartitionsSettled(healthPorts);

    // Which master serves each partition (its queue and its lease share the partition's slot).
    const masterOfPartition = new Map<number, number>();
    for (let p = 0; p < PARTITIONS; p++) masterOfPartition.set(p, await cluster.masterOf(partitionLeaseKey(prefix, p)));
    const masters = await cluster.masters();
    expect(new Set(masterOfPartition.values()).size).toBe(3);
    // The master to kill is the one holding the workers' registry as well as partitions: the
    // hardest case for the workers' coordination (their lease ticks read the registry first).
    const victim = await cluster.masterOf(`${prefix}:workers`);
    expect(masters).toContain(victim);
    const before = await cluster.topology();
    const victimId = before.find((n) => n.port === victim)?.id;
    const replica = before.find((n) => n.masterId === victimId)?.port;
    expect(replica, `a replica of the master at ${victim}`).toBeDefined();
    const failed = [...masterOfPartition].filter(([, m]) => m === victim).map(([p]) => p);
    const surviving = [...masterOfPartition].filter(([, m]) => m !== victim).map(([p]) => p);
    const partitionOfSeller = new Map(sellers.map((s) => [s.id, partitionOf(s.id, PARTITIONS)]));
    const onVictim = (sellerId: string) => failed.includes(partitionOfSeller.get(sellerId) ?? -1);
    // The system is on the cluster: the leases of the master's partitions are on it.
    for (const p of failed) {
      expect((await cluster.cli(victim, 'exists', partitionLeaseKey(prefix, p))).trim(), `lease of p${p}`).toBe('1');
    }

    const leasesLost = watchLeaseLosses(system.workers);

    // Many clients selling continuously over every partition.
    const traffic = new SaleTraffic(system.baseUrl, sellers, { concurrency: 32, timeoutMs: ANSWER_WITHIN_MS + 5000 });
    let killedAt = 0;
    let promotedAt = 0;
    let windowEnd = 0;
    try {
      await until('sales flowing', () => traffic.accepted.length >= 300, 30_000, 20);
      await sleep(1500);

      killedAt = Date.now();
      await cluster.kill(victim);
      await until(
        `the replica at ${replica} promoted to master in place of ${victim}`,
        async () => {
          const now = await cluster.topology(victim);
          const flagsOf = (port: number | undefined) => now.find((n) => n.port === port)?.flags ?? [];
          return flagsOf(replica).includes('master') && flagsOf(victim).includes('fail');
        },
        15_000,
        100,
      );
      promotedAt = Date.now();
      await cluster.waitHealthy(15_000);
      // The failed master's partitions take sales again.
      await until(
        "sales accepted again on the failed master's partitions",
        () => traffic.accepted.filter((s) => s.answer.sentAt > promotedAt && onVictim(s.sellerId)).length >= 50,
        15_000,
        50,
      );
      windowEnd = Date.now() + 1000;
      await sleep(1500);
    } finally {
      await traffic.stop();
    }

    // Money: every job that got a 202 ends, once, even those whose message the dead master lost
    // before its replica had it (the workers put them back from PostgreSQL).
    await waitForJobsFinal(
      sql,
      traffic.accepted.map((s) => s.jobId),
      60_000,
    ).catch(async (error: Error) => {
      const open = await describeOpenJobs(
        sql,
        cluster,
        prefix,
        sellers.map((s) => s.id),
      );
      const owned = await Promise.all(healthPorts.map((port) => partitionsOf(port).catch(() => [])));
      throw new Error(`${error.message}\nworkers own ${JSON.stringify(owned)}\n${open}\n${system.recentLogs(80)}`);
    });
    await waitAllFinal(sql, sellers, 30_000);
    const audit = await auditMoney(sql, client, { sellers, requests: traffic.requests, funding });
    expect(audit.failed).toBe(0);
    expect(audit.succeeded).toBeGreaterThan(0);
    await expectLedgersReconcile(
      client,
      sql,
      sellers.map((s) => s.id),
    );
    const requeued = (system.recentLogs(2000).match(/requeued jobs the queue would never deliver/g) ?? []).length;

    // Answers: 202, or 503 while the master fails over (for its partitions only, unless the
    // cluster requires full coverage); never a 500, never a hang.
    const timeline = traffic.timeline(killedAt, 1000);
    const duringFailover = (r: SaleRequest) =>
      r.answer.sentAt + r.answer.tookMs >= killedAt && r.answer.sentAt <= promotedAt + 2000;
    const odd = traffic.requests.filter(
      (r) =>
        !(
          r.answer.status === 202 ||
          (r.answer.status === 503 && duringFailover(r) && mayRefuse(onVictim(r.sellerId)))
        ) || r.answer.tookMs > ANSWER_WITHIN_MS,
    );
    expect(
      odd.slice(0, 10).map((r) => `${r.answer.status} after ${r.answer.tookMs} ms: ${JSON.stringify(r.answer.body)}`),
      `answers since the kill:\n${timeline}\n${system.recentLogs()}`,
    ).toEqual([]);
    // A 503 did nothing: its job, if it was recorded, was closed as failed, with no ledger row.
    const refusedKeys = traffic.requests.filter((r) => r.answer.status === 503).map((r) => r.key);
    const refusedJobs = await sql<{ status: string; rows: number }[]>`
      select j.status, (select count(*)::int from transactions t where t.job_id = j.id) as rows
      from jobs j where j.seller_id = any(${sellers.map((s) => s.id)}::uuid[]) and j.idempotency_key = any(${refusedKeys})`;
    expect(refusedJobs.filter((j) => j.status !== 'failed' || j.rows !== 0)).toEqual([]);

    // Partitions: those of the surviving masters never stopped committing. A commit is a job a
    // worker applied (succeeded or rejected); a failed job was closed by the API after a 503.
    const commits = await sql<{ partition: number; finished_at: Date }[]>`
      select partition, finished_at from jobs
      where seller_id = any(${sellers.map((s) => s.id)}::uuid[]) and status in ('succeeded', 'rejected')
        and finished_at between ${new Date(killedAt - 1000)} and ${new Date(windowEnd + 1000)}`;
    const timesOf = (p: number) => commits.filter((c) => c.partition === p).map((c) => c.finished_at.getTime());
    const gaps = new Map(
      Array.from({ length: PARTITIONS }, (_, p) => [p, longestGap(timesOf(p), [killedAt, windowEnd])] as const),
    );
    const show = (ps: number[]) => ps.map((p) => `p${p} ${((gaps.get(p) ?? 0) / 1000).toFixed(1)}`).join(', ');
    console.log(
      `master failover (full coverage ${fullCoverage ? 'yes' : 'no'}): killed :${victim} (partitions ${failed.join(' ')}); replica :${replica} master after ` +
        `${((promotedAt - killedAt) / 1000).toFixed(1)} s; answers ${JSON.stringify(traffic.tally())} ` +
        `(${refusedKeys.length} 503s, ${refusedJobs.length} of them recorded and closed as failed); ` +
        `${traffic.accepted.length} accepted: ${audit.succeeded} succeeded, ${audit.rejected} rejected, none lost or doubled; ` +
        `requeue put jobs back ${requeued} times; leases lost: ${[...leasesLost].sort((a, b) => a - b).join(' ') || 'none'}\n` +
        `  longest commit gap in the ${((windowEnd - killedAt) / 1000).toFixed(1)} s window, failed master's partitions: ${show(failed)}\n` +
        `  surviving masters' partitions: ${show(surviving)}\n${timeline}`,
    );
    // The failed master did stop its partitions (nothing can be fetched from it until its replica
    // takes over, seconds later), or this test would not be measuring a failover.
    expect(failed.filter((p) => (gaps.get(p) ?? 0) < 1000)).toEqual([]);
    // Their owners kept them throughout: no lease but the failed master's expired (a renewal
    // waiting on the dead master, or on the registry if it was there, must not hold up the others).
    expect(
      [...leasesLost].filter((p) => !failed.includes(p)),
      'leases lost on surviving masters',
    ).toEqual([]);
    const stalled = surviving.filter((p) => (gaps.get(p) ?? 0) > SURVIVOR_GAP_MS);
    expect(
      stalled.map((p) => `p${p}: ${gaps.get(p)} ms`),
      system.recentLogs(60),
    ).toEqual([]);
    // The failed master's partitions commit again once its replica has taken over.
    const resumed = await firstCommitAfter(sql, sellers, failed, promotedAt);
    expect([...resumed].filter(([, ms]) => !Number.isFinite(ms))).toEqual([]);
    console.log(
      `  the failed master's partitions committed again ${[...resumed.values()].map((ms) => (ms / 1000).toFixed(1)).join(', ')} s after the promotion`,
    );

    // Job events still reach the API over Pub/Sub (whichever node its subscription was on): a sale
    // that asks to wait for its outcome gets it, on either kind of partition.
    for (const seller of [sellers.find((s) => onVictim(s.id)), sellers.find((s) => !onVictim(s.id))]) {
      const answer = await sell(client, seller as TestSeller, 1000, '09120000001', { prefer: 'wait=10' });
      expect(answer.status, JSON.stringify(answer.body)).toBe(200);
      expect(['succeeded', 'rejected']).toContain(answer.body.status);
    }
    // The workers rode it out.
    expect(system.workers.map((w) => w.exitCode ?? w.signalCode)).toEqual([null, null]);
  });
});

describe('BullMQ workers on the cluster, closed while the master of their queues fails over', () => {
  let cluster: LocalRedisCluster;
  const clients: RedisClient[] = [];

  beforeAll(async () => {
    cluster = await startRedisCluster();
  });
  afterAll(async () => {
    await cleanUp(
      async () => {
        for (const client of clients) client.disconnect();
      },
      () => cluster?.stop(),
    );
  });

  // ioredis 6.0.0 could leave a closed Cluster client in `close` instead of `end`, parking a
  // retried BZPOPMIN forever and with it BullMQ's Worker.close() (see stayEnded in
  // packages/queue/src/redis.ts). The consumer bounds its wait anyway; this checks the cause.
  it('finish closing within seconds, as workers do when their partition moves', async () => {
    const target = { url: 'redis://127.0.0.1', clusterNodes: cluster.nodes.split(',').map(parseNode) };
    const workerRedis = createRedis(target);
    const apiRedis = createRedis(target, { failFast: true });
    clients.push(workerRedis, apiRedis);
    for (const client of clients) client.on('error', () => {});
    const prefix = `close-${process.pid}`;
    const victim = await cluster.masterOf(partitionLeaseKey(prefix, 0));
    const partitions: number[] = [];
    for (let p = 0; p < PARTITIONS; p++) {
      if ((await cluster.masterOf(partitionLeaseKey(prefix, p))) === victim) partitions.push(p);
    }
    let processed = 0;
    const workers = partitions.map((p) => {
      const worker = new Worker(partitionQueueName(p), async () => void processed++, {
        connection: workerRedis,
        prefix,
        concurrency: 10,
        lockDuration: 4000,
        stalledInterval: 2000,
      });
      worker.on('error', () => {});
      return worker;
    });
    const queues = partitions.map((p) => openPartitionQueue(apiRedis, prefix, p, () => {}));
    // Messages keep coming, so each worker is between a fetch and a blocking wait at the kill.
    let adding = true;
    const adder = (async () => {
      while (adding) {
        await Promise.allSettled(queues.map((q) => q.add('x', {})));
        await sleep(50);
      }
    })();
    try {
      await until('the workers consuming', () => processed >= 20 * partitions.length, 20_000);
      await cluster.kill(victim);
      await sleep(1000);
      const started = Date.now();
      const closed = await Promise.all(
        workers.map((w) => Promise.race([w.close().then(() => Date.now() - started), sleep(15_000).then(() => -1)])),
      );
      console.log(`workers closed during the failover in ${closed.join(', ')} ms (-1: not within 15 s)`);
      expect(closed.filter((ms) => ms < 0 || ms > 8000)).toEqual([]);
    } finally {
      adding = false;
      await adder;
      await Promise.allSettled(queues.map((q) => q.close()));
    }
  });
});

function parseNode(address: string) {
  const [host = '', port = ''] = address.split(':');
  return { host, port: Number(port) };
}
