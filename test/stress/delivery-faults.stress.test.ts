import { setTimeout as sleep } from 'node:timers/promises';
import type { ProviderSimStats } from '@cs/delivery';
import { partitionOf } from '@cs/queue';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { testSql } from '../support/db.ts';
import { createSeller, inParallel, type TestSeller } from '../support/factories.ts';
import {
  cleanUp,
  fundAll,
  PARTITIONS,
  partitionsOf,
  SaleTraffic,
  type ThrowawayPostgres,
  throwawayPostgres,
  until,
  waitPartitionsSettled,
} from '../support/faults.ts';
import { Client } from '../support/http.ts';
import { TestProvider } from '../support/provider.ts';
import { ADMIN_TOKEN, freePort, System } from '../support/system.ts';

/**
 * The delivery stage under provider and worker faults, against the HTTP simulator served from
 * this test, three worker processes sharing it:
 * (a) the provider down for 30 s under load: the partitions keep debiting as fast as before (the
 *     provider is outside their path), the workers pause their calls (a few probes, not a call per
 *     sale and retry), nothing is delivered twice or refunded, everything is delivered once the
 *     provider is back, every seller reconciles;
 * (b) a worker killed (kill -9) holding deliveries it never got through to the provider (in an
 *     outage, which records nothing): once their hold ran out another worker writes their rows,
 *     takes them over, asks the provider first, sends, and each is delivered exactly once;
 * (c) a worker killed while the provider has delivered but not yet answered: another worker takes
 *     them over, asks first, hears "delivered", and never sends again.
 * STRESS_DELIVERY_SECONDS sets how long the sales of (a) last (default 40), with the outage from
 * its 5th second for 30 s.
 *
 * A sale delivered at the first answer has no `deliveries` row (its job records the delivery),
 * and one just debited has none yet (its batch's hold in `delivery_holds` stands for it): what the
 * test reads of a delivery is its state as each stands, row or job (`deliveryStates`).
 */

const SALES_SECONDS = Number(process.env.STRESS_DELIVERY_SECONDS) || 40;
const OUTAGE_AFTER_MS = 5000;
const OUTAGE_MS = 30_000;
const PROVIDER_TIMEOUT_MS = 1000;
const LEASE_MS = 1500;
const FUNDING = 10n ** 11n;
const log = (line: string) => console.log(`[delivery faults] ${line}`);

type Sql = ReturnType<typeof testSql>;

describe('delivering top-ups through provider outages and worker crashes', () => {
  let postgres: ThrowawayPostgres;
  let sql: Sql;
  let provider: TestProvider;
  let system: System;
  let client: Client;
  const healthPorts: number[] = [];

  beforeAll(async () => {
    // A PostgreSQL of its own: three workers, an API and thousands of deliveries asked about.
    postgres = await throwawayPostgres();
    sql = testSql(postgres.ownerUrl);
    provider = await TestProvider.start({ hangMs: 2000 });
    system = await System.start({
      workers: 0,
      databaseUrl: postgres.databaseUrl,
      env: provider.env({
        PROVIDER_TIMEOUT_MS: String(PROVIDER_TIMEOUT_MS),
        DELIVERY_RETRY_FIRST_MS: '200',
        DELIVERY_RETRY_MAX_MS: '2000',
        DELIVERY_POLL_MS: '100',
        DELIVERY_LEASE_MS: String(LEASE_MS),
      }),
    });
    for (let i = 0; i < 3; i++) {
      const port = await freePort();
      healthPorts.push(port);
      system.startWorker({ WORKER_HEALTH_PORT: String(port) });
    }
    client = new Client(system.baseUrl);
    await waitPartitionsSettled(healthPorts);
  });
  afterAll(() =>
    cleanUp(
      () => system?.stop(),
      () => provider?.close(),
      () => sql?.end({ timeout: 1 }),
      () => postgres?.remove(),
    ),
  );

  /** Sellers whose partitions are all consumed by the worker reporting on `healthPort`. */
  async function sellersOf(healthPort: number, count: number): Promise<TestSeller[]> {
    const owned = new Set(await partitionsOf(healthPort));
    expect(owned.size).toBeGreaterThan(0);
    const chosen: TestSeller[] = [];
    while (chosen.length < count) {
      const made = await inParallel(Array.from({ length: 8 }), 4, () => createSeller(client, 'Delivery fault'));
      for (const seller of made) if (owned.has(partitionOf(seller.id, PARTITIONS))) chosen.push(seller);
    }
    const sellers = chosen.slice(0, count);
    await fundAll(client, sellers, FUNDING);
    return sellers;
  }

  /**
   * Each debited sale's delivery as it stands, of the given sales or all: its `deliveries` row if
   * it has one, else its job's word. A sale without a row (delivered at the first answer, or still
   * held by the process that debited it) is pending while its job is `delivering`, and delivered
   * once it `succeeded` with its delivery (when, by which reference, after how many calls: in
   * `result.delivery`). A sale not debited (yet) has no delivery and is left out.
   */
  function deliveryStates(jobIds?: string[]) {
    return sql`
      select * from (
        select j.id as job_id, j.submitted_at, j.status as job_status,
          case when d.job_id is not null then d.status
               when j.status = 'delivering' then 'pending'
               when j.status = 'succeeded' and j.result ? 'delivery' then 'delivered' end as status,
          coalesce(d.debited_at, j.applied_at) as debited_at,
          case when d.job_id is not null then d.delivered_at
               else (j.result->'delivery'->>'delivered_at')::timestamptz end as delivered_at,
          case when d.job_id is not null then d.attempts
               else coalesce((j.result->'delivery'->>'attempts')::int, 0) end as attempts
        from jobs j left join deliveries d on d.job_id = j.id
        where j.type = 'charge_sale' ${jobIds ? sql`and j.id = any(${jobIds}::uuid[])` : sql``}
      ) s where s.status is not null`;
  }

  /** Deliveries of the given sales by status (row or job, as each stands), and the jobs by status. */
  async function statusesOf(jobIds: string[]) {
    const deliveries = await sql<{ status: string; n: number }[]>`
      select status, count(*)::int as n from (${deliveryStates(jobIds)}) s group by status`;
    const jobs = await sql<{ status: string; n: number }[]>`
      select status, count(*)::int as n from jobs where id = any(${jobIds}::uuid[]) group by status`;
    const asObject = (rows: { status: string; n: number }[]) => Object.fromEntries(rows.map((r) => [r.status, r.n]));
    return { deliveries: asObject(deliveries), jobs: asObject(jobs) };
  }

  /**
   * Every sale given delivered exactly once: its job succeeded with its delivery, its delivery
   * delivered (its row, where it has one, saying the same as the job), no refund anywhere, and the
   * provider delivered its reference once (and nothing else twice); every seller reconciles.
   */
  async function expectDeliveredOnce(jobIds: string[], sellers: TestSeller[]) {
    const stats = await provider.stats();
    const twice = Object.entries(stats.deliveriesByReference).filter(([, n]) => n !== 1);
    expect(twice, 'no reference delivered twice').toEqual([]);
    const notDelivered = jobIds.filter((id) => stats.deliveriesByReference[id] !== 1);
    expect(notDelivered.slice(0, 10), 'every sale delivered by the provider').toEqual([]);
    expect(await statusesOf(jobIds)).toEqual({
      deliveries: { delivered: jobIds.length },
      jobs: { succeeded: jobIds.length },
    });
    // The job is the whole record of a sale delivered at the first answer: it names the
    // reference, the moment and the calls; where there is a row, the two agree.
    const [wrong] = await sql<{ n: number }[]>`
      select count(*)::int as n from jobs j left join deliveries d on d.job_id = j.id
      where j.id = any(${jobIds}::uuid[]) and (
        j.result->'delivery'->>'status' is distinct from 'delivered'
        or j.result->'delivery'->>'provider_reference' is null
        or j.result->'delivery'->>'delivered_at' is null
        or coalesce((j.result->'delivery'->>'attempts')::int, 0) < 1
        or (d.job_id is not null and (
          j.result->'delivery'->>'provider_reference' is distinct from d.provider_reference
          or (j.result->'delivery'->>'attempts')::int <> d.attempts)))`;
    expect(wrong?.n, 'each job names its delivery').toBe(0);
    const [refunds] = await sql<
      { n: number }[]
    >`select count(*)::int as n from transactions where type = 'charge_refund'`;
    expect(refunds?.n, 'nothing refunded').toBe(0);
    const reconciled = await inParallel(sellers, 8, (s) =>
      client.get(`/api/sellers/${s.id}/reconcile`, { token: ADMIN_TOKEN }),
    );
    for (const r of reconciled) expect(r.body).toMatchObject({ is_reconciled: true, difference: '0' });
  }

  /** The sales answered 202, each with the job it made. */
  async function sellAtOnce(sellers: TestSeller[], count: number): Promise<string[]> {
    const answers = await Promise.all(
      Array.from({ length: count }, (_, i) => {
        const seller = sellers[i % sellers.length] as TestSeller;
        return client.post('/api/charge-sales', {
          token: seller.apiKey,
          body: { seller_id: seller.id, phone_number: `0935${String(i).padStart(7, '0')}`, amount: 1000 + i },
        });
      }),
    );
    expect(answers.map((a) => a.status)).toEqual(answers.map(() => 202));
    return answers.map((a) => a.body.job_id as string);
  }

  /**
   * Waits until every one of the sales is debited; returns how each delivery is held as it stands
   * then: a sale with a row by its lease (`claimed_until`), one without by its batch's hold
   * (`delivery_holds`), which no other worker touches until it runs out.
   */
  async function waitDebited(jobIds: string[]) {
    let rows: { job_id: string; attempts: number; held_until: Date | null; held: boolean }[] = [];
    await until(
      'every sale debited',
      async () => {
        rows = await sql`
          select s.job_id, s.attempts, l.held_until, coalesce(l.held_until > now(), false) as held
          from (${deliveryStates(jobIds)}) s
          left join deliveries d on d.job_id = s.job_id
          cross join lateral (
            select case when d.job_id is not null then d.claimed_until
                        when s.job_status = 'delivering' then
                          (select max(h.held_until) from delivery_holds h where s.job_id = any(h.job_ids))
                   end as held_until) l`;
        return rows.length === jobIds.length;
      },
      10_000,
      10,
    );
    return rows;
  }

  it(`(a) the provider down for ${OUTAGE_MS / 1000} s under load: debits never wait for it, nothing is delivered twice, all delivered after`, async () => {
    const sellers = await (async () => {
      const made = await inParallel(Array.from({ length: 12 }), 4, () => createSeller(client, 'Outage'));
      await fundAll(client, made, FUNDING);
      return made;
    })();
    const started = Date.now();
    const traffic = new SaleTraffic(system.baseUrl, sellers, { concurrency: 16, timeoutMs: 10_000 });
    let outageFrom = 0;
    let salesEnded = 0;
    let refusedCalls = 0;
    try {
      await sleep(OUTAGE_AFTER_MS);
      outageFrom = Date.now();
      // Down in both ways a provider goes down: first refusing at once (503), then hanging past
      // the timeout, so a partition that waited for it would stand still for every sale.
      await provider.outage(OUTAGE_MS);
      // Top-ups the provider had begun before the outage may still finish in its first moments.
      await sleep(500);
      const before = await provider.stats();
      await sleep(OUTAGE_MS / 2 - 500);
      await provider.latency(2 * PROVIDER_TIMEOUT_MS);
      await sleep(OUTAGE_MS / 2 - 2500);
      // Near the outage's end: nothing got through.
      const during = await provider.stats();
      expect(during.delivered, 'nothing delivered during the outage').toBe(before.delivered);
      // The workers paused their calls: each made its calls in flight and the unclear answers that
      // open its breaker, then a probe per cooldown; without the pause every sale of the outage
      // would be asked about again every few seconds (tens of thousands of calls).
      refusedCalls = during.refused - before.refused;
      await sleep(Math.max(0, outageFrom + OUTAGE_MS - Date.now()));
      await provider.latency(0);
      await sleep(Math.max(0, started + SALES_SECONDS * 1000 - Date.now()));
    } finally {
      await traffic.stop();
      salesEnded = Date.now();
    }
    const outageUntil = outageFrom + OUTAGE_MS;
    expect(traffic.tally(), traffic.timeline(started, 5000)).toEqual({ 202: traffic.requests.length });
    const jobIds = traffic.accepted.map((s) => s.jobId);
    log(`${jobIds.length} sales in ${((salesEnded - started) / 1000).toFixed(0)} s, outage from +5 s for 30 s`);
    log(`${refusedCalls} calls reached the provider in ${(OUTAGE_MS - 3000) / 1000} s of its outage`);
    expect(refusedCalls, 'calls paused during the outage').toBeLessThan(1000);

    // The debits went on during the outage as before it: how many per second, and how long a
    // sale waited for its debit (submission → the batch that debited it).
    const windows = {
      before: [started + 1000, outageFrom],
      refusing: [outageFrom + 1000, outageFrom + OUTAGE_MS / 2],
      hanging: [outageFrom + OUTAGE_MS / 2 + 1000, outageUntil - 1000],
      after: [outageUntil + 1000, salesEnded],
    } as const;
    const rates: Record<string, { perSecond: number; p95Ms: number; debited: number }> = {};
    for (const [name, [from, to]] of Object.entries(windows)) {
      const [row] = await sql<{ debited: number; p95: number }[]>`
        select count(*)::int as debited,
          coalesce(percentile_cont(0.95) within group (order by extract(epoch from s.debited_at - s.submitted_at) * 1000), 0)::float8 as p95
        from (${deliveryStates()}) s
        where s.submitted_at >= ${new Date(from)} and s.submitted_at < ${new Date(to)}`;
      rates[name] = {
        debited: row?.debited ?? 0,
        perSecond: (row?.debited ?? 0) / ((to - from) / 1000),
        p95Ms: Math.round(row?.p95 ?? 0),
      };
    }
    log(
      Object.entries(rates)
        .map(([n, r]) => `${n}: ${r.perSecond.toFixed(0)} debits/s, submit → debit p95 ${r.p95Ms} ms`)
        .join('; '),
    );
    const { before: b, after: _after, ...outage } = rates;
    if (!b) throw new Error('no rate before the outage');
    expect(b.perSecond).toBeGreaterThan(10);
    for (const [name, d] of Object.entries(outage)) {
      expect(d.perSecond, `debits while the provider was ${name} at the rate before`).toBeGreaterThan(
        b.perSecond * 0.5,
      );
      expect(d.p95Ms, `a sale waits for its debit no longer while ${name}`).toBeLessThan(Math.max(1500, b.p95Ms * 3));
    }
    // Every sale of the outage was debited while it lasted (so it waited for nothing), and delivered after it.
    const [outageSales] = await sql<{ n: number; debited_late: number; delivered_early: number }[]>`
      select count(*)::int as n,
        count(*) filter (where s.debited_at >= ${new Date(outageUntil)})::int as debited_late,
        count(*) filter (where s.delivered_at < ${new Date(outageUntil)})::int as delivered_early
      from (${deliveryStates()}) s
      where s.submitted_at >= ${new Date(outageFrom + 500)} and s.submitted_at < ${new Date(outageUntil - 2000)}`;
    expect(outageSales?.n).toBeGreaterThan(0);
    expect(outageSales?.debited_late, 'sales of the outage debited during it').toBe(0);

    // Once the provider is back, everything is delivered, once.
    let last = 0;
    await until(
      'every sale delivered',
      async () => {
        const { jobs } = await statusesOf(jobIds);
        const open = jobIds.length - (jobs.succeeded ?? 0);
        if (Date.now() - last > 5000) {
          last = Date.now();
          log(`  ${open} of ${jobIds.length} not delivered yet: ${JSON.stringify(jobs)}`);
        }
        return open === 0 || (jobs.rejected ?? 0) + (jobs.failed ?? 0) > 0;
      },
      120_000,
      500,
    );
    const [drained] = await sql<{ at: Date }[]>`select max(delivered_at) as at from (${deliveryStates()}) s`;
    log(`all delivered ${(((drained?.at.getTime() ?? 0) - outageUntil) / 1000).toFixed(1)} s after the outage ended`);
    expect(outageSales?.delivered_early, 'nothing delivered while the provider was down').toBe(0);
    await expectDeliveredOnce(jobIds, sellers);
    // The ledger: one debit per sale, the balances what the sellers were told.
    const balances = await sql<{ id: string; balance: bigint; spent: bigint; rows: number }[]>`
      select s.id, s.credit_balance as balance,
        coalesce(-sum(t.amount) filter (where t.type = 'charge_sale'), 0)::bigint as spent,
        count(t.*) filter (where t.type = 'charge_sale')::int as rows
      from sellers s left join transactions t on t.seller_id = s.id
      where s.id = any(${sellers.map((s) => s.id)}::uuid[]) group by s.id`;
    const told = new Map<string, bigint>();
    for (const sale of traffic.accepted) told.set(sale.sellerId, (told.get(sale.sellerId) ?? 0n) + sale.amount);
    for (const row of balances) {
      expect({ spent: row.spent, balance: row.balance }).toEqual({
        spent: told.get(row.id) ?? 0n,
        balance: FUNDING - (told.get(row.id) ?? 0n),
      });
    }
    expect(balances.reduce((n, r) => n + r.rows, 0)).toBe(jobIds.length);
  });

  /**
   * Sales of the worker on `healthPort`'s sellers, all at once; once all are debited (their
   * deliveries held by that worker under their batches' holds, their sends in flight), that worker
   * is killed.
   */
  async function killWhileHeld(
    workerIndex: number,
    count: number,
    beforeKill: (jobIds: string[], statsBefore: ProviderSimStats) => Promise<void> = async () => {},
  ) {
    const sellers = await sellersOf(healthPorts[workerIndex] as number, 4);
    // The provider's counts below are this test's own: nothing of an earlier test is still asked about.
    await until(
      'earlier deliveries settled',
      async () => {
        const [open] = await sql<{ n: number }[]>`
          select count(*)::int as n from (${deliveryStates()}) s where s.status in ('pending', 'refund_due')`;
        return open?.n === 0;
      },
      120_000,
      200,
    );
    const statsBefore = await provider.stats();
    const submitted = Date.now();
    const jobIds = await sellAtOnce(sellers, count);
    await waitDebited(jobIds);
    await beforeKill(jobIds, statsBefore);
    // The holds as they stand at the kill.
    const leases = await waitDebited(jobIds);
    system.killWorker(workerIndex);
    const killedAt = Date.now();
    log(`worker ${workerIndex} killed ${killedAt - submitted} ms after ${count} sales were submitted`);
    // All in the dead worker's hands: held, nothing heard from the provider yet.
    expect(
      leases.filter((l) => !l.held || l.attempts !== 0),
      'every delivery held, unanswered, at the kill',
    ).toEqual([]);
    return { sellers, jobIds, leases, statsBefore, killedAt };
  }

  /**
   * Nothing was settled before its hold ran out: no other worker took a held delivery early. Each
   * was taken over by its row, written only once the hold ran out (the dead worker had written
   * none), its debit its sale's.
   */
  async function expectTakenOverAfterLease(leases: Awaited<ReturnType<typeof waitDebited>>) {
    const jobIds = leases.map((l) => l.job_id);
    const delivered = await sql<{ job_id: string; delivered_at: Date | null }[]>`
      select job_id, delivered_at from (${deliveryStates(jobIds)}) s`;
    const at = new Map(delivered.map((d) => [d.job_id, d.delivered_at?.getTime() ?? 0]));
    const early = leases.filter((l) => (at.get(l.job_id) ?? 0) < (l.held_until?.getTime() ?? 0));
    expect(early, 'no delivery settled before its hold ran out').toEqual([]);
    const [rows] = await sql<{ n: number; debit_differs: number }[]>`
      select count(*)::int as n, count(*) filter (where d.debited_at is distinct from j.applied_at)::int as debit_differs
      from deliveries d join jobs j on j.id = d.job_id where d.job_id = any(${jobIds}::uuid[])`;
    expect(rows, 'each taken over by a row of its own, debited when its sale was').toEqual({
      n: jobIds.length,
      debit_differs: 0,
    });
  }

  it('(b) a worker killed between the debit and the delivery: another takes the deliveries over after their hold and delivers each once', async () => {
    // The sends reach the provider and are refused, recorded nowhere; their answers take longer
    // than the timeout, so the dead worker is still waiting on every one of them at the kill.
    await provider.outage(600_000);
    await provider.latency(5000);
    const { sellers, jobIds, leases, statsBefore } = await killWhileHeld(0, 40);
    await provider.latency(0);
    await provider.outage(0);
    await until(
      'the dead worker’s deliveries delivered',
      async () => (await statusesOf(jobIds)).jobs.succeeded === jobIds.length,
      30_000,
    );
    await expectTakenOverAfterLease(leases);
    await expectDeliveredOnce(jobIds, sellers);
    const stats = await provider.stats();
    // The provider never had them: one send each (after a status question that found nothing).
    expect(stats.sends - statsBefore.sends).toBe(jobIds.length);
    expect(stats.statusQueries - statsBefore.statusQueries).toBeGreaterThanOrEqual(jobIds.length);
    // Their rows (written once the hold ran out) count the survivor's calls.
    const attempts = await sql<{ attempts: number; n: number }[]>`
      select attempts, count(*)::int as n from deliveries where job_id = any(${jobIds}::uuid[]) group by attempts`;
    // Asked first (not_found), then sent: two calls each.
    expect(attempts).toEqual([{ attempts: 2, n: jobIds.length }]);
  });

  it('(c) a worker killed while the provider has delivered but not yet answered: the next one asks first and never sends again', async () => {
    // The dead worker's partitions have moved; the next victim is worker 1.
    await waitPartitionsSettled([healthPorts[1] as number, healthPorts[2] as number]);
    // The sim delivers at once and answers only after the latency: the worker never hears.
    await provider.latency(5000);
    const { sellers, jobIds, leases, statsBefore } = await killWhileHeld(1, 40, async (ids, before) => {
      // Killed only once every send reached the provider, which delivered it, and is holding the answer.
      await until(
        'the provider delivered every sale',
        async () => {
          const stats = await provider.stats();
          return stats.sends - before.sends === ids.length && ids.every((id) => stats.deliveriesByReference[id] === 1);
        },
        PROVIDER_TIMEOUT_MS / 2,
        10,
      );
    });
    await provider.latency(0);
    await until(
      'the dead worker’s deliveries settled',
      async () => (await statusesOf(jobIds)).jobs.succeeded === jobIds.length,
      30_000,
    );
    await expectTakenOverAfterLease(leases);
    await expectDeliveredOnce(jobIds, sellers);
    const stats = await provider.stats();
    expect(stats.sends - statsBefore.sends, 'no second send').toBe(jobIds.length);
    expect(stats.statusQueries - statsBefore.statusQueries).toBeGreaterThanOrEqual(jobIds.length);
    const attempts = await sql<{ attempts: number; n: number }[]>`
      select attempts, count(*)::int as n from deliveries where job_id = any(${jobIds}::uuid[]) group by attempts`;
    // The dead worker's send was never recorded; the survivor's status question was all it took.
    expect(attempts).toEqual([{ attempts: 1, n: jobIds.length }]);
  });
});
