import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { StatusTally } from '../support/concurrency.ts';
import { testSql } from '../support/db.ts';
import type { TestSeller } from '../support/factories.ts';
import type { Answer } from '../support/http.ts';
import { Client } from '../support/http.ts';
import { idempotencyRaces } from '../support/idempotency.ts';
import { ADMIN_TOKEN, System } from '../support/system.ts';

describe('Idempotency-Key under concurrency, over three worker processes', () => {
  let system: System;
  const sql = testSql();
  const tally = new StatusTally();
  let races: ReturnType<typeof idempotencyRaces>;

  beforeAll(async () => {
    system = await System.start({ workers: 3 });
    races = idempotencyRaces(new Client(system.baseUrl), sql, tally);
  });
  afterAll(async () => {
    await system?.stop();
    await sql.end();
    expect(tally.serverErrors).toEqual([]);
  });

  it('50 identical submissions at once with one key: one job, one sale, one ledger row (and again after it finished)', async () => {
    await races.oneKeyManyTimes('Idempotent', 50);
  });

  it('one key, 50 submissions of the same request spelt differently (amount as number or string, phone +98/98/09), some by the operator: one job', async () => {
    const { submit, fundedSeller, warm, expectSoldOnce, jobIdsOf } = races;
    const seller = await fundedSeller('Idempotent spellings');
    const key = randomUUID();
    const spellings = [
      { phone_number: '09121234567', amount: 4000 },
      { phone_number: '+989121234567', amount: '4000' },
      { phone_number: '989121234567', amount: 4000 },
      { phone_number: '09121234567', amount: '4000' },
    ];
    await warm(50);
    const answers = await Promise.all(
      Array.from({ length: 50 }, (_, i) =>
        submit(
          seller,
          key,
          spellings[i % spellings.length] as Record<string, unknown>,
          i % 5 === 0 ? ADMIN_TOKEN : seller.apiKey,
        ),
      ),
    );
    expect(answers.map((a) => a.status)).toEqual(Array(50).fill(202));
    const ids = jobIdsOf(answers);
    expect(ids.size).toBe(1);
    await expectSoldOnce(seller, [...ids][0], 4000n);
  });

  it('one key, two different requests racing 25 against 25: one wins and sells once, every other request is 422', async () => {
    const { submit, fundedSeller, warm, expectSoldOnce, jobIdsOf } = races;
    const seller = await fundedSeller('Idempotent conflict');
    const key = randomUUID();
    const first = { phone_number: '09121234567', amount: 4000 };
    const second = { phone_number: '09121234567', amount: 5000 };
    await warm(50);
    const answers = await Promise.all(
      Array.from({ length: 50 }, (_, i) => submit(seller, key, i % 2 === 0 ? first : second)),
    );
    const accepted = answers.filter((a) => a.status === 202);
    const refused = answers.filter((a) => a.status !== 202);
    for (const answer of refused) {
      expect(answer.status, JSON.stringify(answer.body)).toBe(422);
      expect(answer.body.code).toBe('idempotency_key_reused');
    }
    const ids = jobIdsOf(accepted);
    expect(ids.size).toBe(1);
    // Every accepted answer asked for the same thing: the winner's request. The other is all 422.
    const winnerAmount = answers.indexOf(accepted[0] as Answer) % 2 === 0 ? 4000n : 5000n;
    expect(accepted).toHaveLength(25);
    expect(refused).toHaveLength(25);
    for (const answer of refused) expect(answer.body.job_id).toBe([...ids][0]);
    await expectSoldOnce(seller, [...ids][0], winnerAmount);

    // Later, the same key with yet another request: still 422, still one sale.
    const late = await submit(seller, key, { phone_number: '09127654321', amount: 4000 });
    expect(late.status).toBe(422);
    await expectSoldOnce(seller, [...ids][0], winnerAmount);
  });

  it('keys belong to a seller: two sellers using one key at once each get their own job and sale', async () => {
    const { submit, fundedSeller, warm, expectSoldOnce, jobIdsOf } = races;
    const sellers = await Promise.all([fundedSeller('Key owner A'), fundedSeller('Key owner B')]);
    const key = randomUUID();
    await warm(40);
    const answers = await Promise.all(
      Array.from({ length: 40 }, (_, i) =>
        submit(sellers[i % 2] as TestSeller, key, { phone_number: '09121234567', amount: 3000 }),
      ),
    );
    expect(answers.map((a) => a.status)).toEqual(Array(40).fill(202));
    const perSeller = sellers.map((_, s) => jobIdsOf(answers.filter((_a, i) => i % 2 === s)));
    expect(perSeller.map((ids) => ids.size)).toEqual([1, 1]);
    const [a, b] = perSeller.map((ids) => [...ids][0]);
    expect(a).not.toBe(b);
    await expectSoldOnce(sellers[0] as TestSeller, a, 3000n);
    await expectSoldOnce(sellers[1] as TestSeller, b, 3000n);
  });
});
