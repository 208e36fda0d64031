import { expect } from 'vitest';
import type { Client } from '../support/http.ts';
import { ADMIN_TOKEN } from '../support/system.ts';

export interface ReconcileAnswer {
  seller_id: string;
  current_balance: string;
  calculated_from_transactions: string;
  is_reconciled: boolean;
  difference: string;
  total_transactions: number;
  chain_head: string | null;
  chain_broken_at: string | null;
}

export async function reconcileOf(client: Client, sellerId: string): Promise<ReconcileAnswer> {
  const res = await client.get<ReconcileAnswer>(`/api/sellers/${sellerId}/reconcile`, { token: ADMIN_TOKEN });
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  return res.body;
}
