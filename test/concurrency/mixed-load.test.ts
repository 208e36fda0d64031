import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  expectReconciled,
  expectUnbrokenChain,
  ledgerOf,
  msSince,
  phoneFor,
  runMixedLoad,
  runSeed,
  StatusTally,
  seededRandom,
  sell,
  verifyMixedLoad,
  waitForJobsFinal,
} from '../support/concurrency.ts';
import { testSql } from '../support/db.ts';
import { createSeller, fundSeller, inParallel, type TestSeller } from '../support/factories.ts';
import { Client } from '../support/http.ts';
import { System } from '../support/system.ts';

describe('mixed load from many clients over three worker processes', () => {
  let system: System;
  let client: Client;
  const sql = testSql();

  beforeAll(async () => {
    system = await System.start({ workers: 3 });
    client = new Client(system.baseUrl);
  });
  afterAll(async () => {
    await system?.stop();
    await sql.end();
  });

  it('2,000 sales from 50 clients amid credit approvals: every job final, every seller reconciles to what the clients were told', async () => {
    const seed = runSeed();
    const log = (line: string) => console.log(`mixed load (seed ${seed}): ${line}`);
    const load = await runMixedLoad(client, {
      sales: 2000,
      clients: 50,
      sellers: 5,
      creditsPer100Sales: 5,
      random: seededRandom(seed),
      log,
    });
    const outcome = await verifyMixedLoad(client, sql, load);

    // The poorest sellers ran out on purpose; the richest never did.
    expect(outcome.refusedBySeller.at(-1)).toBeGreaterThan(0);
    expect(outcome.refusedBySeller[0]).toBe(0);
    expect(outcome.succeeded).toBeGreaterThan(0);

    log(
      `${load.sales.length} sales (${outcome.succeeded} sold, ${outcome.refused} refused, per seller ${outcome.refusedBySeller.join('/')}) ` +
        `and ${load.credits.length} credit processings; accepted in ${load.submittedMs} ms, all final in ${outcome.finishedMs} ms ` +
        `= ${((load.sales.length / outcome.finishedMs) * 1000).toFixed(0)} sales/s; answers ${load.tally}; ` +
        `balances ${outcome.balances.join(', ')}; ${load.observedBalances.length} balance reads, none negative; ` +
        `${outcome.transactions} seller-transactions, none overlapping`,
    );
  });

  it('800 sales for 40 sellers from 100 clients: every one accepted, none answered 5xx, every seller reconciles', async () => {
    // Many sellers per submission burst and per worker transaction: the shape in which the API's
    // inserts and the workers' seller locks meet most often.
    const sellers = await inParallel(
      Array.from({ length: 40 }, (_, i) => i),
      10,
      (i) => createSeller(client, `Wide ${i}`),
    );
    await inParallel(sellers, 10, (seller) => fundSeller(client, seller, 1_000_000));
    const tally = new StatusTally();
    const started = performance.now();
    const ids = await inParallel(
      Array.from({ length: 800 }, (_, i) => i),
      100,
      async (i) => {
        const res = tally.add(
          'POST /api/charge-sales',
          await sell(client, sellers[(i * 7) % 40] as TestSeller, 1000, phoneFor(i)),
        );
        return res.status === 202 ? (res.body.job_id as string) : undefined;
      },
    );
    expect(tally.serverErrors.slice(0, 3), `answers ${tally}`).toEqual([]);
    const accepted = ids.filter((id): id is string => id !== undefined);
    expect(accepted).toHaveLength(800);
    const jobs = await waitForJobsFinal(sql, accepted);
    const elapsedMs = msSince(started);
    expect([...jobs.values()].filter((j) => j.status !== 'succeeded')).toEqual([]);
    for (const seller of sellers) {
      expect(expectUnbrokenChain(await ledgerOf(sql, seller.id))).toBe(1_000_000n - 20n * 1000n);
      await expectReconciled(client, seller.id, 1_000_000n - 20n * 1000n);
    }
    console.log(
      `wide load: 800 sales for 40 sellers from 100 clients in ${elapsedMs} ms = ${((800 / elapsedMs) * 1000).toFixed(0)} sales/s; answers ${tally}`,
    );
  });
});
