import { expect } from 'vitest';
import { createSeller, inParallel, type TestSeller, waitForJob } from './factories.ts';
import type { Client } from './http.ts';
import { ADMIN_TOKEN } from './system.ts';

/**
 * The required scenario over HTTP, against whatever system `client` reaches: 2 sellers, 10
 * approved credit requests of 1,000,000, 1,000 sales of 5,000 from 32 clients. Each seller ends at
 * 2,500,000 and reconciles, with 505 ledger rows each (1,010 in all). Returns its timings.
 */
export async function runRequiredScenario(client: Client): Promise<{ wallSeconds: number; salesSeconds: number }> {
  const started = performance.now();
  const sellers = [await createSeller(client, 'North'), await createSeller(client, 'South')];

  const requests = await inParallel(
    Array.from({ length: 10 }, (_, i) => sellers[i % 2] as TestSeller),
    10,
    async (seller) => {
      const res = await client.post('/api/credit-requests', {
        token: seller.apiKey,
        body: { seller: seller.id, amount: 1_000_000 },
      });
      expect(res.status).toBe(201);
      return res.body.id as string;
    },
  );
  const approvals = await inParallel(requests, 10, async (id) => {
    const res = await client.post(`/api/credit-requests/${id}/process`, {
      token: ADMIN_TOKEN,
      body: { action: 'approve' },
    });
    expect(res.status).toBe(202);
    return res.body.job_id as string;
  });
  for (const job of approvals) expect((await waitForJob(client, job)).status).toBe('succeeded');

  const salesStarted = performance.now();
  const sales = Array.from({ length: 1000 }, (_, i) => ({ seller: sellers[i % 2] as TestSeller, i }));
  const jobIds = await inParallel(sales, 32, async ({ seller, i }) => {
    const res = await client.post('/api/charge-sales', {
      token: seller.apiKey,
      body: { seller_id: seller.id, phone_number: `0912${String(i).padStart(7, '0')}`, amount: 5000 },
    });
    expect(res.status).toBe(202);
    return res.body.job_id as string;
  });
  const outcomes = await inParallel(jobIds, 32, (id) => waitForJob(client, id));
  const salesSeconds = (performance.now() - salesStarted) / 1000;
  const wallSeconds = (performance.now() - started) / 1000;

  expect(outcomes.filter((o) => o.status === 'succeeded')).toHaveLength(1000);
  for (const seller of sellers) {
    const balance = await client.get(`/api/sellers/${seller.id}/balance`, { token: seller.apiKey });
    expect(balance.body.credit_balance).toBe('2500000');
    const check = await client.get(`/api/sellers/${seller.id}/reconcile`, { token: seller.apiKey });
    expect(check.body).toMatchObject({
      current_balance: '2500000',
      calculated_from_transactions: '2500000',
      is_reconciled: true,
      difference: '0',
      total_transactions: 505,
    });
  }
  let ledgerRows = 0;
  for (const seller of sellers) {
    let cursor: string | null = null;
    do {
      const page: { body: { items: unknown[]; next_cursor: string | null } } = await client.get(
        `/api/transactions?seller_id=${seller.id}&limit=500${cursor ? `&cursor=${cursor}` : ''}`,
        { token: ADMIN_TOKEN },
      );
      ledgerRows += page.body.items.length;
      cursor = page.body.next_cursor;
    } while (cursor);
  }
  expect(ledgerRows).toBe(1010);
  return { wallSeconds, salesSeconds };
}

/** The scenario's timings as one line, e.g. for the required scenario's console output. */
export function describeScenario(
  label: string,
  { wallSeconds, salesSeconds }: { wallSeconds: number; salesSeconds: number },
) {
  return `${label}: wall ${wallSeconds.toFixed(2)} s; 1,000 sales submitted and committed in ${salesSeconds.toFixed(2)} s = ${(1000 / salesSeconds).toFixed(0)} sales/s`;
}
