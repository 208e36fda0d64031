import { randomUUID } from 'node:crypto';
import { expect } from 'vitest';
import type { Client } from './http.ts';
import { ADMIN_TOKEN } from './system.ts';

export interface TestSeller {
  id: string;
  apiKey: string;
  email: string;
}

export async function createSeller(client: Client, name = 'Seller'): Promise<TestSeller> {
  const email = `${randomUUID()}@sellers.test`;
  const res = await client.post('/api/sellers', {
    token: ADMIN_TOKEN,
    body: { name, email, phone: '09120000000' },
  });
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  return { id: res.body.id, apiKey: res.body.api_key, email };
}

/** Polls a job until it is final. */
export async function waitForJob(client: Client, jobId: string, token = ADMIN_TOKEN, timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const res = await client.get(`/api/jobs/${jobId}`, { token });
    if (['succeeded', 'rejected', 'failed'].includes(res.body?.status)) return res.body;
    if (Date.now() > deadline)
      throw new Error(`job ${jobId} not final after ${timeoutMs} ms: ${JSON.stringify(res.body)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Asks for credit as the seller and approves it as the admin; resolves when it is credited. */
export async function fundSeller(client: Client, seller: TestSeller, amount: number | string) {
  const request = await client.post('/api/credit-requests', {
    token: seller.apiKey,
    body: { seller: seller.id, amount },
  });
  expect(request.status, JSON.stringify(request.body)).toBe(201);
  const processed = await client.post(`/api/credit-requests/${request.body.id}/process`, {
    token: ADMIN_TOKEN,
    body: { action: 'approve' },
  });
  expect(processed.status).toBe(202);
  const job = await waitForJob(client, processed.body.job_id);
  expect(job.status).toBe('succeeded');
  return request.body.id as string;
}

export async function balanceOf(client: Client, sellerId: string): Promise<bigint> {
  const res = await client.get(`/api/sellers/${sellerId}/balance`, { token: ADMIN_TOKEN });
  expect(res.status).toBe(200);
  return BigInt(res.body.credit_balance);
}

/** Runs `task` over `items` with at most `concurrency` in flight; results in input order. */
export async function inParallel<T, R>(items: T[], concurrency: number, task: (item: T, index: number) => Promise<R>) {
  const results = new Array<R>(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(concurrency, items.length) }, async () => {
      while (next < items.length) {
        const index = next++;
        results[index] = await task(items[index] as T, index);
      }
    }),
  );
  return results;
}
