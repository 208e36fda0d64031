import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { overlappingSpans, type Random, seededRandom, transactionSpans } from '../support/concurrency.ts';
import { testSql } from '../support/db.ts';
import type { TestSeller } from '../support/factories.ts';
import {
  boundedRequest,
  cleanUp,
  fundAll,
  SaleTraffic,
  sellersOnEveryPartition,
  superviseWorkers,
  type ThrowawayPostgres,
  type ThrowawayRedis,
  throwawayPostgres,
  throwawayRedis,
  until,
} from '../support/faults.ts';
import { Client } from '../support/http.ts';
import { ADMIN_TOKEN, System } from '../support/system.ts';

/**
 * The bank test, in the spirit of Jepsen's: mixed load (sales, credit requests and their
 * approvals or rejections, idempotent retries) while a schedule drawn from the seed injects
 * faults one after another, sometimes two at once; then everything is healed and the books are
 * checked. `npm run test:chaos -- --minutes N --seed S` sets CHAOS_MINUTES and CHAOS_SEED; the
 * seed and every fault are printed, so a failure replays.
 */
const MINUTES = Number(process.env.CHAOS_MINUTES) || 3;
const SEED = Number(process.env.CHAOS_SEED) || Math.floor(Math.random() * 2 ** 31) + 1;
const WORKERS = 3;
const FUNDING = 2_000_000n;
const CREDIT = 50_000n;

const started = Date.now();
const log = (line: string) => console.log(`[chaos +${((Date.now() - started) / 1000).toFixed(1)}s] ${line}`);

/**
 * A fault: it starts, lasts a while, and heals itself before it resolves. What it draws (which
 * worker, how long) is drawn by the schedule before it runs, so that two faults at once cannot
 * change each other's draws and a seed replays the same schedule.
 */
type Fault = { name: string; run: (draw: { pick: number; ms: number }) => Promise<void> };

interface World {
  postgres: ThrowawayPostgres;
  redis: ThrowawayRedis;
  system: System;
}

/** The faults one step of the schedule can draw, each healing before it resolves. */
function faultsOf({ postgres, redis, system }: World): Fault[] {
  const liveWorker = (pick: number) => {
    const live = system.workers.filter((w) => w.exitCode === null && w.signalCode === null);
    return live[Math.floor(pick * live.length)];
  };
  return [
    {
      name: 'kill -9 of a worker (its supervisor starts another)',
      run: async ({ pick }) => {
        liveWorker(pick)?.kill('SIGKILL');
      },
    },
    {
      name: 'SIGSTOP of a worker for 2–8 s, past its lease and job locks',
      run: async ({ pick, ms }) => {
        const worker = liveWorker(pick);
        worker?.kill('SIGSTOP');
        await sleep(2000 + ms * 6);
        worker?.kill('SIGCONT');
      },
    },
    {
      name: 'Redis killed (nothing persisted) and started again after 1–4 s',
      run: async ({ ms }) => {
        await redis.stop();
        await sleep(1000 + ms * 3);
        await redis.start();
      },
    },
    {
      name: 'PostgreSQL crashed (immediate) and started again after 1–3 s',
      run: async ({ ms }) => {
        await postgres.crash();
        await sleep(1000 + ms * 2);
        await postgres.start();
      },
    },
    {
      name: 'PostgreSQL stopped cleanly and started again after 1–3 s',
      run: async ({ ms }) => {
        await postgres.stop();
        await sleep(1000 + ms * 2);
        await postgres.start();
      },
    },
  ];
}

/** Credit requests made by the sellers and approved or rejected by the operator, until stopped. */
class CreditTraffic {
  readonly approved = new Map<string, string>();
  readonly rejected = new Set<string>();
  readonly serverErrors: string[] = [];
  private stopped = false;
  readonly done: Promise<void>;

  constructor(baseUrl: string, sellers: TestSeller[], random: Random) {
    this.done = (async () => {
      while (!this.stopped) {
        const seller = sellers[random.int(0, sellers.length - 1)] as TestSeller;
        const action = random.next() < 0.7 ? 'approve' : 'reject';
        const made = await boundedRequest(baseUrl, 'POST', '/api/credit-requests', {
          token: seller.apiKey,
          body: { seller: seller.id, amount: CREDIT.toString() },
        });
        if (typeof made.status === 'number' && made.status >= 500 && made.status !== 503)
          this.serverErrors.push(`credit request: ${made.status}`);
        if (made.status === 201) {
          const processed = await boundedRequest(baseUrl, 'POST', `/api/credit-requests/${made.body.id}/process`, {
            token: ADMIN_TOKEN,
            body: { action },
          });
          if (typeof processed.status === 'number' && processed.status >= 500 && processed.status !== 503)
            this.serverErrors.push(`process: ${processed.status}`);
          if (processed.status === 202 && action === 'approve') this.approved.set(made.body.id, seller.id);
          if (processed.status === 202 && action === 'reject') this.rejected.add(made.body.id);
        }
        await sleep(100);
      }
    })();
  }

  stop(): Promise<void> {
    this.stopped = true;
    return this.done;
  }
}

describe(`the bank under faults for ${MINUTES} min (seed ${SEED})`, () => {
  let world: World;
  let sql: ReturnType<typeof testSql>;
  let client: Client;

  beforeAll(async () => {
    log(`seed ${SEED}, ${MINUTES} min; replay with: npm run test:chaos -- --minutes ${MINUTES} --seed ${SEED}`);
    const [postgres, redis] = await Promise.all([throwawayPostgres(), throwawayRedis()]);
    const system = await System.start({
      workers: WORKERS,
      databaseUrl: postgres.databaseUrl,
      redisUrl: redis.url,
    });
    world = { postgres, redis, system };
    sql = testSql(postgres.ownerUrl);
    client = new Client(system.baseUrl);
  });
  afterAll(async () => {
    await cleanUp(
      () => world?.system.stop(),
      () => sql?.end({ timeout: 1 }),
      () => world?.postgres.remove(),
      () => world?.redis.remove(),
    );
  });

  it('every 202 job final exactly once, balances equal the ledger, every seller reconciles, no seller served twice at once', async () => {
    // One generator per stream of draws: the schedule's never depend on how fast the load ran.
    const schedule = seededRandom(SEED);
    const creditDraws = seededRandom(SEED ^ 0x5bd1e995);
    const retryDraws = seededRandom(SEED ^ 0x27d4eb2d);
    const sellers = await sellersOnEveryPartition(client, 2);
    await fundAll(client, sellers, FUNDING);
    const supervisor = superviseWorkers(world.system);
    const sales = new SaleTraffic(world.system.baseUrl, sellers, { concurrency: 12, timeoutMs: 8000 });
    const credits = new CreditTraffic(world.system.baseUrl, sellers, creditDraws);
    const faults = faultsOf(world);

    // The schedule: a fault every 3–10 s, and one time in four a second one beside it.
    const deadline = Date.now() + MINUTES * 60_000;
    const injected: string[] = [];
    while (Date.now() < deadline) {
      await sleep(schedule.int(3000, 10_000));
      const picks = [faults[schedule.int(0, faults.length - 1)] as Fault];
      if (schedule.next() < 0.25) picks.push(faults[schedule.int(0, faults.length - 1)] as Fault);
      const draws = picks.map(() => ({ pick: schedule.next(), ms: schedule.int(0, 1000) }));
      for (const fault of picks) log(`fault: ${fault.name}`);
      injected.push(...picks.map((f) => f.name));
      await Promise.all(picks.map((f, i) => f.run(draws[i] as { pick: number; ms: number })));
      log('healed');
    }

    // Idempotent retries: some accepted sales sent again, after the faults, with their own keys.
    await sales.stop();
    await credits.stop();
    const retried = sales.accepted.filter(() => retryDraws.next() < 0.05).slice(0, 200);
    for (const sale of retried) {
      const again = await boundedRequest(world.system.baseUrl, 'POST', '/api/charge-sales', {
        token: sellers.find((s) => s.id === sale.sellerId)?.apiKey,
        headers: { 'idempotency-key': sale.key },
        body: {
          seller_id: sale.sellerId,
          phone_number: sale.phone,
          amount: sale.amount.toString(),
        },
      });
      // The same key for the same request is the same job; a retry never sells twice.
      if (again.status === 202 || again.status === 200) expect(again.body.job_id).toBe(sale.jobId);
    }
    supervisor.stop();
    log(
      `load stopped: ${sales.requests.length} sales sent (${sales.accepted.length} accepted), ${credits.approved.size} approvals accepted; ${injected.length} faults`,
    );

    const sellerIds = sellers.map((s) => s.id);
    await until(
      'every job final',
      async () => {
        const [row] = await sql<{ open: number }[]>`
          select count(*)::int as open from jobs where finished_at is null`;
        return row?.open === 0;
      },
      180_000,
      500,
    );

    // Exactly once: a job has a ledger row iff it succeeded, and one only.
    const jobs = await sql<{ id: string; status: string; moves_money: boolean }[]>`
      select id, status, (status = 'succeeded' and action is distinct from 'reject') as moves_money
      from jobs where seller_id = any(${sellerIds}::uuid[])`;
    const rows = await sql<{ job_id: string; n: number }[]>`
      select job_id, count(*)::int as n from transactions where seller_id = any(${sellerIds}::uuid[]) group by job_id`;
    const ledgerRows = new Map(rows.map((r) => [r.job_id, r.n]));
    expect(
      rows.filter((r) => r.n !== 1),
      'no job with two ledger rows',
    ).toEqual([]);
    // A sale that succeeded debits, an approval that succeeded credits; a rejection moves nothing.
    const wrong = jobs.filter((j) => j.moves_money !== ledgerRows.has(j.id));
    expect(wrong.slice(0, 10), 'a ledger row iff the job moved money').toEqual([]);
    const jobIds = new Set(jobs.map((j) => j.id));
    expect(
      rows.filter((r) => !jobIds.has(r.job_id)),
      'no ledger row without its job',
    ).toEqual([]);
    for (const sale of sales.accepted) expect(jobIds.has(sale.jobId), `job of 202 ${sale.jobId}`).toBe(true);

    // A credit request credited at most once, and only an approved one.
    const credited = await sql<{ credit_request_id: string; n: number }[]>`
      select j.credit_request_id, count(*)::int as n from transactions t join jobs j on j.id = t.job_id
      where t.type = 'credit_increase' and t.seller_id = any(${sellerIds}::uuid[]) and j.credit_request_id is not null
      group by j.credit_request_id`;
    expect(credited.filter((c) => c.n !== 1)).toEqual([]);
    for (const c of credited) expect(credits.rejected.has(c.credit_request_id)).toBe(false);

    // The books: balances equal the ledger, nothing below zero, every chain unbroken.
    const [books] = await sql<{ balances: bigint; ledger: bigint; negative: number }[]>`
      select (select sum(credit_balance) from sellers where id = any(${sellerIds}::uuid[]))::bigint as balances,
             (select coalesce(sum(amount), 0) from transactions where seller_id = any(${sellerIds}::uuid[]))::bigint as ledger,
             (select count(*) from sellers where credit_balance < 0)::int as negative`;
    expect(books?.balances).toBe(books?.ledger);
    expect(books?.negative).toBe(0);
    for (const seller of sellers) {
      const check = await client.get(`/api/sellers/${seller.id}/reconcile`, { token: ADMIN_TOKEN });
      expect(check.body, seller.id).toMatchObject({ is_reconciled: true, difference: '0' });
    }

    // Serial per seller: no two transactions held one seller at once.
    expect(overlappingSpans(await transactionSpans(sql, sellerIds)).slice(0, 5)).toEqual([]);

    const answers = sales.answers.filter((a) => typeof a.status === 'number' && a.status >= 500 && a.status !== 503);
    expect(answers.map((a) => `${a.status} ${JSON.stringify(a.body)}`).slice(0, 5), 'never a 500').toEqual([]);
    expect(credits.serverErrors.slice(0, 5)).toEqual([]);
    log(
      `checked: ${jobs.length} jobs final, lost 0, doubled 0; ${credited.length} credits applied once; ` +
        `${supervisor.deaths.length} worker deaths replaced; ${injected.length} faults`,
    );
  });
});
