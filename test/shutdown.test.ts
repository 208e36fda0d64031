import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testSql } from './support/db.ts';
import { createSeller, fundSeller, inParallel, type TestSeller, waitForJob } from './support/factories.ts';
import { Client } from './support/http.ts';
import { ADMIN_TOKEN, System } from './support/system.ts';

describe('graceful shutdown', () => {
  let system: System;
  let client: Client;

  beforeAll(async () => {
    system = await System.start({ workers: 2 });
    client = new Client(system.baseUrl);
  });
  afterAll(() => system?.stop());

  it('a worker told SIGTERM mid-load finishes its batch and exits 0; every job ends once', async () => {
    const sellers = await Promise.all(Array.from({ length: 8 }, () => createSeller(client)));
    for (const seller of sellers) await fundSeller(client, seller, 1_000_000);
    const sales = Array.from({ length: 400 }, (_, i) => sellers[i % sellers.length] as TestSeller);
    let stopped: Promise<number | null> | undefined;
    const jobIds = await inParallel(sales, 16, async (seller, i) => {
      if (i === 150) stopped = system.stopWorker(0, 'SIGTERM');
      const res = await client.post('/api/charge-sales', {
        token: seller.apiKey,
        body: { seller_id: seller.id, phone_number: '09121234567', amount: 1000 },
      });
      expect(res.status).toBe(202);
      return res.body.job_id as string;
    });
    expect(await stopped).toBe(0);
    const outcomes = await inParallel(jobIds, 16, (id) => waitForJob(client, id));
    expect(outcomes.every((o) => o.status === 'succeeded')).toBe(true);

    const sql = testSql();
    try {
      const [ledger] = await sql`select count(*)::int as rows, count(distinct job_id)::int as jobs
                                 from transactions where job_id = any(${jobIds}::uuid[])`;
      expect(ledger).toEqual({ rows: 400, jobs: 400 });
    } finally {
      await sql.end();
    }
    for (const seller of sellers) {
      const check = await client.get(`/api/sellers/${seller.id}/reconcile`, { token: ADMIN_TOKEN });
      expect(check.body.is_reconciled).toBe(true);
      expect(check.body.current_balance).toBe('950000');
    }
  });

  it('the API told SIGTERM stops accepting connections and exits 0', async () => {
    expect(await system.stopApi('SIGTERM')).toBe(0);
    await expect(fetch(`${system.baseUrl}/healthz`)).rejects.toThrow();
  });
});
