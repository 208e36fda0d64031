import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { expect } from 'vitest';
import type { Client } from '../support/http.ts';
import { ADMIN_TOKEN, type System } from '../support/system.ts';

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

/** `npm run reconcile` against the system's database, with its ledger key. */
export function runReconcileScript(system: System, args: string[] = []) {
  const run = spawnSync(
    process.execPath,
    ['--import', 'tsx', join(import.meta.dirname, '..', '..', 'scripts', 'reconcile.ts'), ...args],
    {
      env: { ...process.env, DATABASE_URL: system.env.DATABASE_URL, LEDGER_HMAC_KEY: system.env.LEDGER_HMAC_KEY },
      encoding: 'utf8',
      timeout: 60_000,
    },
  );
  return { status: run.status, stdout: run.stdout, stderr: run.stderr };
}
