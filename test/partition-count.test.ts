import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { partitionOf } from '@cs/queue';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  expectReconciled,
  expectUnbrokenChain,
  ledgerOf,
  phoneFor,
  sell,
  waitForJobsFinal,
} from './support/concurrency.ts';
import { isolatedDatabase, testSql } from './support/db.ts';
import { createSeller, fundSeller, type TestSeller } from './support/factories.ts';
import { Client } from './support/http.ts';
import { freePort, System } from './support/system.ts';

const BEFORE = 4;
const AFTER = 8;
const root = join(import.meta.dirname, '..');

/** Runs one process of the system to its exit: its code and what it wrote. */
function runToExit(system: System, entry: string, env: Record<string, string>) {
  return new Promise<{ code: number | null; output: string }>((resolve) => {
    const child = spawn(process.execPath, ['--import', 'tsx', join(root, entry)], {
      cwd: root,
      env: { ...system.env, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let output = '';
    child.stdout.on('data', (chunk) => (output += chunk));
    child.stderr.on('data', (chunk) => (output += chunk));
    const timer = setTimeout(() => child.kill('SIGKILL'), 30_000);
    child.once('exit', (code) => {
      clearTimeout(timer);
      resolve({ code, output });
    });
  });
}

describe('changing PARTITIONS: refused while jobs are open, then drain and restart', () => {
  let database: Awaited<ReturnType<typeof isolatedDatabase>>;
  let sql: ReturnType<typeof testSql>;
  let system: System | undefined;

  beforeAll(async () => {
    database = await isolatedDatabase('partition_count');
    sql = testSql(database.ownerUrl);
  });
  afterAll(async () => {
    await system?.stop();
    await sql?.end();
    await database?.drop();
  });

  it('keeps each seller in one partition: a process with another count refuses to start until every job is final', async () => {
    system = await System.start({
      workers: 1,
      databaseUrl: database.applicationUrl,
      env: { PARTITIONS: String(BEFORE) },
    });
    const client = new Client(system.baseUrl);
    const sellers: TestSeller[] = [];
    // Sellers of both kinds: whose partition stays under 8 (p8 = p4) and whose partition moves.
    while (
      sellers.filter((s) => partitionOf(s.id, AFTER) !== partitionOf(s.id, BEFORE)).length < 2 ||
      sellers.filter((s) => partitionOf(s.id, AFTER) === partitionOf(s.id, BEFORE)).length < 1
    ) {
      sellers.push(await createSeller(client, `Seller ${sellers.length}`));
    }
    for (const seller of sellers) await fundSeller(client, seller, 1_000_000);
    // With the worker stopped, the sales stay open, recorded under 4 partitions.
    await system.stopWorker(0);
    const firstSales = (
      await Promise.all(sellers.flatMap((s) => [0, 1, 2].map((i) => sell(client, s, 10_000, phoneFor(i)))))
    ).map((answer) => {
      expect(answer.status).toBe(202);
      return answer.body.job_id as string;
    });

    const refusedWorker = await runToExit(system, 'apps/worker/src/index.ts', { PARTITIONS: String(AFTER) });
    expect(refusedWorker.code).toBe(1);
    expect(refusedWorker.output).toMatch(
      /worker: PARTITIONS is 8, but [1-9]\d* seller\(s\) have open jobs queued under another partition count/,
    );
    const refusedApi = await runToExit(system, 'apps/api/src/index.ts', {
      PARTITIONS: String(AFTER),
      PORT: String(await freePort()),
    });
    expect(refusedApi.code).toBe(1);
    expect(refusedApi.output).toMatch(/api: PARTITIONS is 8, but/);
    const open = await sql`select count(*)::int as n from jobs where finished_at is null`;
    expect(open[0]?.n).toBe(firstSales.length);

    // The procedure: drain under the old count, stop everything, start under the new one.
    system.startWorker();
    await waitForJobsFinal(sql, firstSales);
    await system.stop();
    system = await System.start({
      workers: 1,
      databaseUrl: database.applicationUrl,
      env: { PARTITIONS: String(AFTER) },
    });
    const after = new Client(system.baseUrl);
    const laterSales = (
      await Promise.all(sellers.flatMap((s) => [3, 4].map((i) => sell(after, s, 10_000, phoneFor(i)))))
    ).map((answer) => answer.body.job_id as string);
    await waitForJobsFinal(sql, laterSales);

    const jobs = await sql<{ id: string; seller_id: string; partition: number; status: string }[]>`
      select id, seller_id, partition, status from jobs where id = any(${[...firstSales, ...laterSales]}::uuid[])`;
    expect(jobs.every((j) => j.status === 'succeeded')).toBe(true);
    const later = new Set(laterSales);
    for (const job of jobs) {
      expect(job.partition).toBe(partitionOf(job.seller_id, later.has(job.id) ? AFTER : BEFORE));
    }
    for (const seller of sellers) {
      const ledger = await ledgerOf(sql, seller.id);
      // Each seller's sales in the order they were applied, one chain across the change.
      expect(expectUnbrokenChain(ledger)).toBe(1_000_000n - 5n * 10_000n);
      await expectReconciled(after, seller.id, 1_000_000n - 5n * 10_000n);
    }
  });
});
