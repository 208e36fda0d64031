import { partitionOf, partitionQueueName } from '@cs/queue';
import { Queue, UnrecoverableError, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testSql } from '../support/db.ts';
import { createSeller, waitForJob } from '../support/factories.ts';
import { Client } from '../support/http.ts';
import { ADMIN_TOKEN, System } from '../support/system.ts';

describe('a job the queue gave up on while PostgreSQL still has it unfinished', () => {
  let system: System;
  let client: Client;

  beforeAll(async () => {
    // No worker yet: the test fails the job in BullMQ itself before any worker may apply it.
    system = await System.start({ workers: 0 });
    client = new Client(system.baseUrl);
  });
  afterAll(() => system?.stop());

  it('is put back by the workers and still reaches a final state, applied once', async () => {
    const seller = await createSeller(client);
    const sale = await client.post('/api/charge-sales', {
      token: seller.apiKey,
      body: { seller_id: seller.id, phone_number: '09121234567', amount: 5000 },
    });
    expect(sale.status).toBe(202);
    const jobId: string = sale.body.job_id;

    const prefix = String(system.env.REDIS_PREFIX);
    const name = partitionQueueName(partitionOf(seller.id, 16));
    const connection = new Redis(String(system.env.REDIS_URL), { maxRetriesPerRequest: null });
    const queue = new Queue(name, { connection, prefix });
    const givingUp = new Worker(
      name,
      async () => {
        throw new UnrecoverableError('gave up');
      },
      { connection, prefix },
    );
    try {
      for (let i = 0; i < 100 && (await queue.getJobState(jobId)) !== 'failed'; i++) {
        await new Promise((r) => setTimeout(r, 100));
      }
      expect(await queue.getJobState(jobId)).toBe('failed');
    } finally {
      await givingUp.close();
    }

    system.startWorker();
    // The job is older than the requeue threshold (10 s) within a few checks (every 5 s).
    const job = await waitForJob(client, jobId, ADMIN_TOKEN, 45_000);
    expect(job.status).toBe('rejected');
    expect(job.error).toMatchObject({ code: 'insufficient_balance', shortage: '5000' });
    expect(await queue.getJobState(jobId)).toBe('completed');

    const sql = testSql();
    try {
      const [row] = await sql`select count(*)::int as n from transactions where job_id = ${jobId}`;
      expect(row?.n).toBe(0);
    } finally {
      await sql.end();
      await queue.close();
      await connection.quit();
    }
  });
});
