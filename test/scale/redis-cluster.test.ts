import { partitionQueueName } from '@cs/queue';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exhaustBalance } from '../support/concurrency.ts';
import { testSql } from '../support/db.ts';
import { PARTITIONS } from '../support/faults.ts';
import { Client } from '../support/http.ts';
import { type LocalRedisCluster, startRedisCluster } from '../support/redis-cluster.ts';
import { System } from '../support/system.ts';

describe('on a Redis Cluster (3 masters, a replica each)', () => {
  let cluster: LocalRedisCluster;
  let system: System;
  let client: Client;
  const sql = testSql();

  beforeAll(async () => {
    cluster = await startRedisCluster();
    system = await System.start({
      workers: 2,
      env: { REDIS_CLUSTER_NODES: cluster.nodes, PARTITIONS: String(PARTITIONS) },
    });
    client = new Client(system.baseUrl);
  });
  afterAll(async () => {
    await system?.stop();
    await cluster?.stop();
    await sql.end();
  });

  it('spreads the partition queues over the masters', async () => {
    const prefix = system.env.REDIS_PREFIX;
    const masters = new Set<number>();
    for (let p = 0; p < PARTITIONS; p++) masters.add(await cluster.masterOf(`${prefix}:${partitionQueueName(p)}:wait`));
    expect(masters.size).toBe(3);
  });

  it('sells a balance out exactly', async () => {
    const result = await exhaustBalance(client, sql, { balance: 100_000n, amount: 3_000n, attempts: 60 });
    expect(result.sold).toBe(33);
  });
});
