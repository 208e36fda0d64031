import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type CreditAction,
  expectOneTransition,
  expectReconciled,
  expectUnbrokenChain,
  ledgerOf,
  raceCreditRequest,
  requestCredit,
  waitForJobsFinal,
} from '../support/concurrency.ts';
import { testSql } from '../support/db.ts';
import { balanceOf, createSeller, fundSeller, type TestSeller } from '../support/factories.ts';
import { Client } from '../support/http.ts';
import { System } from '../support/system.ts';

describe('one credit request processed many times at once, over three worker processes', () => {
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

  it('20 approvals and rejections at once: the request ends approved or rejected, credited at most once', async () => {
    const seller = await createSeller(client, 'Race');
    await fundSeller(client, seller, 10_000);
    const requestId = await requestCredit(client, seller, 70_000);
    const actions = Array.from({ length: 20 }, (_, i): CreditAction => (i % 2 === 0 ? 'approve' : 'reject'));
    const { winner, queued, refusedAtOnce } = await raceCreditRequest(client, sql, requestId, actions);

    await expectOneTransition(client, sql, seller.id, requestId, winner);
    const expected = winner === 'approve' ? 80_000n : 10_000n;
    expect(await balanceOf(client, seller.id)).toBe(expected);
    const ledger = await ledgerOf(sql, seller.id);
    expect(ledger.filter((r) => r.type === 'credit_increase')).toHaveLength(winner === 'approve' ? 2 : 1);
    expect(expectUnbrokenChain(ledger)).toBe(expected);
    await expectReconciled(client, seller.id, expected);
    console.log(`credit race: ${winner} won; ${queued} jobs queued, ${refusedAtOnce} refused at once with 409`);
  });

  it('20 approvals at once: credited exactly once', async () => {
    const seller = await createSeller(client, 'Race approvals');
    const requestId = await requestCredit(client, seller, 123_456);
    const actions = Array.from({ length: 20 }, (): CreditAction => 'approve');
    const { winner } = await raceCreditRequest(client, sql, requestId, actions);
    expect(winner).toBe('approve');
    await expectOneTransition(client, sql, seller.id, requestId, 'approve');
    expect(await balanceOf(client, seller.id)).toBe(123_456n);
    await expectReconciled(client, seller.id, 123_456n);
  });

  it('ten requests of three sellers, each raced 20 times at once while the sellers sell: each moves its balance once', async () => {
    const sellers = await Promise.all([0, 1, 2].map((i) => createSeller(client, `Race ${i}`)));
    const requests = await Promise.all(
      Array.from({ length: 10 }, async (_, i) => {
        const seller = sellers[i % 3] as TestSeller;
        return { seller, amount: (i + 1) * 1000, id: await requestCredit(client, seller, (i + 1) * 1000) };
      }),
    );
    // Sales on the same sellers meanwhile: each must see either side of every credit, never half of one.
    const sales = Promise.all(
      Array.from({ length: 60 }, (_, i) => {
        const seller = sellers[i % 3] as TestSeller;
        return client.post('/api/charge-sales', {
          token: seller.apiKey,
          body: { seller_id: seller.id, phone_number: '09120000001', amount: 500 },
        });
      }),
    );
    const results = await Promise.all(
      requests.map((r) =>
        raceCreditRequest(
          client,
          sql,
          r.id,
          Array.from({ length: 20 }, (_, k): CreditAction => ((k + r.amount / 1000) % 3 === 0 ? 'reject' : 'approve')),
        ),
      ),
    );
    const saleAnswers = await sales;
    for (const answer of saleAnswers) expect(answer.status).toBe(202);
    const saleJobs = await waitForJobsFinal(
      sql,
      saleAnswers.map((a) => a.body.job_id),
    );

    for (const [s, seller] of sellers.entries()) {
      let expected = 0n;
      for (const [i, request] of requests.entries()) {
        if (request.seller !== seller) continue;
        const winner = results[i]?.winner ?? 'reject';
        await expectOneTransition(client, sql, seller.id, request.id, winner);
        if (winner === 'approve') expected += BigInt(request.amount);
      }
      for (const job of saleJobs.values()) {
        if (job.seller_id === seller.id && job.status === 'succeeded') expected -= 500n;
      }
      expect(await balanceOf(client, seller.id), `seller ${s}`).toBe(expected);
      expect(expectUnbrokenChain(await ledgerOf(sql, seller.id))).toBe(expected);
      await expectReconciled(client, seller.id, expected);
    }
    const approved = results.filter((r) => r.winner === 'approve').length;
    const queued = results.reduce((n, r) => n + r.queued, 0);
    // The race reached the workers: some requests had several jobs competing under the row lock.
    expect(results.some((r) => r.queued >= 2)).toBe(true);
    console.log(
      `credit races: ${approved} approved, ${results.length - approved} rejected; ${queued} of 200 attempts reached a worker`,
    );
  });
});
