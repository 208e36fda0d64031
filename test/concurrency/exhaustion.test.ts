import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exhaustBalance } from '../support/concurrency.ts';
import { testSql } from '../support/db.ts';
import { Client } from '../support/http.ts';
import { System } from '../support/system.ts';

describe('concurrent sales exhaust a balance exactly, over three worker processes', () => {
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

  it('balance 50,000 and 10 concurrent sales of 10,000: exactly 5 sell, the balance ends at 0 with 5 sale rows', async () => {
    const started = performance.now();
    expect(await exhaustBalance(client, sql, { balance: 50_000n, amount: 10_000n, attempts: 10 })).toEqual({
      sold: 5,
      remaining: 0n,
    });
    console.log(`exhaustion 50,000 / 10 × 10,000: ${Math.round(performance.now() - started)} ms`);
  });

  const pairs = [
    { balance: 10_000, amount: 3_000, attempts: 8 },
    { balance: 1, amount: 1, attempts: 5 },
    { balance: 99_999, amount: 10_000, attempts: 15 },
    { balance: 7, amount: 2, attempts: 12 },
    { balance: 1_000_000, amount: 333_333, attempts: 10 },
    { balance: 5_000, amount: 10_000, attempts: 6 },
    { balance: 1_000_000_000_000, amount: 99_999_999_999, attempts: 20 },
    { balance: 250_000, amount: 1_000, attempts: 300 },
  ];
  const exhaust = ({ balance, amount, attempts }: (typeof pairs)[number]) =>
    exhaustBalance(client, sql, { balance: BigInt(balance), amount: BigInt(amount), attempts });

  it.each(pairs)(
    'balance $balance and $attempts concurrent sales of $amount: exactly floor(balance / amount) sell',
    async (pair) => {
      const { sold, remaining } = await exhaust(pair);
      expect(sold).toBe(Math.floor(pair.balance / pair.amount));
      expect(remaining).toBe(BigInt(pair.balance % pair.amount));
    },
  );

  it('every pair at once, on sellers spread over the partitions of all three workers', async () => {
    const started = performance.now();
    const outcomes = await Promise.all(pairs.map(exhaust));
    expect(outcomes.map((o) => o.sold)).toEqual(pairs.map((p) => Math.floor(p.balance / p.amount)));
    const total = pairs.reduce((n, p) => n + p.attempts, 0);
    console.log(
      `exhaustion, ${pairs.length} sellers at once, ${total} sales: ${Math.round(performance.now() - started)} ms`,
    );
  });
});
