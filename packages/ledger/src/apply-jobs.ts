import { type Database, isFinalJobStatus } from '@cs/db';
import type { TransactionSql } from 'postgres';
import {
  type CreditRequestState,
  decideCreditRequest,
  decideSale,
  type Refusal,
  type SellerState,
} from './decisions.ts';

export type SaleJob = {
  id: string;
  type: 'charge_sale';
  sellerId: string;
  phoneNumber: string;
  amount: bigint;
};
export type ApprovalJob = {
  id: string;
  type: 'credit_approval';
  sellerId: string;
  creditRequestId: string;
  action: 'approve' | 'reject';
  processedBy: string;
};
export type LedgerJob = SaleJob | ApprovalJob;

export type FinalStatus = 'succeeded' | 'rejected' | 'failed';
export interface JobOutcome {
  jobId: string;
  status: FinalStatus;
  result: Record<string, unknown> | null;
  error: Refusal | null;
  /** True when the job had already taken effect earlier (a redelivery): nothing was written now. */
  replayed: boolean;
}

/**
 * Applies jobs in the given order in one transaction of its own, with the same rules as if each
 * had a transaction of its own: each job sees the balance its predecessors left, a refusal
 * changes nothing and does not undo the others. Writes are set-based, so a batch costs a handful
 * of statements whatever its size, sent in two groups (the locks and reads, then the writes),
 * each statement prepared once per connection. The transaction is postgres.js's `begin`: it fails
 * as soon as its connection closes (PostgreSQL restarting, or ending a transaction left idle too
 * long), where a query on a connection reserved by hand could wait for ever.
 *
 * Exactly-once in effect: the job rows are locked first and a job whose row is already final is
 * skipped (it ran before and committed; this is a redelivery). Should that gate ever be passed
 * twice, the ledger's unique job_id and credit_request_id refuse the second write.
 */
export async function applyJobs(db: Database, batch: readonly LedgerJob[]): Promise<JobOutcome[]> {
  if (batch.length === 0) return [];
  return db.$client.begin(async (tx) => {
    const decided = decide(batch, await lockState(tx, batch));
    const transactionIds = await writeAll(tx, decided);
    for (const outcome of decided.outcomes) {
      const transactionId = transactionIds.get(outcome.jobId);
      if (transactionId !== undefined && outcome.result) {
        outcome.result = { transaction_id: transactionId, ...outcome.result };
      }
    }
    return decided.outcomes;
  });
}

/** The transaction's connection; money columns come back as bigint (see `createDb`). */
type Connection = TransactionSql<{ bigint: bigint }>;

interface LockedState {
  sellers: Map<string, SellerState>;
  jobs: Map<string, { id: string; sellerId: string; status: string; result: unknown; error: unknown }>;
  requests: Map<string, CreditRequestState>;
}

/**
 * Locks and reads what the batch decides on, in one round trip. Statements sent
 * together run in the order sent, so locks are always taken jobs → sellers → credit requests,
 * each in id order: two transactions over overlapping rows can never deadlock. The locks are FOR NO KEY
 * UPDATE: they exclude every other writer of these rows, yet let the API insert a new job or
 * credit request that references a seller (a foreign key check takes KEY SHARE, which FOR
 * UPDATE would block until the batch commits).
 */
async function lockState(conn: Connection, batch: readonly LedgerJob[]): Promise<LockedState> {
  const sellerIds = uuidArray(batch.map((j) => j.sellerId));
  const requestIds = uuidArray(batch.flatMap((j) => (j.type === 'credit_approval' ? [j.creditRequestId] : [])));
  const [jobRows, sellerRows, requestRows] = await Promise.all([
    conn<Array<{ id: string; seller_id: string; status: string; result: unknown; error: unknown }>>`
      select id, seller_id, status, result, error from jobs
      where id = any(${uuidArray(batch.map((j) => j.id))}::uuid[]) order by id for no key update`,
    conn<Array<{ id: string; balance: bigint; is_active: boolean }>>`
      select id, credit_balance as balance, is_active from sellers
      where id = any(${sellerIds}::uuid[]) order by id for no key update`,
    conn<Array<{ id: string; seller_id: string; amount: bigint; status: CreditRequestState['status'] }>>`
      select id, seller_id, amount, status from credit_requests
      where id = any(${requestIds}::uuid[]) order by id for no key update`,
  ]);
  return {
    sellers: new Map(sellerRows.map((r) => [r.id, { id: r.id, balance: r.balance, isActive: r.is_active }])),
    jobs: new Map(
      jobRows.map((r) => [
        r.id,
        { id: r.id, sellerId: r.seller_id, status: r.status, result: r.result, error: r.error },
      ]),
    ),
    requests: new Map(
      requestRows.map((r) => [r.id, { id: r.id, sellerId: r.seller_id, amount: r.amount, status: r.status }]),
    ),
  };
}

interface Decided {
  outcomes: JobOutcome[];
  /** The outcomes to record on the jobs' rows: not replays, and not jobs without a row. */
  recorded: JobOutcome[];
  ledger: LedgerRow[];
  processed: ProcessedRequest[];
  balances: SellerState[];
}

/** Decides every job of the batch in order against the running state; no I/O. */
function decide(batch: readonly LedgerJob[], state: LockedState): Decided {
  const outcomes: JobOutcome[] = [];
  const ledger: LedgerRow[] = [];
  const processed: ProcessedRequest[] = [];
  const touchedSellers = new Set<string>();
  const unrecorded = new Set<string>();

  for (const job of batch) {
    const row = state.jobs.get(job.id);
    // A message whose job has no row, or another seller than its row, is not applied; a row that
    // is there stays unfinished, and is put back later from its own payload by the requeue.
    if (!row || row.sellerId !== job.sellerId) {
      unrecorded.add(job.id);
      outcomes.push(failure(job.id, 'unknown_job', 'The job has no record; it was not applied'));
      continue;
    }
    if (isFinalJobStatus(row.status)) {
      outcomes.push({
        jobId: job.id,
        status: row.status,
        result: (row.result as Record<string, unknown> | null) ?? null,
        error: (row.error as Refusal | null) ?? null,
        replayed: true,
      });
      continue;
    }
    const seller = state.sellers.get(job.sellerId);
    if (!seller) {
      outcomes.push(refused(job.id, { error: 'Seller not found', code: 'seller_not_found' }));
      continue;
    }
    if (job.type === 'charge_sale') {
      const decision = decideSale(seller, job.amount);
      if (!decision.ok) {
        outcomes.push(refused(job.id, decision.refusal));
        continue;
      }
      seller.balance = decision.newBalance;
      touchedSellers.add(seller.id);
      ledger.push({
        jobId: job.id,
        sellerId: seller.id,
        type: 'charge_sale',
        amount: -job.amount,
        balanceAfter: seller.balance,
        phoneNumber: job.phoneNumber,
        creditRequestId: null,
        description: `Charge of ${job.amount} rials to ${job.phoneNumber}`,
      });
      outcomes.push({
        jobId: job.id,
        status: 'succeeded',
        result: {
          seller_id: seller.id,
          phone_number: job.phoneNumber,
          amount: job.amount.toString(),
          new_balance: seller.balance.toString(),
        },
        error: null,
        replayed: false,
      });
    } else {
      const request = state.requests.get(job.creditRequestId);
      if (!request || request.sellerId !== seller.id) {
        outcomes.push(refused(job.id, { error: 'Credit request not found', code: 'credit_request_not_found' }));
        continue;
      }
      const decision = decideCreditRequest(seller, request, job.action);
      if (!decision.ok) {
        outcomes.push(refused(job.id, decision.refusal));
        continue;
      }
      request.status = decision.status;
      processed.push({ id: request.id, status: decision.status, processedBy: job.processedBy });
      const result: Record<string, unknown> = {
        credit_request_id: request.id,
        seller_id: seller.id,
        amount: request.amount.toString(),
        status: decision.status,
        new_balance: seller.balance.toString(),
      };
      if (decision.status === 'approved') {
        seller.balance = decision.newBalance;
        touchedSellers.add(seller.id);
        result.new_balance = seller.balance.toString();
        ledger.push({
          jobId: job.id,
          sellerId: seller.id,
          type: 'credit_increase',
          amount: request.amount,
          balanceAfter: seller.balance,
          phoneNumber: null,
          creditRequestId: request.id,
          description: `Credit request ${request.id} approved by ${job.processedBy}`,
        });
      }
      outcomes.push({ jobId: job.id, status: 'succeeded', result, error: null, replayed: false });
    }
  }
  return {
    outcomes,
    recorded: outcomes.filter((o) => !o.replayed && !unrecorded.has(o.jobId)),
    ledger,
    processed,
    balances: [...touchedSellers].map((id) => state.sellers.get(id) as SellerState),
  };
}

/** Sends the writes together; the ledger statement's answer maps jobs to their ledger rows. */
async function writeAll(conn: Connection, decided: Decided): Promise<Map<string, string>> {
  const [transactionIds] = await Promise.all([
    writeLedgerAndOutcomes(conn, decided.ledger, decided.recorded),
    writeBalances(conn, decided.balances),
    writePhoneTotals(conn, decided.ledger),
    writeProcessedRequests(conn, decided.processed),
  ]);
  return transactionIds;
}

/**
 * Records that jobs could not be carried out at all (nothing was applied), except those that
 * already reached a final state: a late failure must never overwrite a success.
 */
export async function recordFailure(
  db: Database,
  jobIds: string | string[],
  code: string,
  message: string,
): Promise<void> {
  const ids = uuidArray(Array.isArray(jobIds) ? jobIds : [jobIds]);
  if (ids === '{}') return;
  await db.$client`
    update jobs set status = 'failed', error = ${JSON.stringify({ error: message, code })}::jsonb, finished_at = now()
    where id = any(${ids}::uuid[]) and status in ('queued', 'processing')`;
}

/** A PostgreSQL array literal of distinct uuids, as one parameter: the statement text never changes. */
function uuidArray(ids: string[]): string {
  return `{${[...new Set(ids)].join(',')}}`;
}

interface LedgerRow {
  jobId: string;
  sellerId: string;
  type: 'charge_sale' | 'credit_increase';
  amount: bigint;
  balanceAfter: bigint;
  phoneNumber: string | null;
  creditRequestId: string | null;
  description: string;
}

interface ProcessedRequest {
  id: string;
  status: 'approved' | 'rejected';
  processedBy: string;
}

function refused(jobId: string, refusal: Refusal): JobOutcome {
  return { jobId, status: 'rejected', result: null, error: refusal, replayed: false };
}

function failure(jobId: string, code: string, message: string): JobOutcome {
  return { jobId, status: 'failed', result: null, error: { error: message, code }, replayed: false };
}

async function writeBalances(conn: Connection, changed: SellerState[]): Promise<void> {
  if (changed.length === 0) return;
  const rows = changed.map((s) => ({ id: s.id, balance: s.balance.toString() }));
  await conn`
    update sellers as s set credit_balance = v.balance::bigint
    from jsonb_to_recordset(${JSON.stringify(rows)}::jsonb) as v(id uuid, balance text)
    where s.id = v.id`;
}

/** One upsert per batch, totals summed per number first (a number may appear twice in a batch). */
async function writePhoneTotals(conn: Connection, ledger: LedgerRow[]): Promise<void> {
  const totals = new Map<string, { total: bigint; count: number }>();
  for (const row of ledger) {
    if (row.type !== 'charge_sale' || !row.phoneNumber) continue;
    const entry = totals.get(row.phoneNumber) ?? { total: 0n, count: 0 };
    entry.total += -row.amount;
    entry.count += 1;
    totals.set(row.phoneNumber, entry);
  }
  if (totals.size === 0) return;
  const rows = [...totals]
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([number, t]) => ({ number, total: t.total.toString(), count: t.count }));
  await conn`
    insert into phone_numbers (number, total_charged, charge_count)
    select v.number, v.total::bigint, v.count
    from jsonb_to_recordset(${JSON.stringify(rows)}::jsonb) as v(number text, total text, count bigint)
    on conflict (number) do update set
      total_charged = phone_numbers.total_charged + excluded.total_charged,
      charge_count = phone_numbers.charge_count + excluded.charge_count`;
}

async function writeProcessedRequests(conn: Connection, processed: ProcessedRequest[]): Promise<void> {
  if (processed.length === 0) return;
  await conn`
    update credit_requests as r set status = v.status, processed_by = v.processed_by, processed_at = now()
    from jsonb_to_recordset(${JSON.stringify(processed.map((p) => ({ id: p.id, status: p.status, processed_by: p.processedBy })))}::jsonb)
      as v(id uuid, status text, processed_by text)
    where r.id = v.id and r.status = 'pending'`;
}

/**
 * Inserts the ledger rows and records the jobs' outcomes in one statement (one round trip), the
 * new ledger ids going into the sales' results. Rows are inserted in the order given, so ids
 * follow the order in which the balances were decided, as the balance_after chain requires.
 * started_at is the transaction's start (now()), finished_at the clock when its writes were done:
 * two jobs of one seller whose spans overlap would mean two transactions ran at once.
 */
async function writeLedgerAndOutcomes(
  conn: Connection,
  ledger: LedgerRow[],
  outcomes: JobOutcome[],
): Promise<Map<string, string>> {
  if (outcomes.length === 0) return new Map();
  const rows = ledger.map((r) => ({
    seller_id: r.sellerId,
    type: r.type,
    amount: r.amount.toString(),
    balance_after: r.balanceAfter.toString(),
    job_id: r.jobId,
    credit_request_id: r.creditRequestId,
    phone_number: r.phoneNumber,
    description: r.description,
  }));
  const results = outcomes.map((o) => ({ id: o.jobId, status: o.status, result: o.result, error: o.error }));
  const recorded = (await conn`
    with ledger as (
      insert into transactions (seller_id, type, amount, balance_after, job_id, credit_request_id, phone_number, description)
      select (e.row->>'seller_id')::uuid, e.row->>'type', (e.row->>'amount')::bigint, (e.row->>'balance_after')::bigint,
             (e.row->>'job_id')::uuid, (e.row->>'credit_request_id')::uuid, e.row->>'phone_number', e.row->>'description'
      from jsonb_array_elements(${JSON.stringify(rows)}::jsonb) with ordinality as e(row, ord)
      order by e.ord
      returning id, job_id
    ), clock as (select clock_timestamp() as ts)
    update jobs as j set status = v.status,
      result = case when ledger.id is null then v.result
                    else jsonb_build_object('transaction_id', ledger.id::text) || v.result end,
      error = v.error, started_at = now(), finished_at = clock.ts
    from jsonb_to_recordset(${JSON.stringify(results)}::jsonb) as v(id uuid, status text, result jsonb, error jsonb)
      left join ledger on ledger.job_id = v.id
      cross join clock
    where j.id = v.id
    returning j.id as job_id, ledger.id::text as transaction_id`) as unknown as Array<{
    job_id: string;
    transaction_id: string | null;
  }>;
  return new Map(recorded.flatMap((r) => (r.transaction_id ? [[r.job_id, r.transaction_id] as const] : [])));
}
