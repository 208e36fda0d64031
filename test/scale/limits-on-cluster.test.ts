import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createSeller, fundSeller } from '../support/factories.ts';
import { cleanUp } from '../support/faults.ts';
import type { Client } from '../support/http.ts';
import { type LocalRedisCluster, systemOnCluster } from '../support/redis-cluster.ts';
import { ADMIN_TOKEN, type System } from '../support/system.ts';

const SALES_A_SECOND = 5;
const AUTH_FAILURES = 3;

/** The keys under `pattern` on one node alone (redis-cli without -c scans only that node). */
async function keysOn(cluster: LocalRedisCluster, port: number, pattern: string): Promise<string[]> {
  return (await cluster.cli(port, '--scan', '--pattern', pattern)).split('\n').filter(Boolean);
}

describe('the limits on a Redis Cluster', () => {
  let cluster: LocalRedisCluster;
  let system: System;
  let client: Client;

  beforeAll(async () => {
    ({ cluster, system, client } = await systemOnCluster({
      env: {
        SELLER_RATE_LIMIT: String(SALES_A_SECOND),
        AUTH_FAILURE_LIMIT: String(AUTH_FAILURES),
        AUTH_FAILURE_WINDOW_SECONDS: '30',
      },
    }));
  });
  afterAll(async () => {
    await cleanUp(
      () => system?.stop(),
      () => cluster?.stop(),
    );
  });

  it('counts sales per seller and failed authentications on the cluster, as on a single Redis', async () => {
    const seller = await createSeller(client, 'Cluster rate');
    await fundSeller(client, seller, 100_000);
    const answers = await Promise.all(
      Array.from({ length: 12 }, () =>
        client.post('/api/charge-sales', {
          token: seller.apiKey,
          body: { seller_id: seller.id, phone_number: '09121234567', amount: 1000 },
        }),
      ),
    );
    const statuses = answers.map((a) => a.status).sort();
    expect(statuses.filter((s) => s === 202).length).toBeGreaterThanOrEqual(SALES_A_SECOND);
    expect(statuses.filter((s) => s === 202).length).toBeLessThanOrEqual(2 * SALES_A_SECOND);
    expect(statuses.filter((s) => s !== 202 && s !== 429)).toEqual([]);

    for (let i = 0; i < AUTH_FAILURES; i++)
      expect((await client.get('/api/sellers', { token: `cs_no_${i}` })).status).toBe(401);
    expect((await client.get('/api/sellers', { token: 'cs_no_more' })).status).toBe(429);
    expect((await client.get('/api/sellers', { token: ADMIN_TOKEN })).status).toBe(429);

    // The counters live on the cluster's masters, none on the single Redis of the test run.
    const prefix = system.env.REDIS_PREFIX as string;
    const held: string[] = [];
    for (const port of await cluster.masters()) held.push(...(await keysOn(cluster, port, `${prefix}:auth-*`)));
    expect(held.sort()).toEqual([`${prefix}:auth-failures:127.0.0.1`, `${prefix}:auth-refused:127.0.0.1`]);
    const single = new Redis(inject('redisUrl'), { lazyConnect: true, maxRetriesPerRequest: 1 });
    try {
      expect(await single.keys(`${prefix}:*`)).toEqual([]);
    } finally {
      single.disconnect();
    }
  });
});
