import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { migrateDatabase } from '@cs/db';
import { expect, inject } from 'vitest';
import { testSql } from '../support/db.ts';
import type { Client } from '../support/http.ts';
import { ADMIN_TOKEN, type System } from '../support/system.ts';

/**
 * A database of its own, migrated, with the application role's grants, beside the run's test
 * database. These tests leave ledgers rewritten by hand (or, if the product fails them, jobs that
 * never finish); elsewhere in the run, checks over every seller or every job (`npm run reconcile`,
 * `sellers_unreconciled`, waiting for no job to be unfinished) must not see them.
 */
export async function isolatedDatabase(name: string) {
  const owner = new URL(inject('ownerDatabaseUrl'));
  owner.pathname = `${owner.pathname}_${name}`;
  const application = new URL(inject('databaseUrl'));
  application.pathname = owner.pathname;
  await migrateDatabase(owner.toString(), { applicationUrl: application.toString() });
  return {
    /** The tables' owner: for reading and for going around the application. */
    ownerUrl: owner.toString(),
    /** What the API and workers connect with. */
    applicationUrl: application.toString(),
    async drop(): Promise<void> {
      const admin = testSql();
      try {
        await admin.unsafe(`drop database if exists "${owner.pathname.slice(1)}" with (force)`);
      } finally {
        await admin.end();
      }
    },
  };
}

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
