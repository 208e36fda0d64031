import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type CreditAction,
  exhaustBalance,
  expectOneTransition,
  expectReconciled,
  expectUnbrokenChain,
  ledgerOf,
  msSince,
  phoneFor,
  raceCreditRequest,
  requestCredit,
  runMixedLoad,
  runSeed,
  runSerialPerSeller,
  StatusTally,
  seededRandom,
  sell,
  verifyMixedLoad,
  waitForJobsFinal,
} from '../support/concurrency.ts';
import { testSql } from '../support/db.ts';
import { balanceOf, createSeller, fundSeller, inParallel, type TestSeller } from '../support/factories.ts';
import { Client } from '../support/http.ts';
import { System } from '../support/system.ts';

/**
 * The concurrency proofs of test/concurrency at scale. STRESS_SALES sets the mixed load's sales
 * (default 5,000), CONCURRENCY_SEED replays a run. Every wait is bounded; progress is printed.
 */
const SALES = Number(process.env.STRESS_SALES) || 5000;
const log = (line: string) => console.log(`[concurrency stress] ${line}`);

describe('concurrency at scale, over three worker processes', () => {
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

  it(`mixed load: ${SALES} sales from 150 clients for 5 sellers amid credit approvals, every seller reconciles`, async () => {
    const seed = runSeed();
    const load = await runMixedLoad(client, {
      sales: SALES,
      clients: 150,
      sellers: 5,
      creditsPer100Sales: 5,
      random: seededRandom(seed),
      log: (line) => log(`mixed (seed ${seed}): ${line}`),
    });
    const outcome = await verifyMixedLoad(client, sql, load, 600_000);
    expect(outcome.refusedBySeller.at(-1)).toBeGreaterThan(0);
    expect(outcome.refusedBySeller[0]).toBe(0);
    log(
      `mixed (seed ${seed}): ${load.sales.length} sales (${outcome.succeeded} sold, ${outcome.refused} refused) and ` +
        `${load.credits.length} credit processings, all final in ${outcome.finishedMs} ms = ` +
        `${((load.sales.length / outcome.finishedMs) * 1000).toFixed(0)} sales/s; answers ${load.tally}; ` +
        `${outcome.transactions} seller-transactions, none overlapping`,
    );
  });

  it('wide load: 4,000 sales for 80 sellers from 200 clients, none answered 5xx, every seller reconciles', async () => {
    const sellers = await inParallel(
      Array.from({ length: 80 }, (_, i) => i),
      10,
      (i) => createSeller(client, `Wide ${i}`),
    );
    await inParallel(sellers, 10, (seller) => fundSeller(client, seller, 1_000_000));
    const tally = new StatusTally();
    const started = performance.now();
    let done = 0;
    const ids = await inParallel(
      Array.from({ length: 4000 }, (_, i) => i),
      200,
      async (i) => {
        const seller = sellers[(i * 7) % 80] as TestSeller;
        const res = tally.add('POST /api/charge-sales', await sell(client, seller, 1000, phoneFor(i)));
        if (++done % 1000 === 0) log(`wide: ${done} answered after ${msSince(started)} ms (${tally})`);
        return res.status === 202 ? (res.body.job_id as string) : undefined;
      },
    );
    expect(tally.serverErrors.slice(0, 3), `answers ${tally}`).toEqual([]);
    const accepted = ids.filter((id): id is string => id !== undefined);
    expect(accepted).toHaveLength(4000);
    const jobs = await waitForJobsFinal(sql, accepted, 300_000);
    expect([...jobs.values()].filter((j) => j.status !== 'succeeded')).toEqual([]);
    for (const seller of sellers) {
      expect(expectUnbrokenChain(await ledgerOf(sql, seller.id))).toBe(1_000_000n - 50n * 1000n);
      await expectReconciled(client, seller.id, 1_000_000n - 50n * 1000n);
    }
    const ms = msSince(started);
    log(`wide: 4000 sales for 80 sellers in ${ms} ms = ${((4000 / ms) * 1000).toFixed(0)} sales/s; answers ${tally}`);
  });

  it('exhaustion: 30 sellers at once, each with a random balance and many more sales than it can pay', async () => {
    const random = seededRandom(runSeed());
    const cases = Array.from({ length: 30 }, () => {
      const amount = BigInt(random.int(1, 100_000));
      const canPay = random.int(0, 40);
      const balance = amount * BigInt(canPay) + BigInt(random.int(0, Number(amount) - 1));
      return { balance, amount, attempts: canPay + random.int(1, 60) };
    }).filter((c) => c.balance > 0n);
    const started = performance.now();
    const outcomes = await Promise.all(cases.map((c) => exhaustBalance(client, sql, c)));
    expect(outcomes.map((o) => BigInt(o.sold))).toEqual(cases.map((c) => c.balance / c.amount));
    const total = cases.reduce((n, c) => n + c.attempts, 0);
    log(`exhaustion: ${cases.length} sellers, ${total} sales at once, ${msSince(started)} ms`);
  });

  it('credit races: 50 requests of 10 sellers, each processed 20 times at once: every one transitions once', async () => {
    const sellers = await inParallel(
      Array.from({ length: 10 }, (_, i) => i),
      10,
      (i) => createSeller(client, `Race ${i}`),
    );
    const requests = await inParallel(
      Array.from({ length: 50 }, (_, i) => i),
      10,
      async (i) => {
        const seller = sellers[i % 10] as TestSeller;
        return { seller, amount: (i + 1) * 100, id: await requestCredit(client, seller, (i + 1) * 100) };
      },
    );
    const started = performance.now();
    const results = await Promise.all(
      requests.map((r, i) =>
        raceCreditRequest(
          client,
          sql,
          r.id,
          Array.from({ length: 20 }, (_, k): CreditAction => ((k + i) % 2 === 0 ? 'approve' : 'reject')),
        ),
      ),
    );
    for (const seller of sellers) {
      let expected = 0n;
      for (const [i, request] of requests.entries()) {
        if (request.seller !== seller) continue;
        const winner = results[i]?.winner ?? 'reject';
        await expectOneTransition(client, sql, seller.id, request.id, winner);
        if (winner === 'approve') expected += BigInt(request.amount);
      }
      expect(await balanceOf(client, seller.id)).toBe(expected);
      await expectReconciled(client, seller.id, expected);
    }
    const queued = results.reduce((n, r) => n + r.queued, 0);
    log(
      `credit races: 50 requests × 20 attempts in ${msSince(started)} ms; ${queued} attempts reached a worker; ` +
        `${results.filter((r) => r.winner === 'approve').length} approved`,
    );
  });

  it('idempotency: 20 keys of 5 sellers, each submitted 25 times at once: 20 jobs, 20 sales', async () => {
    const sellers = await inParallel(
      Array.from({ length: 5 }, (_, i) => i),
      5,
      async (i) => {
        const seller = await createSeller(client, `Keys ${i}`);
        await fundSeller(client, seller, 1_000_000);
        return seller;
      },
    );
    const keys = Array.from({ length: 20 }, (_, i) => ({ seller: sellers[i % 5] as TestSeller, key: randomUUID() }));
    const tally = new StatusTally();
    const answers = await Promise.all(
      keys.flatMap(({ seller, key }, k) =>
        Array.from({ length: 25 }, async () =>
          tally.add(
            'POST /api/charge-sales',
            await sell(client, seller, 1000 + k, phoneFor(k), { 'idempotency-key': key }),
          ),
        ),
      ),
    );
    expect(tally.serverErrors).toEqual([]);
    expect(answers.every((a) => a.status === 202)).toBe(true);
    const jobIds = [...new Set(answers.map((a) => a.body.job_id as string))];
    expect(jobIds).toHaveLength(20);
    const jobs = await waitForJobsFinal(sql, jobIds);
    expect([...jobs.values()].every((j) => j.status === 'succeeded')).toBe(true);
    for (const [s, seller] of sellers.entries()) {
      const sales = (await ledgerOf(sql, seller.id)).filter((r) => r.type === 'charge_sale');
      expect(sales).toHaveLength(4);
      const spent = keys.reduce((sum, _key, i) => (i % 5 === s ? sum + BigInt(1000 + i) : sum), 0n);
      await expectReconciled(client, seller.id, 1_000_000n - spent);
    }
    log(`idempotency: 500 submissions of 20 keys → ${jobIds.length} jobs; answers ${tally}`);
  });
});

describe('one transaction per seller at a time, at scale: 50 sellers on 4 partitions', () => {
  let system: System;
  let client: Client;
  const sql = testSql();

  beforeAll(async () => {
    system = await System.start({ workers: 3, env: { PARTITIONS: '4', BATCH_SIZE: '8' } });
    client = new Client(system.baseUrl);
  });
  afterAll(async () => {
    await system?.stop();
    await sql.end();
  });

  it('3,000 flooded sales from 100 clients and 6 sellers selling one sale at a time: no overlap, submission order kept', async () => {
    await runSerialPerSeller(client, sql, {
      sellers: 50,
      sequentialSellers: 6,
      sequentialSales: 100,
      floodSales: 3000,
      clients: 100,
      partitions: 4,
      redisUrl: system.env.REDIS_URL as string,
      redisPrefix: system.env.REDIS_PREFIX as string,
      log: (line) => log(`serial: ${line}`),
    });
  });
});
