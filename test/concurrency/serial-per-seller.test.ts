import { afterAll, beforeAll, describe, it } from 'vitest';
import { runSerialPerSeller } from '../support/concurrency.ts';
import { testSql } from '../support/db.ts';
import { Client } from '../support/http.ts';
import { System } from '../support/system.ts';

const PARTITIONS = 4;

describe('one seller is served by one transaction at a time, with three worker processes', () => {
  let system: System;
  let client: Client;
  const sql = testSql();

  beforeAll(async () => {
    // Few partitions for many sellers, and small batches: many transactions, each partition
    // shared by several sellers, and every worker process busy.
    system = await System.start({ workers: 3, env: { PARTITIONS: String(PARTITIONS), BATCH_SIZE: '8' } });
    client = new Client(system.baseUrl);
  });
  afterAll(async () => {
    await system?.stop();
    await sql.end();
  });

  it('20 sellers on 4 partitions, 800 sales at once: no two transactions of one seller ever overlap, and sequential sales commit in submission order', async () => {
    await runSerialPerSeller(client, sql, {
      sellers: 20,
      sequentialSellers: 4,
      sequentialSales: 40,
      floodSales: 640,
      clients: 40,
      partitions: PARTITIONS,
      redisUrl: system.env.REDIS_URL as string,
      redisPrefix: system.env.REDIS_PREFIX as string,
      log: (line) => console.log(`serial per seller: ${line}`),
    });
  });
});
