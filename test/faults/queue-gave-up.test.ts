import { partitionOf, partitionQueueName } from '@cs/queue';
import { Queue, UnrecoverableError, Worker } from 'bullmq';
import { Redis } from 'ioredis';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testSql } from '../support/db.ts';
import { balanceOf, createSeller, fundSeller, waitForJob } from '../support/factories.ts';
import { Client } from '../support/http.ts';
import { ADMIN_TOKEN, System } from '../support/system.ts';

describe('a job the queue gave up on while PostgreSQL still has it unfinished', () => {
  let system: System;
  let client: Client;

  beforeAll(async () => {
    // One worker, to fund the seller; it is stopped before the sale, so that the test fails the
    // job in BullMQ itself before any worker may apply it.
    system = await System.start({ workers: 1 });
    client = new Client(system.baseUrl);
  });
  afterAll(() => system?.stop());

  it('is put back by the workers and still reaches a final state, applied once', async () => {
    const seller = await createSeller(client);
    await fundSeller(client, seller, 20_000);
    expect(await system.stopWorker(0, 'SIGTERM')).toBe(0);

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
    const sql = testSql();
    try {
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
      // BullMQ gave up and nothing was applied: the job is open in PostgreSQL, the money untouched.
      const [open] = await sql<{ status: string }[]>`select status from jobs where id = ${jobId}`;
      expect(open?.status).toBe('queued');
      expect(await balanceOf(client, seller.id)).toBe(20_000n);

      system.startWorker();
      // The job is older than the requeue threshold (10 s) within a few checks (every 5 s).
      const job = await waitForJob(client, jobId, ADMIN_TOKEN, 45_000);
      expect(job, system.recentLogs()).toMatchObject({ status: 'succeeded', error: null });
      expect(job.result).toMatchObject({ new_balance: '15000' });
      expect(await queue.getJobState(jobId)).toBe('completed');

      // Applied exactly once: one ledger row for the job, for its amount, and the balance moved
      // by it once (never: 20,000; twice: 10,000).
      const rows = await sql<{ type: string; amount: bigint; balance_after: bigint }[]>`
        select type, amount, balance_after from transactions where job_id = ${jobId}`;
      expect(rows).toEqual([{ type: 'charge_sale', amount: -5000n, balance_after: 15_000n }]);
      const [{ n: ledgerRows } = { n: 0 }] = await sql<{ n: number }[]>`
        select count(*)::int as n from transactions where seller_id = ${seller.id}`;
      expect(ledgerRows, 'the funding credit and the one sale').toBe(2);
      expect(await balanceOf(client, seller.id)).toBe(15_000n);
      const check = await client.get(`/api/sellers/${seller.id}/reconcile`, { token: ADMIN_TOKEN });
      expect(check.body).toMatchObject({ is_reconciled: true, current_balance: '15000', difference: '0' });
    } finally {
      await sql.end();
      await queue.close();
      await connection.quit();
    }
  });
});
