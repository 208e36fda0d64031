import { type ChildProcess, execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { pathToFileURL } from 'node:url';
import { promisify } from 'node:util';
import { migrateDatabase, urlAsRole } from '@cs/db';
import { partitionOf } from '@cs/queue';
import type postgres from 'postgres';
import { expect } from 'vitest';
import { phoneFor } from './concurrency.ts';
import { testSql } from './db.ts';
import { createSeller, fundSeller, inParallel, type TestSeller } from './factories.ts';
import { Client } from './http.ts';
import { ADMIN_TOKEN, freePort, System } from './system.ts';

/** The deployment's default partition count; the fault tests run with it. */
export const PARTITIONS = 16;

type Sql = ReturnType<typeof postgres>;
const execFileAsync = promisify(execFile);

interface LocalServices {
  postgresBinDir(): string | null;
  waitForPort(port: number, options?: { timeoutMs?: number; up?: boolean }): Promise<void>;
  startPostgres(options: { port: number; dir: string }): Promise<{ url: string }>;
  startRedis(options: { port: number; dir: string; appendonly?: boolean }): Promise<{
    url: string;
    start(): Promise<void>;
    stop(): Promise<void>;
  }>;
}

// A plain JavaScript module shared with the start scripts; loaded by URL so TypeScript takes the
// interface above for it.
const localServices = (): Promise<LocalServices> =>
  import(pathToFileURL(join(import.meta.dirname, '..', '..', 'scripts', 'local-services.mjs')).href);

export interface ThrowawayPostgres {
  /** The migrated application database. */
  /** The application role's URL, for the processes. */
  databaseUrl: string;
  /** The owner's URL, for the test's own SQL. */
  ownerUrl: string;
  /** A clean shutdown: connections are closed with admin_shutdown. */
  stop(): Promise<void>;
  /** An immediate shutdown: every backend quits at once, no checkpoint; crash recovery on start. */
  crash(): Promise<void>;
  start(): Promise<void>;
  remove(): Promise<void>;
}

/**
 * A PostgreSQL server of the test's own, with a migrated database, that it may stop at will.
 * Stopping and starting run pg_ctl without blocking the test's event loop, so the requests in
 * flight keep being timed truly while the server goes down and comes back.
 */
export async function throwawayPostgres(): Promise<ThrowawayPostgres> {
  const services = await localServices();
  const dir = mkdtempSync(join(tmpdir(), 'cs-fault-pg-'));
  const port = await freePort();
  const server = await services.startPostgres({ port, dir });
  const url = new URL(server.url);
  url.pathname = '/charge_sales';
  const applicationUrl = urlAsRole(url.toString(), 'cs_app', 'cs_app');
  const pgCtl = join(services.postgresBinDir() ?? '', 'pg_ctl');
  const asPostgres = (args: string[]) =>
    process.getuid?.() === 0
      ? execFileAsync('runuser', ['-u', 'postgres', '--', pgCtl, ...args])
      : execFileAsync(pgCtl, args);
  const stop = async (mode: 'fast' | 'immediate') => {
    await asPostgres(['-D', dir, '-w', '-t', '30', '-m', mode, 'stop']).catch(() => {});
    await services.waitForPort(port, { up: false });
  };
  try {
    await migrateDatabase(url.toString(), { applicationUrl: applicationUrl.toString() });
  } catch (error) {
    await stop('fast');
    rmSync(dir, { recursive: true, force: true });
    throw error;
  }
  return {
    databaseUrl: applicationUrl,
    ownerUrl: url.toString(),
    stop: () => stop('fast'),
    crash: () => stop('immediate'),
    start: async () => {
      await asPostgres([
        '-D',
        dir,
        '-w',
        '-t',
        '30',
        '-l',
        join(dir, 'server.log'),
        '-o',
        `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200`,
        'start',
      ]);
      await services.waitForPort(port);
    },
    remove: async () => {
      await stop('fast');
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

export interface ThrowawayRedis {
  url: string;
  /** SIGKILL: whatever was not persisted is gone. */
  stop(): Promise<void>;
  start(): Promise<void>;
  remove(): Promise<void>;
}

/** A Redis server of the test's own; with `appendonly` it keeps an AOF fsynced every second. */
export async function throwawayRedis({ appendonly = false } = {}): Promise<ThrowawayRedis> {
  const dir = mkdtempSync(join(tmpdir(), 'cs-fault-redis-'));
  const server = await (await localServices()).startRedis({ port: await freePort(), dir, appendonly });
  return {
    url: server.url,
    stop: () => server.stop(),
    start: () => server.start(),
    remove: async () => {
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/**
 * Runs every clean-up step even when one fails, so that no throwaway server or process outlives
 * the test file; the first failure is reported after all have run.
 */
export async function cleanUp(...steps: Array<() => Promise<unknown> | undefined>): Promise<void> {
  const failures: unknown[] = [];
  for (const step of steps) {
    try {
      await step();
    } catch (error) {
      failures.push(error);
    }
  }
  if (failures.length > 0) throw failures[0];
}

/** What one bounded request came to: an HTTP status, or that it timed out or could not connect. */
export interface Answer {
  status: number | 'timeout' | 'network_error';
  body: any;
  /** When the request was sent and how long it took, in ms (Date.now clock). */
  sentAt: number;
  tookMs: number;
}

/** One HTTP request that cannot hang: after `timeoutMs` it is abandoned and reported as such. */
export async function boundedRequest(
  baseUrl: string,
  method: string,
  path: string,
  {
    token,
    body,
    headers: extraHeaders = {},
    timeoutMs = 5000,
  }: { token?: string; body?: unknown; headers?: Record<string, string>; timeoutMs?: number } = {},
): Promise<Answer> {
  const sentAt = Date.now();
  const headers: Record<string, string> = { ...extraHeaders };
  if (token) headers.authorization = `Bearer ${token}`;
  if (body !== undefined) headers['content-type'] = 'application/json';
  try {
    const res = await fetch(`${baseUrl}${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(timeoutMs),
    });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {}
    return { status: res.status, body: parsed, sentAt, tookMs: Date.now() - sentAt };
  } catch (error) {
    const name = (error as Error).name;
    const status = name === 'TimeoutError' || name === 'AbortError' ? 'timeout' : 'network_error';
    return { status, body: String(error), sentAt, tookMs: Date.now() - sentAt };
  }
}

/**
 * Creates sellers until every partition has `perPartition` of them, so that traffic reaches every
 * partition and a fault on any partition shows. Extra sellers made on the way are not returned.
 */
export async function sellersOnEveryPartition(client: Client, perPartition = 2): Promise<TestSeller[]> {
  const chosen: TestSeller[] = [];
  const count = new Array<number>(PARTITIONS).fill(0);
  while (chosen.length < PARTITIONS * perPartition) {
    const made = await inParallel(Array.from({ length: PARTITIONS }), 8, () => createSeller(client, 'Fault'));
    for (const seller of made) {
      const p = partitionOf(seller.id, PARTITIONS);
      if ((count[p] ?? 0) < perPartition) {
        count[p] = (count[p] ?? 0) + 1;
        chosen.push(seller);
      }
    }
  }
  return chosen;
}

export async function fundAll(client: Client, sellers: TestSeller[], amount: bigint): Promise<void> {
  await inParallel(sellers, 8, (seller) => fundSeller(client, seller, amount.toString()));
}

/** One sale request the traffic sent, under an Idempotency-Key of its own, and what came of it. */
export interface SaleRequest {
  key: string;
  sellerId: string;
  amount: bigint;
  phone: string;
  answer: Answer;
}

/**
 * Sales sent by `concurrency` clients, one after another each, each request bounded by a timeout.
 * Runs until `count` sales were sent or `stop()` is called; every request and answer is kept.
 * Each request carries an Idempotency-Key of its own, so that the job of a request whose answer
 * never came (a timeout) can still be told apart in the database.
 */
export class SaleTraffic {
  private static runs = 0;
  readonly requests: SaleRequest[] = [];
  private readonly run = `${process.pid}-${Date.now().toString(36)}-${++SaleTraffic.runs}`;
  private sent = 0;
  private stopped = false;
  readonly done: Promise<void>;

  constructor(
    private readonly baseUrl: string,
    private readonly sellers: TestSeller[],
    { count = Number.POSITIVE_INFINITY, concurrency = 16, timeoutMs = 5000 } = {},
  ) {
    this.done = Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (!this.stopped && this.sent < count) {
          const i = this.sent++;
          const seller = this.sellers[i % this.sellers.length] as TestSeller;
          // Amounts vary, and sellers are funded for fewer sales than they get, so some end
          // rejected for the balance: both outcomes have to survive the fault.
          const amount = BigInt(1000 * (1 + (i % 9)));
          const key = `${this.run}-${i}`;
          const phone = phoneFor(i);
          const answer = await boundedRequest(this.baseUrl, 'POST', '/api/charge-sales', {
            token: seller.apiKey,
            headers: { 'idempotency-key': key },
            body: { seller_id: seller.id, phone_number: phone, amount: amount.toString() },
            timeoutMs,
          });
          this.requests.push({ key, sellerId: seller.id, amount, phone, answer });
          // A refusal comes back at once; do not spin on it.
          if (answer.status !== 202) await sleep(50);
        }
      }),
    ).then(() => {});
  }

  stop(): Promise<void> {
    this.stopped = true;
    return this.done;
  }

  get answers(): Answer[] {
    return this.requests.map((r) => r.answer);
  }

  /** The sales answered 202, with their job ids. */
  get accepted(): Array<SaleRequest & { jobId: string }> {
    return this.requests.flatMap((r) => (r.answer.status === 202 ? [{ ...r, jobId: r.answer.body.job_id }] : []));
  }

  /**
   * The answers by when they were sent, one line per `bucketMs` from `since`: e.g.
   * `+1.0s 202×40 503×3 (slowest 120 ms)`. For a failing test's message and for the report.
   */
  timeline(since: number, bucketMs = 1000): string {
    const buckets = new Map<number, Answer[]>();
    for (const a of this.answers) {
      const b = Math.floor((a.sentAt - since) / bucketMs);
      buckets.set(b, [...(buckets.get(b) ?? []), a]);
    }
    return [...buckets.keys()]
      .sort((a, b) => a - b)
      .map((b) => {
        const answers = buckets.get(b) ?? [];
        const counts = Object.entries(this.tally(answers))
          .map(([status, n]) => `${status}×${n}`)
          .join(' ');
        const slowest = Math.max(...answers.map((a) => a.tookMs));
        return `${b >= 0 ? '+' : ''}${((b * bucketMs) / 1000).toFixed(1)}s ${counts} (slowest ${slowest} ms)`;
      })
      .join('\n');
  }

  /** How many answers had each status, e.g. `{ 202: 900, 503: 40 }`. */
  tally(answers: Answer[] = this.answers): Record<string, number> {
    const tally: Record<string, number> = {};
    for (const a of answers) tally[String(a.status)] = (tally[String(a.status)] ?? 0) + 1;
    return tally;
  }
}

/** Polls until `check` holds; fails with `what` when it does not within `timeoutMs`. */
export async function until(what: string, check: () => Promise<boolean> | boolean, timeoutMs = 30_000, everyMs = 100) {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for: ${what}`);
    await sleep(everyMs);
  }
}

/**
 * Waits until every job of the given sellers is final in PostgreSQL (the accepted ones and any a
 * timed-out request may have left), printing progress while it waits.
 */
export async function waitAllFinal(sql: Sql, sellers: TestSeller[], timeoutMs = 90_000): Promise<void> {
  const ids = sellers.map((s) => s.id);
  const started = Date.now();
  let lastPrint = started;
  await until(
    'every job of the sellers final',
    async () => {
      const [row] = await sql<{ open: number; all: number }[]>`
        select count(*) filter (where finished_at is null)::int as open, count(*)::int as all
        from jobs where seller_id = any(${ids}::uuid[])`;
      const open = row?.open ?? 0;
      if (open > 0 && Date.now() - lastPrint > 5000) {
        lastPrint = Date.now();
        console.log(`  ${open} of ${row?.all} jobs not final after ${((Date.now() - started) / 1000).toFixed(0)} s`);
      }
      return open === 0;
    },
    timeoutMs,
    250,
  );
}

export interface MoneyAudit {
  /** Sales answered 202, by how their job ended. */
  succeeded: number;
  rejected: number;
  failed: number;
  /** Requests whose answer never came (timeout, connection error), and how many of them made a job. */
  unanswered: number;
  unansweredWithJob: number;
}

/**
 * The money invariants after a fault, checked against PostgreSQL and through the API:
 * - every job is final; a sale job has a ledger row iff it succeeded, exactly one, for its amount
 *   (nothing lost, nothing doubled);
 * - every sale answered 202 has its job; a request answered with an error left no job that could
 *   take effect (none, or one closed as failed); a request left unanswered may have a job, which
 *   then obeys the same rules;
 * - the sellers' ledgers hold nothing else but their one funding credit;
 * - each balance is the funding minus the succeeded sales, equals the sum of its ledger, never
 *   below zero, and the API's reconcile agrees.
 */
export async function auditMoney(
  sql: Sql,
  client: Client,
  { sellers, requests, funding }: { sellers: TestSeller[]; requests: SaleRequest[]; funding: bigint },
): Promise<MoneyAudit> {
  const sellerIds = sellers.map((s) => s.id);
  const jobs = await sql<{ id: string; key: string | null; status: string; amount: string }[]>`
    select id, idempotency_key as key, status, amount::text as amount
    from jobs where seller_id = any(${sellerIds}::uuid[]) and type = 'charge_sale'`;
  const jobOfKey = new Map(jobs.map((j) => [j.key, j]));
  const ledger = await sql<{ job_id: string; type: string; rows: number; amount: bigint }[]>`
    select job_id, min(type) as type, count(*)::int as rows, sum(amount)::bigint as amount
    from transactions where seller_id = any(${sellerIds}::uuid[]) group by job_id`;
  const ledgerOf = new Map(ledger.map((r) => [r.job_id, r]));

  expect(
    ledger.filter((r) => r.rows !== 1),
    'no job has more than one ledger row',
  ).toEqual([]);
  expect(
    jobs.filter((j) => j.status === 'queued' || j.status === 'processing' || j.status === 'delivering'),
    'every job final',
  ).toEqual([]);
  const inconsistent = jobs.filter((j) => {
    const row = ledgerOf.get(j.id);
    return j.status === 'succeeded' ? row?.amount !== -BigInt(j.amount) : row !== undefined;
  });
  expect(inconsistent.slice(0, 10), 'a sale job has one ledger row, for its amount, iff it succeeded').toEqual([]);
  const saleJobIds = new Set(jobs.map((j) => j.id));
  const others = ledger.filter((r) => !saleJobIds.has(r.job_id));
  expect(
    others.filter((r) => r.type !== 'credit_increase'),
    'no ledger row without its sale job',
  ).toEqual([]);
  expect(others, 'one funding credit per seller').toHaveLength(sellers.length);

  const audit: MoneyAudit = { succeeded: 0, rejected: 0, failed: 0, unanswered: 0, unansweredWithJob: 0 };
  const wrong: string[] = [];
  for (const request of requests) {
    const job = jobOfKey.get(request.key);
    const status = request.answer.status;
    if (status === 202) {
      if (!job || job.id !== request.answer.body.job_id) {
        wrong.push(`${request.key}: 202 for ${request.answer.body.job_id}`);
      } else if (job.status === 'succeeded') audit.succeeded++;
      else if (job.status === 'rejected') audit.rejected++;
      else audit.failed++;
    } else if (typeof status === 'number') {
      if (job && job.status !== 'failed') wrong.push(`${request.key}: answered ${status} but its job ${job.status}`);
    } else {
      audit.unanswered++;
      if (job) audit.unansweredWithJob++;
    }
  }
  expect(wrong.slice(0, 10), 'each answer agrees with what happened').toEqual([]);
  const keys = new Set(requests.map((r) => r.key));
  expect(
    jobs.filter((j) => !keys.has(j.key ?? '')).map((j) => j.id),
    'no sale job that no request asked for',
  ).toEqual([]);

  const spent = new Map<string, bigint>();
  const sellerOfKey = new Map(requests.map((r) => [r.key, r.sellerId]));
  for (const j of jobs) {
    if (j.status !== 'succeeded') continue;
    const seller = sellerOfKey.get(j.key ?? '') ?? '';
    spent.set(seller, (spent.get(seller) ?? 0n) + BigInt(j.amount));
  }
  const balances = await sql<{ id: string; balance: bigint; ledger_sum: bigint; broken: number }[]>`
    with chain as (
      select seller_id, amount, balance_after,
        coalesce(lag(balance_after) over (partition by seller_id order by id), 0) + amount <> balance_after as broken
      from transactions where seller_id = any(${sellerIds}::uuid[]))
    select s.id, s.credit_balance as balance, coalesce(sum(c.amount), 0)::bigint as ledger_sum,
      count(*) filter (where c.broken)::int as broken
    from sellers s left join chain c on c.seller_id = s.id
    where s.id = any(${sellerIds}::uuid[]) group by s.id, s.credit_balance`;
  expect(balances).toHaveLength(sellers.length);
  for (const b of balances) {
    const expected = funding - (spent.get(b.id) ?? 0n);
    expect({ seller: b.id, balance: b.balance, ledger: b.ledger_sum, broken: b.broken }).toEqual({
      seller: b.id,
      balance: expected,
      ledger: expected,
      broken: 0,
    });
    expect(b.balance >= 0n).toBe(true);
  }

  const reconciled = await inParallel(sellers, 8, (s) =>
    client.get(`/api/sellers/${s.id}/reconcile`, { token: ADMIN_TOKEN }),
  );
  for (const r of reconciled) expect(r.body).toMatchObject({ is_reconciled: true, difference: '0' });
  return audit;
}

/**
 * Stands in for the deployment's restart policy: a worker process that dies on its own is
 * replaced. The deaths are counted, so a test can still insist there were none.
 */
export function superviseWorkers(system: System, extraEnv: () => Record<string, string> = () => ({})) {
  const deaths: string[] = [];
  let active = true;
  const watch = (worker: ChildProcess) => {
    worker.once('exit', (code, signal) => {
      if (!active) return;
      deaths.push(`worker ${worker.pid} exited (${signal ?? code})`);
      watch(system.startWorker(extraEnv()));
    });
  };
  for (const worker of system.workers) if (worker.exitCode === null && worker.signalCode === null) watch(worker);
  return {
    deaths,
    stop: () => {
      active = false;
    },
  };
}

/** The partitions a worker process reports on its health endpoint. */
export async function partitionsOf(healthPort: number): Promise<number[]> {
  const res = await fetch(`http://127.0.0.1:${healthPort}/`, { signal: AbortSignal.timeout(2000) });
  return ((await res.json()) as { partitions: number[] }).partitions;
}

/**
 * Waits until the given workers hold every partition between them, each partition once, and each
 * worker no more than its fair share: the partitions have stopped moving.
 */
export async function waitPartitionsSettled(healthPorts: number[], timeoutMs = 30_000): Promise<number[][]> {
  let owned: number[][] = [];
  await until(
    'every partition owned by exactly one worker',
    async () => {
      owned = await Promise.all(healthPorts.map((p) => partitionsOf(p).catch(() => [])));
      const all = owned.flat();
      const fairShare = Math.ceil(PARTITIONS / healthPorts.length);
      return (
        all.length === PARTITIONS &&
        new Set(all).size === PARTITIONS &&
        owned.every((o) => o.length > 0 && o.length <= fairShare)
      );
    },
    timeoutMs,
    200,
  );
  return owned;
}

/**
 * For each partition, how long after `since` (ms, Date.now clock) the first job on it committed:
 * how long it stood still. A partition with nothing committed after `since` is reported as Infinity.
 */
export async function firstCommitAfter(
  sql: Sql,
  sellers: TestSeller[],
  partitions: number[],
  since: number,
): Promise<Map<number, number>> {
  const rows = await sql<{ partition: number; first: Date }[]>`
    select partition, min(finished_at) as first from jobs
    where seller_id = any(${sellers.map((s) => s.id)}::uuid[]) and partition = any(${partitions}::int[])
      and finished_at > ${new Date(since)}
    group by partition`;
  const byPartition = new Map(rows.map((r) => [r.partition, r.first.getTime() - since]));
  return new Map(partitions.map((p) => [p, byPartition.get(p) ?? Number.POSITIVE_INFINITY]));
}

/**
 * Waits until the worker reporting on `healthPort` consumes every partition, and every sale of
 * `sellers` submitted before `since` is final: the jobs a paused worker held were applied by
 * another while it slept.
 */
export async function waitTakenOver(
  sql: Sql,
  healthPort: number,
  sellers: TestSeller[],
  since: number,
  timeoutMs = 20_000,
): Promise<void> {
  await until(
    'the other worker consuming every partition',
    async () => (await partitionsOf(healthPort)).length === PARTITIONS,
    timeoutMs,
  );
  await until(
    "the sales on the paused worker's partitions before the pause final",
    async () => {
      const [row] = await sql<{ open: number }[]>`
        select count(*)::int as open from jobs
        where seller_id = any(${sellers.map((s) => s.id)}::uuid[])
          and submitted_at < ${new Date(since)} and status in ('queued', 'processing')`;
      return row?.open === 0;
    },
    timeoutMs,
    200,
  );
}

/**
 * Holds the sellers' rows locked the way a long-running transaction would (FOR NO KEY UPDATE:
 * it blocks the worker's FOR UPDATE, not the API's foreign-key checks), so accepted sales pile
 * up in flight. `release()` commits and lets the workers go on.
 */
export async function holdSellers(sql: Sql, sellers: TestSeller[]): Promise<{ release(): Promise<void> }> {
  let release: () => void = () => {};
  const released = new Promise<void>((resolve) => {
    release = resolve;
  });
  let locked: () => void = () => {};
  const isLocked = new Promise<void>((resolve) => {
    locked = resolve;
  });
  const transaction = sql.begin(async (tx) => {
    // In id order, as the workers lock sellers: locked in another order, a batch holding one of
    // them while waiting for another would deadlock with this transaction.
    await tx`select id from sellers where id = any(${sellers.map((s) => s.id)}::uuid[]) order by id for no key update`;
    locked();
    await released;
  });
  await Promise.race([isLocked, transaction]);
  return {
    release: async () => {
      release();
      await transaction;
    },
  };
}

/** Watches what one process writes from now on: `seen()` is true once `pattern` appeared. */
export function watchOutput(child: ChildProcess, pattern: RegExp): { seen(): boolean } {
  let seen = false;
  const look = (chunk: Buffer) => {
    if (pattern.test(chunk.toString())) seen = true;
  };
  child.stdout?.on('data', look);
  child.stderr?.on('data', look);
  return { seen: () => seen };
}

/**
 * An API and `workers` worker processes on a PostgreSQL of their own (fault tests hold rows and
 * pause processes, and need connections no other run competes for); each worker reports its
 * partitions on a health port.
 */
export interface WorkerFleet {
  postgres: ThrowawayPostgres;
  sql: Sql;
  system: System;
  client: Client;
  healthPorts: number[];
  stop(): Promise<void>;
}

export async function startWorkerFleet(workers: number): Promise<WorkerFleet> {
  const postgres = await throwawayPostgres();
  const sql = testSql(postgres.ownerUrl);
  const system = await System.start({ workers: 0, databaseUrl: postgres.databaseUrl });
  const healthPorts: number[] = [];
  for (let i = 0; i < workers; i++) {
    const port = await freePort();
    healthPorts.push(port);
    system.startWorker({ WORKER_HEALTH_PORT: String(port) });
  }
  return {
    postgres,
    sql,
    system,
    client: new Client(system.baseUrl),
    healthPorts,
    stop: () =>
      cleanUp(
        () => system.stop(),
        () => sql.end({ timeout: 1 }),
        () => postgres.remove(),
      ),
  };
}
