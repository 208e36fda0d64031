import { randomInt, randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { partitionOf, partitionQueueName } from '@cs/queue';
import { Queue } from 'bullmq';
import { Redis } from 'ioredis';
import type postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isolatedDatabase, testSql } from '../support/db.ts';
import { balanceOf, createSeller, fundSeller, type TestSeller, waitForJob } from '../support/factories.ts';
import { Client } from '../support/http.ts';
import { ADMIN_TOKEN, System } from '../support/system.ts';
import { reconcileOf } from './support.ts';

/** The systems tests start run the default partition count. */
const PARTITIONS = 16;

/** A job's row as the owner reads it; `amount` is a bigint. */
interface JobRow {
  id: string;
  type: 'charge_sale' | 'credit_approval';
  seller_id: string;
  partition: number;
  queue_job_id: string;
  status: string;
  amount: bigint | null;
  phone_number: string | null;
  credit_request_id: string | null;
  action: string | null;
  processed_by: string | null;
  result: Record<string, unknown> | null;
  error: Record<string, unknown> | null;
  started_at: Date | null;
  finished_at: Date | null;
}

/** The facts a job applies: recorded by the API, never changed afterwards. */
const FACTS = [
  'type',
  'seller_id',
  'partition',
  'amount',
  'phone_number',
  'credit_request_id',
  'action',
  'processed_by',
] as const;
const factsOf = (row: JobRow) => Object.fromEntries(FACTS.map((f) => [f, row[f]]));

/** A job as a queue message of the old format carried it, with every fact the worker once trusted. */
function oldFormatEntry(row: JobRow): Record<string, unknown> {
  return row.type === 'charge_sale'
    ? {
        type: 'charge_sale',
        jobId: row.id,
        sellerId: row.seller_id,
        amount: String(row.amount),
        phoneNumber: row.phone_number,
      }
    : {
        type: 'credit_approval',
        jobId: row.id,
        sellerId: row.seller_id,
        creditRequestId: row.credit_request_id,
        action: row.action,
        processedBy: row.processed_by,
      };
}

const randomPhone = () => `0912${String(randomInt(0, 10_000_000)).padStart(7, '0')}`;

async function until(what: string, check: () => Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting until ${what}`);
    await sleep(50);
  }
}

describe('queue messages altered in Redis: only what the jobs rows say is applied', () => {
  let database: Awaited<ReturnType<typeof isolatedDatabase>>;
  let system: System;
  let client: Client;
  let sql: postgres.Sql<{ bigint: bigint }>;
  let connection: Redis;
  const queues = new Map<number, Queue>();

  beforeAll(async () => {
    // A database of its own: a failure here can leave jobs unfinished for good, which other
    // files' checks over every job would otherwise trip on.
    database = await isolatedDatabase('trust_queue');
    // One worker for the setup (funding needs one); each test stops and starts workers itself.
    system = await System.start({ workers: 1, databaseUrl: database.applicationUrl });
    client = new Client(system.baseUrl);
    sql = testSql(database.ownerUrl);
    connection = new Redis(String(system.env.REDIS_URL), { maxRetriesPerRequest: null });
  });
  afterAll(async () => {
    await system?.stop();
    await Promise.all([...queues.values()].map((q) => q.close()));
    await connection?.quit();
    await sql?.end({ timeout: 5 });
    await database?.drop();
  });

  /** BullMQ's public API on a partition queue, as anyone who can write to Redis could use it. */
  const queueOf = (partition: number): Queue => {
    let queue = queues.get(partition);
    if (!queue) {
      queue = new Queue(partitionQueueName(partition), { connection, prefix: String(system.env.REDIS_PREFIX) });
      queues.set(partition, queue);
    }
    return queue;
  };

  const liveWorkers = () => system.workers.filter((w) => w.exitCode === null && w.signalCode === null);
  const ensureWorker = () => {
    if (liveWorkers().length === 0) system.startWorker();
  };

  const sell = async (seller: TestSeller, amount: number, phone: string): Promise<string> => {
    const res = await client.post('/api/charge-sales', {
      token: seller.apiKey,
      body: { seller_id: seller.id, phone_number: phone, amount },
    });
    expect(res.status, JSON.stringify(res.body)).toBe(202);
    return res.body.job_id;
  };
  const requestCredit = async (seller: TestSeller, amount: number): Promise<string> => {
    const res = await client.post('/api/credit-requests', {
      token: seller.apiKey,
      body: { seller: seller.id, amount },
    });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    return res.body.id;
  };
  const processRequest = async (requestId: string, action: 'approve' | 'reject'): Promise<string> => {
    const res = await client.post(`/api/credit-requests/${requestId}/process`, {
      token: ADMIN_TOKEN,
      body: { action },
    });
    expect(res.status, JSON.stringify(res.body)).toBe(202);
    return res.body.job_id;
  };

  const sellerOnAnotherPartition = async (taken: number[]): Promise<TestSeller> => {
    for (let i = 0; i < 100; i++) {
      const seller = await createSeller(client);
      if (!taken.includes(partitionOf(seller.id, PARTITIONS))) return seller;
    }
    throw new Error('no seller on another partition');
  };

  const jobRows = async (ids: string[]): Promise<Map<string, JobRow>> => {
    const rows = await sql<JobRow[]>`
      select id::text, type, seller_id::text, partition, queue_job_id::text, status, amount, phone_number,
             credit_request_id::text, action, processed_by, result, error, started_at, finished_at
      from jobs where id = any(${ids}::uuid[])`;
    return new Map(rows.map((r) => [r.id, r]));
  };
  const rowOf = (rows: Map<string, JobRow>, id: string): JobRow => {
    const row = rows.get(id);
    expect(row, `jobs row ${id}`).toBeDefined();
    return row as JobRow;
  };
  const ledgerOfJob = (jobId: string) =>
    sql<
      Array<{
        seller_id: string;
        type: string;
        amount: bigint;
        phone_number: string | null;
        credit_request_id: string | null;
        description: string;
      }>
    >`
      select seller_id::text, type, amount, phone_number, credit_request_id::text, description
      from transactions where job_id = ${jobId}`;
  const ledgerCount = async (sellerId: string): Promise<number> => {
    const [row] = await sql<[{ n: number }]>`select count(*)::int as n from transactions where seller_id = ${sellerId}`;
    return row.n;
  };
  const waitForQueuesIdle = (partitions: number[]) =>
    until(
      `partitions ${partitions.join(', ')} have no message waiting or in hand`,
      async () => {
        for (const p of partitions) {
          const counts = await queueOf(p).getJobCounts('wait', 'active', 'delayed', 'prioritized');
          if (Object.values(counts).some((n) => n > 0)) return false;
        }
        return true;
      },
      30_000,
    );

  it('a message altered while no worker runs: only what the jobs row says is applied', async () => {
    ensureWorker();
    const a = await createSeller(client, 'A');
    const pa = partitionOf(a.id, PARTITIONS);
    const b = await sellerOnAnotherPartition([pa]);
    const pb = partitionOf(b.id, PARTITIONS);
    await fundSeller(client, a, 1_000_000);
    const fundB = await fundSeller(client, b, 100_000);
    const r = await requestCredit(a, 50_000); // named by a sale's message rewritten into an approval
    const r2 = await requestCredit(a, 70_000); // approved; its message rewritten to name r3
    const r3 = await requestCredit(a, 30_000);
    const r4 = await requestCredit(a, 20_000); // rejected; its message rewritten to approve
    const r5 = await requestCredit(a, 40_000); // approved; its message rewritten to say 'attacker'

    // No worker from here on until the messages have been rewritten.
    for (const w of system.workers.keys()) await system.stopWorker(w);
    expect(liveWorkers()).toHaveLength(0);

    const phones = Array.from({ length: 8 }, randomPhone);
    const typeSale = await sell(a, 10_000, phones[0] as string);
    const oneRialSale = await sell(a, 20_000, phones[1] as string);
    const hugeSale = await sell(a, 30_000, phones[2] as string);
    const phoneSale = await sell(a, 40_000, phones[3] as string);
    const sellerSale = await sell(a, 50_000, phones[5] as string);
    const approveR2 = await processRequest(r2, 'approve');
    const rejectR4 = await processRequest(r4, 'reject');
    const approveR5 = await processRequest(r5, 'approve');
    const carrierSale = await sell(a, 1_000, phones[6] as string);
    const bSale = await sell(b, 5_000, phones[7] as string);
    const aJobs = [typeSale, oneRialSale, hugeSale, phoneSale, sellerSale, approveR2, rejectR4, approveR5, carrierSale];
    const all = [...aJobs, bSale];

    const recorded = await jobRows(all);
    expect(recorded.size).toBe(all.length);
    for (const row of recorded.values()) expect(row.status).toBe('queued');
    expect(rowOf(recorded, bSale).partition).toBe(pb);
    for (const id of aJobs) expect(rowOf(recorded, id).partition).toBe(pa);

    // What each message is rewritten to say, one fact at a time, in the old format's shape.
    const honest = (id: string) => oldFormatEntry(rowOf(recorded, id));
    const altered = new Map<string, Record<string, unknown>>([
      [
        typeSale,
        {
          type: 'credit_approval',
          jobId: typeSale,
          sellerId: a.id,
          creditRequestId: r,
          action: 'approve',
          processedBy: 'admin',
        },
      ],
      [oneRialSale, { ...honest(oneRialSale), amount: '1' }],
      [hugeSale, { ...honest(hugeSale), amount: '900000000' }],
      [phoneSale, { ...honest(phoneSale), phoneNumber: phones[4] }],
      [sellerSale, { ...honest(sellerSale), sellerId: b.id }],
      [approveR2, { ...honest(approveR2), creditRequestId: r3 }],
      [rejectR4, { ...honest(rejectR4), action: 'approve' }],
      [approveR5, { ...honest(approveR5), processedBy: 'attacker' }],
      // B's job, told to A's partition as if it were A's.
      [bSale, { ...honest(bSale), sellerId: a.id, amount: '900000' }],
    ]);
    // A's messages (one per submission, or shared when submissions were gathered), rewritten.
    const messagesOfA = new Set(aJobs.map((id) => rowOf(recorded, id).queue_job_id));
    const written = new Map<string, unknown>();
    for (const messageId of messagesOfA) {
      const message = await queueOf(pa).getJob(messageId);
      expect(message, `message ${messageId}`).toBeDefined();
      expect(await message?.getState()).toBe('waiting');
      const ids: string[] = [...(message?.data.ids ?? [])];
      expect(ids.length).toBeGreaterThan(0);
      // The carrier's message also names B's queued job, alongside A's own.
      if (ids.includes(carrierSale)) ids.push(bSale);
      const data = {
        ids,
        jobs: ids.map((id) => altered.get(id) ?? honest(id)),
        // Top-level facts some reader might take: ignored as well.
        sellerId: b.id,
        amount: '1',
      };
      await message?.updateData(data);
      written.set(messageId, data);
    }
    // A new message on B's partition naming A's job, rewritten to be B's.
    const strayOnB = randomUUID();
    await queueOf(pb).add(
      'delivery',
      { ids: [sellerSale], jobs: [{ ...honest(sellerSale), sellerId: b.id, amount: '99999' }] },
      { jobId: strayOnB },
    );
    // A message of the old format alone (no ids): it names no job at all now.
    const oldOnly = randomUUID();
    await queueOf(pa).add('delivery', { jobs: [{ ...honest(oneRialSale), amount: '1' }] }, { jobId: oldOnly });
    // What Redis now says is what the test wrote.
    for (const [messageId, data] of written) expect((await queueOf(pa).getJob(messageId))?.data).toEqual(data);
    expect((await queueOf(pb).getJob(strayOnB))?.data.ids).toEqual([sellerSale]);

    system.startWorker();
    const finals = await Promise.all(all.map((id) => waitForJob(client, id, ADMIN_TOKEN, 30_000)));
    expect(finals.map((j) => j.status)).toEqual(all.map(() => 'succeeded'));
    await waitForQueuesIdle([pa, pb]);

    const after = await jobRows(all);
    // The recorded facts never moved, and every job is final.
    for (const id of all) {
      expect(factsOf(rowOf(after, id)), id).toEqual(factsOf(rowOf(recorded, id)));
      expect(rowOf(after, id).status, id).toBe('succeeded');
    }

    // Sales: applied with the seller, amount and phone their rows recorded.
    const sales: Array<[string, TestSeller, number, string]> = [
      [typeSale, a, 10_000, phones[0] as string],
      [oneRialSale, a, 20_000, phones[1] as string],
      [hugeSale, a, 30_000, phones[2] as string],
      [phoneSale, a, 40_000, phones[3] as string],
      [sellerSale, a, 50_000, phones[5] as string],
      [carrierSale, a, 1_000, phones[6] as string],
      [bSale, b, 5_000, phones[7] as string],
    ];
    for (const [id, seller, amount, phone] of sales) {
      const row = rowOf(after, id);
      expect(row.type, id).toBe('charge_sale');
      expect(row.result, id).toMatchObject({ seller_id: seller.id, amount: String(amount), phone_number: phone });
      expect(row.result).toMatchObject({ amount: String(row.amount), phone_number: row.phone_number });
      // Exactly one ledger row each, on the seller its row names: B's job was applied once.
      expect(await ledgerOfJob(id), id).toEqual([
        {
          seller_id: seller.id,
          type: 'charge_sale',
          amount: -BigInt(amount),
          phone_number: phone,
          credit_request_id: null,
          description: `Charge of ${amount} rials to ${phone}`,
        },
      ]);
    }
    // The phone a message named instead was never charged; the recorded one was, once.
    expect(await sql`select number from phone_numbers where number = ${phones[4] as string}`).toHaveLength(0);
    expect(
      await sql`select total_charged, charge_count from phone_numbers where number = ${phones[3] as string}`,
    ).toEqual([{ total_charged: 40_000n, charge_count: 1n }]);

    // Credit approvals: the request, action and operator their rows recorded.
    expect(rowOf(after, approveR2).result).toMatchObject({
      credit_request_id: r2,
      status: 'approved',
      amount: '70000',
    });
    expect(rowOf(after, rejectR4).result).toMatchObject({ credit_request_id: r4, status: 'rejected', amount: '20000' });
    expect(rowOf(after, approveR5).result).toMatchObject({
      credit_request_id: r5,
      status: 'approved',
      amount: '40000',
    });
    expect(await ledgerOfJob(approveR2)).toEqual([
      {
        seller_id: a.id,
        type: 'credit_increase',
        amount: 70_000n,
        phone_number: null,
        credit_request_id: r2,
        description: `Credit request ${r2} approved by bootstrap`,
      },
    ]);
    expect(await ledgerOfJob(rejectR4)).toEqual([]);
    expect(await ledgerOfJob(approveR5)).toEqual([
      {
        seller_id: a.id,
        type: 'credit_increase',
        amount: 40_000n,
        phone_number: null,
        credit_request_id: r5,
        description: `Credit request ${r5} approved by bootstrap`,
      },
    ]);
    const requests = await sql<Array<{ id: string; status: string; processed_by: string | null }>>`
      select id::text, status, processed_by from credit_requests where id = any(${[r, r2, r3, r4, r5]}::uuid[])`;
    const request = (id: string) => requests.find((q) => q.id === id);
    expect(request(r)).toMatchObject({ status: 'pending', processed_by: null });
    expect(request(r2)).toMatchObject({ status: 'approved', processed_by: 'bootstrap' });
    expect(request(r3)).toMatchObject({ status: 'pending', processed_by: null });
    expect(request(r4)).toMatchObject({ status: 'rejected', processed_by: 'bootstrap' });
    expect(request(r5)).toMatchObject({ status: 'approved', processed_by: 'bootstrap' });
    expect(await sql`select id from transactions where credit_request_id = any(${[r, r3, r4]}::uuid[])`).toHaveLength(
      0,
    );
    const [attacker] = await sql<[{ requests: number; jobs: number; ledger: number }]>`
      select (select count(*)::int from credit_requests where processed_by = 'attacker') as requests,
             (select count(*)::int from jobs where processed_by = 'attacker') as jobs,
             (select count(*)::int from transactions where description like '%attacker%') as ledger`;
    expect(attacker).toEqual({ requests: 0, jobs: 0, ledger: 0 });

    // Balances are exactly what the recorded jobs imply.
    expect(await balanceOf(client, a.id)).toBe(1_000_000n + 70_000n + 40_000n - 151_000n);
    expect(await balanceOf(client, b.id)).toBe(100_000n - 5_000n);
    // A: funding, six sales, two credits. B: funding and its own sale, nothing of A's.
    expect(await ledgerCount(a.id)).toBe(9);
    expect(await ledgerCount(b.id)).toBe(2);
    const bLedger = await sql<Array<{ job_id: string; credit_request_id: string | null }>>`
      select job_id::text, credit_request_id::text from transactions where seller_id = ${b.id} order by id`;
    expect(bLedger.map((t) => t.credit_request_id)).toEqual([fundB, null]);
    expect(bLedger[1]?.job_id).toBe(bSale);
    for (const seller of [a, b]) {
      expect(await reconcileOf(client, seller.id)).toMatchObject({
        is_reconciled: true,
        difference: '0',
        chain_broken_at: null,
      });
    }
  });

  it('messages naming no job, or a job already final, change nothing', async () => {
    ensureWorker();
    const f = await createSeller(client, 'F');
    const pf = partitionOf(f.id, PARTITIONS);
    const fundRequest = await fundSeller(client, f, 10_000);
    const phone = randomPhone();
    const sold = await sell(f, 4_000, phone);
    expect((await waitForJob(client, sold)).status).toBe('succeeded');
    const refused = await sell(f, 50_000, phone);
    expect((await waitForJob(client, refused)).status).toBe('rejected');
    const pending = await requestCredit(f, 25_000);
    const [funding] = await sql<[{ id: string }]>`
      select id::text from jobs where credit_request_id = ${fundRequest}`;
    const finalIds = [sold, refused, funding.id];

    const snapshot = async () => ({
      balance: await balanceOf(client, f.id),
      ledger:
        await sql`select id, amount, balance_after, job_id, hmac from transactions where seller_id = ${f.id} order by id`,
      head: await sql`select credit_balance, ledger_head from sellers where id = ${f.id}`,
      jobs: await sql`select * from jobs where seller_id = ${f.id} order by id`,
      requests: await sql`select * from credit_requests where seller_id = ${f.id} order by id`,
      phone: await sql`select total_charged, charge_count from phone_numbers where number = ${phone}`,
    });
    const before = await snapshot();
    expect(before.balance).toBe(6_000n);
    expect(before.ledger).toHaveLength(2);
    const rows = await jobRows(finalIds);

    const ghost = randomUUID();
    const ghostApproval = randomUUID();
    const sale = (jobId: string, amount: string) => ({
      type: 'charge_sale',
      jobId,
      sellerId: f.id,
      amount,
      phoneNumber: phone,
    });
    const messages: Array<[string, unknown]> = [
      // No such job.
      [randomUUID(), { ids: [ghost], jobs: [sale(ghost, '1')] }],
      [
        randomUUID(),
        {
          ids: [ghostApproval],
          jobs: [
            {
              type: 'credit_approval',
              jobId: ghostApproval,
              sellerId: f.id,
              creditRequestId: pending,
              action: 'approve',
              processedBy: 'attacker',
            },
          ],
        },
      ],
      // Jobs already final: a success, a refusal that a smaller amount would turn into a sale, and
      // the approval that funded the seller (approving again would credit twice).
      [randomUUID(), { ids: [sold], jobs: [sale(sold, '9000')] }],
      [randomUUID(), { ids: [refused], jobs: [sale(refused, '1')] }],
      [randomUUID(), { ids: [funding.id, ghost] }],
      // Not even an id.
      [randomUUID(), { ids: ['not-a-uuid', 42, null] }],
    ];
    for (const [id, data] of messages) await queueOf(pf).add('delivery', data, { jobId: id });
    // And the sale's own message, kept by BullMQ after it completed, rewritten and put back.
    const own = await queueOf(pf).getJob(rowOf(rows, sold).queue_job_id);
    expect(own, 'the completed message of the sale').toBeDefined();
    expect(await own?.getState()).toBe('completed');
    await own?.updateData({ ids: [sold, refused], jobs: [sale(sold, '1'), sale(refused, '1')] });
    await own?.retry('completed');

    const ids = [...messages.map(([id]) => id), rowOf(rows, sold).queue_job_id];
    await until('every message was taken and finished', async () => {
      const states = await Promise.all(ids.map((id) => queueOf(pf).getJobState(id)));
      return states.every((s) => s === 'completed' || s === 'failed');
    });
    await waitForQueuesIdle([pf]);

    const after = await snapshot();
    expect(after).toEqual(before);
    expect(await jobRows([ghost, ghostApproval])).toEqual(new Map());
    expect(await sql`select id from transactions where job_id = any(${[ghost, ghostApproval]}::uuid[])`).toHaveLength(
      0,
    );
    expect(after.requests.find((q) => q.id === pending)).toMatchObject({ status: 'pending', processed_by: null });
    expect(await reconcileOf(client, f.id)).toMatchObject({ is_reconciled: true, total_transactions: 2 });
  });

  it("a job also named on another partition's queue, in the same commit as its own message, is still applied", async () => {
    // The worker gathers the batches of all its partitions into one transaction. Here a job's own
    // message and a stray message on another partition naming it reach one commit together: the
    // stray one must be ignored, and the job applied through its own.
    ensureWorker();
    const c = await createSeller(client, 'C');
    const pc = partitionOf(c.id, PARTITIONS);
    const d = await sellerOnAnotherPartition([pc]);
    const pd = partitionOf(d.id, PARTITIONS);
    const pe = [...Array(PARTITIONS).keys()].find((p) => p !== pc && p !== pd) as number;
    await fundSeller(client, c, 10_000);
    await fundSeller(client, d, 10_000);

    // Hold C's seller row, so that C's batch waits in its commit while the next batch gathers. FOR
    // NO KEY UPDATE, as the worker locks it: the API's insert of C's job (which takes no lock on
    // the seller) still goes through. Released after 25 s whatever happens, so the test stays bounded.
    let release = () => {};
    const released = new Promise<void>((resolve) => {
      release = resolve;
    });
    const watchdog = setTimeout(() => release(), 25_000);
    let locked = () => {};
    const isLocked = new Promise<void>((resolve) => {
      locked = resolve;
    });
    const blocker = sql.begin(async (tx) => {
      await tx`select id from sellers where id = ${c.id} for no key update`;
      locked();
      await released;
    });
    let dSale = '';
    let stray = '';
    try {
      await isLocked;
      await sell(c, 1_000, randomPhone());
      await until('the batch of C waits for its seller', async () => {
        const [row] = await sql<[{ n: number }]>`
          select count(*)::int as n from pg_stat_activity
          where datname = current_database() and wait_event_type = 'Lock'`;
        return row.n > 0;
      });
      dSale = await sell(d, 2_000, randomPhone());
      const dMessage = rowOf(await jobRows([dSale]), dSale).queue_job_id;
      await until('D’s message is in hand', async () => (await queueOf(pd).getJobState(dMessage)) === 'active');
      stray = randomUUID();
      await queueOf(pe).add('delivery', { ids: [dSale] }, { jobId: stray });
      await until('the stray message is in hand', async () => (await queueOf(pe).getJobState(stray)) === 'active');
      // Both are now waiting for the commit in flight: they will go into the next one together.
      await sleep(300);
    } finally {
      clearTimeout(watchdog);
      release();
      await blocker;
    }
    await until('the stray message finished', async () => (await queueOf(pe).getJobState(stray)) === 'completed');
    await waitForQueuesIdle([pc, pd, pe]);
    // Both messages are finished, so the commit that carried them is done. A few seconds more, but
    // well short of the 10 s after which the workers' requeue check would put a lost job back and
    // hide the loss.
    await until(
      'D’s job is final',
      async () => ['succeeded', 'rejected', 'failed'].includes(rowOf(await jobRows([dSale]), dSale).status),
      4_000,
    ).catch(() => {});
    const row = rowOf(await jobRows([dSale]), dSale);
    expect(
      row.status,
      `D's job ${dSale}: its own message on partition ${pd} completed, yet the job is ${row.status}; ` +
        `only the stray message on partition ${pe} should have been ignored`,
    ).toBe('succeeded');
    expect(await ledgerOfJob(dSale)).toHaveLength(1);
    expect(await balanceOf(client, d.id)).toBe(8_000n);
  });
  it('a message rewritten to name none of its jobs completes, and the job is put back from the record', async () => {
    // No worker: the message waits, and is rewritten to carry nothing the worker can apply.
    for (const w of system.workers.keys()) await system.stopWorker(w);
    const e = await createSeller(client, 'E');
    ensureWorker();
    await fundSeller(client, e, 10_000);
    for (const w of system.workers.keys()) await system.stopWorker(w);
    const sale = await sell(e, 3_000, randomPhone());
    const message = rowOf(await jobRows([sale]), sale).queue_job_id;
    const queue = queueOf(partitionOf(e.id, PARTITIONS));
    await (await queue.getJob(message))?.updateData({ ids: [] });

    ensureWorker();
    await until('the rewritten message completed', async () => (await queue.getJobState(message)) === 'completed');
    expect(rowOf(await jobRows([sale]), sale).status).toBe('queued');
    // The worker's requeue (every 5 s, for jobs open over 10 s) adds the message again from the
    // jobs row: the sale is applied once, as recorded.
    await until(
      'the sale was put back and applied',
      async () => rowOf(await jobRows([sale]), sale).status === 'succeeded',
      40_000,
    );
    expect(await ledgerOfJob(sale)).toHaveLength(1);
    expect(await balanceOf(client, e.id)).toBe(7_000n);
    expect(await reconcileOf(client, e.id)).toMatchObject({ is_reconciled: true, chain_broken_at: null });
  });
});
