import {
  type Actor,
  type ApprovalAction,
  type AuditEntry,
  arrayLiteral,
  auditRow,
  type Database,
  deliveringJobStatus,
  insertWebhookEvents,
  isFinalJobStatus,
  type JobFailureCode,
  type JobType,
  type TransactionType,
  type WebhookEvent,
} from '@cs/db';
import type { TransactionSql } from 'postgres';
import { CHAIN_START, type ChainedRow, sealRow } from './chain.ts';
import { type CreditRequestState, decideCreditRequest, decideSale, type SellerState } from './decisions.ts';
import { type Refusal, refuse } from './refusals.ts';

/** What an approval by the bootstrap admin (ADMIN_TOKEN) records as its operator. */
export const BOOTSTRAP_NAME = 'bootstrap';

/**
 * What a queue message names: a job, and the partition whose queue carried it. Nothing else a
 * message says is trusted; what the job does is read from its row.
 */
export interface JobRef {
  id: string;
  partition: number;
}

export type FinalStatus = 'succeeded' | 'rejected' | 'failed';
/** What a batch leaves a job in: final, or debited and `delivering` (a sale, whose top-up is next). */
export type BatchStatus = FinalStatus | typeof deliveringJobStatus;
/** Why a job did not succeed: a business refusal, or a failure (nothing applied, ever). */
export type JobError = Refusal | { error: string; code: JobFailureCode };
export interface JobOutcome {
  jobId: string;
  /** The job's type as its row records it; absent when no row was found. */
  type?: JobType;
  status: BatchStatus;
  result: Record<string, unknown> | null;
  error: JobError | null;
  /** True when the job had already taken effect earlier (a redelivery): nothing was written now. */
  replayed: boolean;
  /**
   * True when nothing was decided: the message named no job of its partition. The row, if any,
   * is left as it was, to be applied from its own partition's queue.
   */
  ignored?: boolean;
  /** A sale debited now: its top-up, for the delivery stage to send (see `NewDelivery`). */
  delivery?: NewDelivery;
}

/** A top-up to deliver: debited by the batch, and handed to the delivery stage of its process. */
export interface NewDelivery {
  jobId: string;
  sellerId: string;
  partition: number;
  saleTransactionId: string;
  phoneNumber: string;
  amount: bigint;
}

/**
 * Applies the named jobs in submission order (ids are UUIDv7) in one transaction of its own, with
 * the same rules as if each had a transaction of its own: each job sees the balance its
 * predecessors left, a refusal changes nothing and does not undo the others. Every fact a job
 * applies (type, seller, amount, phone, credit request, action, operator) is read from the `jobs`
 * row the transaction locks; a queue message only names the job. Writes are set-based, so a batch
 * costs a handful of statements whatever its size, sent in two groups (the locks and reads, then
 * the writes), each statement prepared once per connection. The transaction is postgres.js's
 * `begin`: it fails as soon as its connection closes (PostgreSQL restarting, or ending a
 * transaction left idle too long), where a query on a connection reserved by hand could wait for
 * ever.
 *
 * Exactly-once in effect: the job rows are locked first and a job whose row is already final is
 * skipped (it ran before and committed; this is a redelivery). Should that gate ever be passed
 * twice, the ledger's unique job_id and credit_request_id refuse the second write.
 *
 * Each ledger row is sealed into its seller's hash chain with `ledgerKey` (see chain.ts).
 */
export async function applyJobs(
  db: Database,
  refs: readonly JobRef[],
  ledgerKey: string,
  rules: Rules = {},
): Promise<JobOutcome[]> {
  if (refs.length === 0) return [];
  const ordered = [...refs].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  return db.$client.begin(async (tx) => {
    const { state, lockedAt } = await lockState(tx, ordered);
    await lockDeliveries(tx, state);
    const decided = decide(ordered, state, ledgerKey, rules);
    await writeAll(tx, decided, lockedAt, rules);
    return decided.outcomes;
  });
}

/** The rules a deployment sets: CREDIT_SECOND_APPROVAL_ABOVE, and how its top-ups are delivered. */
export interface Rules {
  /** Credit requests above this many rials need two different operators. */
  secondApprovalAbove?: bigint | undefined;
  /** The provider a debited sale's top-up goes to (PROVIDER), recorded on its delivery. */
  provider?: string;
  /**
   * How long the committing process holds the sales it debits (DELIVERY_LEASE_MS): it sends them
   * at once, and another process takes them over only if it dies.
   */
  deliveryLeaseMs?: number;
}

/** The transaction's connection; money columns come back as bigint (see `createDb`). */
type Connection = TransactionSql<{ bigint: bigint }>;

/** A locked job row, as `decide` reads it. */
export type JobRow = {
  id: string;
  type: JobType;
  seller_id: string;
  partition: number;
  status: string;
  result: Record<string, unknown> | null;
  error: JobError | null;
  /** As text: the pool leaves timestamps as PostgreSQL writes them (drizzle's setting). */
  submitted_at: string;
  amount: bigint | null;
  phone_number: string | null;
  credit_request_id: string | null;
  action: ApprovalAction | null;
  processed_by: string | null;
  /** Who asked (an operator's id; null for bootstrap) and from where: for the approval's audit row. */
  actor_id: string | null;
  actor_ip: string | null;
};

/** A locked seller: its state, and the head its hash chain ends at. */
export type LockedSeller = SellerState & { head: string };

export interface LockedState {
  jobs: Map<string, JobRow>;
  sellers: Map<string, LockedSeller>;
  requests: Map<string, CreditRequestState & { requestedAt: Date }>;
  /** The deliveries of the locked jobs that are `delivering` (read only when there are some). */
  deliveries: Map<string, DeliveryRow>;
  /** Ledger ids drawn for this transaction, in order: at most one row per job. */
  ledgerIds: string[];
}

/** A locked delivery, as a refund reads it. */
export type DeliveryRow = {
  job_id: string;
  status: string;
  provider: string;
  provider_reason: string | null;
  attempts: number;
  sale_transaction_id: bigint;
  resolution: string | null;
};

/**
 * Locks and reads what the batch decides on, in one round trip, and `lockedAt`: the server's clock
 * once every lock is held, read by a statement that runs after the lock statements. Statements sent together run in
 * the order sent, so locks are always taken jobs → sellers → credit requests, each in id order:
 * two transactions over overlapping rows can never deadlock. The sellers and credit requests are
 * those the locked job rows name (a job's facts never change once recorded). The locks are FOR NO
 * KEY UPDATE: they exclude every other writer of these rows, yet let the API insert a new credit
 * request of a locked seller (its foreign key check takes KEY SHARE, which FOR UPDATE would block
 * until the batch commits). A new job takes no lock on its seller at all (jobs_name_their_seller).
 *
 * The ledger ids are drawn last, after the seller locks: a seller's rows get ids in the order they
 * are applied, as its chain needs, even if two transactions ever wrote one seller.
 */
async function lockState(conn: Connection, refs: readonly JobRef[]): Promise<{ state: LockedState; lockedAt: string }> {
  const ids = arrayLiteral(refs.map((r) => r.id));
  const [jobRows, sellerRows, requestRows, idRows, [clock]] = await Promise.all([
    conn<JobRow[]>`
      select id, type, seller_id, partition, status, result, error, submitted_at, amount, phone_number, credit_request_id,
             action, processed_by, actor_id, actor_ip
      from jobs where id = any(${ids}::uuid[]) order by id for no key update`,
    conn<Array<{ id: string; balance: bigint; is_active: boolean; ledger_head: string | null }>>`
      select id, credit_balance as balance, is_active, ledger_head from sellers
      where id in (select seller_id from jobs where id = any(${ids}::uuid[]))
      order by id for no key update of sellers`,
    conn<
      Array<{
        id: string;
        seller_id: string;
        amount: bigint;
        status: CreditRequestState['status'];
        first_approved_by: string | null;
        requested_at: string;
      }>
    >`
      select id, seller_id, amount, status, first_approved_by, requested_at from credit_requests
      where id in (select credit_request_id from jobs where id = any(${ids}::uuid[]))
      order by id for no key update of credit_requests`,
    conn<Array<{ id: string }>>`
      select nextval('transactions_id_seq')::text as id from generate_series(1, ${refs.length}::int)`,
    // As text: a Date would cut the microseconds, and spans that touch must not seem to overlap.
    conn<Array<{ at: string }>>`select clock_timestamp()::text as at`,
  ]);
  const state: LockedState = {
    jobs: new Map(jobRows.map((r) => [r.id, r])),
    sellers: new Map(
      sellerRows.map((r) => [
        r.id,
        { id: r.id, balance: r.balance, isActive: r.is_active, head: r.ledger_head ?? CHAIN_START },
      ]),
    ),
    requests: new Map(
      requestRows.map((r) => [
        r.id,
        {
          id: r.id,
          sellerId: r.seller_id,
          amount: r.amount,
          status: r.status,
          firstApprovedBy: r.first_approved_by,
          requestedAt: new Date(r.requested_at),
        },
      ]),
    ),
    deliveries: new Map(),
    ledgerIds: idRows.map((r) => r.id),
  };
  return { state, lockedAt: clock?.at as string };
}

/**
 * Locks the deliveries of jobs that are already `delivering`: a refund's message names its sale's
 * job. A second round trip, taken only then; an ordinary batch of new sales and approvals skips it.
 * After the job locks, like every lock of the batch, so the order stays jobs first.
 */
async function lockDeliveries(conn: Connection, state: LockedState): Promise<void> {
  const ids = [...state.jobs.values()].filter((j) => j.status === deliveringJobStatus).map((j) => j.id);
  if (ids.length === 0) return;
  const rows = await conn<DeliveryRow[]>`
    select job_id, status, provider, provider_reason, attempts, sale_transaction_id, resolution from deliveries
    where job_id = any(${arrayLiteral(ids)}::uuid[]) order by job_id for no key update`;
  for (const row of rows) state.deliveries.set(row.job_id, row);
}

export interface Decided {
  outcomes: JobOutcome[];
  /** The outcomes to record on the jobs' rows: not replays, and not jobs left alone. */
  recorded: JobOutcome[];
  ledger: LedgerRow[];
  processed: ProcessedRequest[];
  /** The audit rows of the approvals and rejections decided: written with their effect. */
  audits: AuditEntry[];
  balances: Array<LockedSeller>;
  /** Sales debited now: their hold is written with their debits, and the stage sends them. */
  newDeliveries: NewDelivery[];
  /** Deliveries refunded now, and the refund rows that gave their sales back. */
  refunded: Array<{ jobId: string; refundTransactionId: string }>;
  /** What the sellers' webhooks are told, written with the effects. */
  webhookEvents: WebhookEvent[];
}

/**
 * Decides every job of the batch in order against the running state; no I/O (exported for the
 * unit tests: it is where a batch's money rules meet).
 */
export function decide(refs: readonly JobRef[], state: LockedState, ledgerKey: string, rules: Rules = {}): Decided {
  const outcomes: JobOutcome[] = [];
  const ledger: LedgerRow[] = [];
  const processed: ProcessedRequest[] = [];
  const audits: AuditEntry[] = [];
  const newDeliveries: NewDelivery[] = [];
  const refunded: Decided['refunded'] = [];
  const webhookEvents: WebhookEvent[] = [];
  const touchedSellers = new Set<string>();
  const ledgerIds = state.ledgerIds[Symbol.iterator]();
  const createdAt = new Date();

  /** Seals a ledger row into its seller's chain and moves the seller's balance and head on. */
  const append = (seller: LockedSeller, row: Omit<LedgerRow, 'id' | 'createdAt' | 'hmac'>) => {
    const id = ledgerIds.next().value as string;
    const chained: ChainedRow = {
      id,
      sellerId: row.sellerId,
      type: row.type,
      amount: row.amount.toString(),
      balanceAfter: row.balanceAfter.toString(),
      jobId: row.jobId,
      creditRequestId: row.creditRequestId,
      phoneNumber: row.phoneNumber,
      description: row.description,
      createdAtMicros: (BigInt(createdAt.getTime()) * 1000n).toString(),
      refundOf: row.refundOf,
    };
    const hmac = sealRow(ledgerKey, chained, seller.head);
    seller.balance = row.balanceAfter;
    seller.head = hmac;
    touchedSellers.add(seller.id);
    ledger.push({ ...row, id, createdAt, hmac });
    return id;
  };

  const decideJob = (ref: JobRef): JobOutcome => {
    const job = state.jobs.get(ref.id);
    // A message naming no job, or a job of another partition, decides nothing: a job belongs to
    // its seller's partition, whose single consumer keeps that seller's jobs serial.
    if (!job || job.partition !== ref.partition) {
      return {
        ...failure(ref.id, 'unknown_job', 'The message names no job of its partition; nothing was applied'),
        ignored: true,
      };
    }
    if (isFinalJobStatus(job.status)) {
      return {
        jobId: job.id,
        type: job.type,
        status: job.status,
        result: job.result ?? null,
        error: job.error ?? null,
        replayed: true,
      };
    }
    const seller = state.sellers.get(job.seller_id);
    if (job.status === deliveringJobStatus) return decideDebitedSale(job, seller);
    if (!seller) return refused(job, refuse.sellerNotFound());
    return job.type === 'charge_sale' ? decideSaleJob(job, seller) : decideApprovalJob(job, seller);
  };

  /** Tells the seller's webhook how a sale ended (a refusal now, or a refund). */
  const tellSaleRejected = (job: JobRow, error: JobError) =>
    webhookEvents.push({
      sellerId: job.seller_id,
      type: 'charge_sale.rejected',
      data: {
        job_id: job.id,
        type: job.type,
        seller_id: job.seller_id,
        status: 'rejected',
        submitted_at: new Date(job.submitted_at).toISOString(),
        finished_at: createdAt.toISOString(),
        result: null,
        error,
      },
    });

  /**
   * A sale already debited. Its message is back on the partition for one reason: its top-up failed
   * for certain (or an operator chose refund), and the delivery says `refund_due`. The refund is a
   * ledger row of its own, in the seller's chain and in the partition's order. Anything else (a
   * redelivered message of the debit, a refund already written) changes nothing.
   */
  const decideDebitedSale = (job: JobRow, seller: LockedSeller | undefined): JobOutcome => {
    const delivery = state.deliveries.get(job.id);
    if (!seller || !delivery || delivery.status !== 'refund_due') {
      return {
        jobId: job.id,
        type: job.type,
        status: deliveringJobStatus,
        result: job.result,
        error: null,
        replayed: true,
      };
    }
    const amount = job.amount as bigint;
    const phone = job.phone_number as string;
    const refundTransactionId = append(seller, {
      jobId: job.id,
      sellerId: seller.id,
      type: 'charge_refund',
      amount,
      balanceAfter: seller.balance + amount,
      phoneNumber: phone,
      creditRequestId: null,
      refundOf: delivery.sale_transaction_id.toString(),
      description: `Refund of ${amount} rials: the top-up to ${phone} was not delivered`,
    });
    refunded.push({ jobId: job.id, refundTransactionId });
    const error = refuse.deliveryFailed({
      provider: delivery.provider,
      reason: delivery.provider_reason ?? (delivery.resolution === 'refund' ? 'resolved_by_operator' : 'declined'),
      refundTransactionId,
      attempts: delivery.attempts,
    });
    tellSaleRejected(job, error);
    return refused(job, error);
  };

  const decideSaleJob = (job: JobRow, seller: LockedSeller): JobOutcome => {
    // The row's CHECK guarantees a sale's amount and phone.
    const amount = job.amount as bigint;
    const phone = job.phone_number as string;
    const decision = decideSale(seller, amount);
    if (!decision.ok) {
      tellSaleRejected(job, decision.refusal);
      return refused(job, decision.refusal);
    }
    const transactionId = append(seller, {
      jobId: job.id,
      sellerId: seller.id,
      type: 'charge_sale',
      amount: -amount,
      balanceAfter: decision.newBalance,
      phoneNumber: phone,
      creditRequestId: null,
      refundOf: null,
      description: `Charge of ${amount} rials to ${phone}`,
    });
    const delivery: NewDelivery = {
      jobId: job.id,
      sellerId: seller.id,
      partition: job.partition,
      saleTransactionId: transactionId,
      phoneNumber: phone,
      amount,
    };
    newDeliveries.push(delivery);
    return {
      jobId: job.id,
      type: job.type,
      status: deliveringJobStatus,
      result: {
        transaction_id: transactionId,
        seller_id: seller.id,
        phone_number: phone,
        amount: amount.toString(),
        new_balance: seller.balance.toString(),
      },
      error: null,
      replayed: false,
      delivery,
    };
  };

  const decideApprovalJob = (job: JobRow, seller: LockedSeller): JobOutcome => {
    const request = state.requests.get(job.credit_request_id ?? '');
    if (!request || request.sellerId !== seller.id) {
      return refused(job, refuse.creditRequestNotFound());
    }
    // The row's CHECK guarantees an approval's action and operator.
    const processedBy = job.processed_by as string;
    const decision = decideCreditRequest(seller, request, {
      action: job.action as ApprovalAction,
      by: processedBy,
      secondApprovalAbove: rules.secondApprovalAbove,
    });
    if (!decision.ok) return refused(job, decision.refusal);
    request.status = decision.status;
    if (decision.status === 'awaiting_second_approval') request.firstApprovedBy = processedBy;
    processed.push({ id: request.id, status: decision.status, processedBy });
    audits.push({
      actor: actorOfJob(job),
      action:
        decision.status === 'rejected'
          ? 'credit_request.rejected'
          : decision.status === 'approved' && decision.secondApproval
            ? 'credit_request.second_approval_given'
            : 'credit_request.approved',
      targetType: 'credit_request',
      targetId: request.id,
      ip: job.actor_ip,
      details: {
        seller_id: seller.id,
        amount: request.amount.toString(),
        status: decision.status,
        job_id: job.id,
      },
    });
    const transactionId =
      decision.status === 'approved'
        ? append(seller, {
            jobId: job.id,
            sellerId: seller.id,
            type: 'credit_increase',
            amount: request.amount,
            balanceAfter: decision.newBalance,
            phoneNumber: null,
            creditRequestId: request.id,
            refundOf: null,
            description: `Credit request ${request.id} approved by ${processedBy}`,
          })
        : undefined;
    if (decision.status !== 'awaiting_second_approval') {
      webhookEvents.push({
        sellerId: seller.id,
        type: decision.status === 'approved' ? 'credit_request.approved' : 'credit_request.rejected',
        data: {
          id: request.id,
          seller: seller.id,
          amount: request.amount.toString(),
          status: decision.status,
          requested_at: request.requestedAt.toISOString(),
          processed_at: createdAt.toISOString(),
          processed_by: processedBy,
        },
      });
    }
    return succeeded(job, {
      ...(transactionId ? { transaction_id: transactionId } : {}),
      credit_request_id: request.id,
      seller_id: seller.id,
      amount: request.amount.toString(),
      status: decision.status,
      new_balance: seller.balance.toString(),
    });
  };
  // A job named twice (two messages, a message listing it twice) is decided once: the second
  // time it is a replay of the first, as if it came after the commit.
  const decidedHere = new Map<string, JobOutcome>();
  for (const ref of refs) {
    const earlier = decidedHere.get(ref.id);
    const outcome =
      earlier && state.jobs.get(ref.id)?.partition === ref.partition ? { ...earlier, replayed: true } : decideJob(ref);
    if (!outcome.ignored && !earlier) decidedHere.set(ref.id, outcome);
    outcomes.push(outcome);
  }
  return {
    outcomes,
    recorded: outcomes.filter((o) => !o.replayed && !o.ignored),
    ledger,
    processed,
    audits,
    balances: [...touchedSellers].map((id) => state.sellers.get(id) as LockedSeller),
    newDeliveries,
    refunded,
    webhookEvents,
  };
}

/**
 * Sends the writes together, as one round trip (statements sent together run in the order sent).
 * Phone totals are not here: they count delivered top-ups, and are written when a top-up is
 * delivered.
 */
async function writeAll(conn: Connection, decided: Decided, lockedAt: string, rules: Rules): Promise<void> {
  await Promise.all([
    writeLedgerAndOutcomes(conn, decided.ledger, decided.recorded, lockedAt),
    writeDeliveryHold(conn, decided.newDeliveries, rules),
    writeRefunded(conn, decided.refunded),
    writeBalances(conn, decided.balances),
    writeProcessedRequests(conn, decided.processed),
    writeAudits(conn, decided.audits),
    insertWebhookEvents(conn, decided.webhookEvents),
  ]);
}

/**
 * The debited sales, held by this process for DELIVERY_LEASE_MS: it sends them as soon as the
 * batch commits, and most never need a `deliveries` row (see `delivery_holds`). One row for all of
 * them, which the stage of any process sweeps once the hold runs out.
 */
async function writeDeliveryHold(conn: Connection, rows: NewDelivery[], rules: Rules): Promise<void> {
  if (rows.length === 0) return;
  await conn`
    insert into delivery_holds (job_ids, provider, held_until)
    values (${arrayLiteral(rows.map((d) => d.jobId))}::uuid[], ${rules.provider ?? 'simulator'},
            now() + make_interval(secs => ${(rules.deliveryLeaseMs ?? 30_000) / 1000}))`;
}

/** The deliveries whose sales were refunded now. */
async function writeRefunded(conn: Connection, rows: Decided['refunded']): Promise<void> {
  if (rows.length === 0) return;
  await conn`
    update deliveries as d set status = 'refunded', refund_transaction_id = v.refund::bigint, updated_at = now()
    from jsonb_to_recordset(${JSON.stringify(rows.map((r) => ({ id: r.jobId, refund: r.refundTransactionId })))}::jsonb)
      as v(id uuid, refund text)
    where d.job_id = v.id and d.status = 'refund_due'`;
}

/** Who asked for an approval job, as its row recorded: an operator (by id and email), or bootstrap. */
function actorOfJob(job: JobRow): Actor {
  return job.processed_by === BOOTSTRAP_NAME
    ? { type: 'bootstrap', id: null, email: null }
    : { type: 'operator', id: job.actor_id, email: job.processed_by };
}

/** The audit rows of the batch's approvals and rejections, in the transaction of their effect. */
async function writeAudits(conn: Connection, audits: AuditEntry[]): Promise<void> {
  if (audits.length === 0) return;
  const rows = audits.map(auditRow).map((r) => ({
    actor_type: r.actorType,
    actor_id: r.actorId,
    actor_email: r.actorEmail,
    action: r.action,
    target_type: r.targetType,
    target_id: r.targetId,
    ip: r.ip,
    details: r.details,
  }));
  await conn`
    insert into audit_events (actor_type, actor_id, actor_email, action, target_type, target_id, ip, details)
    select v.actor_type, v.actor_id, v.actor_email, v.action, v.target_type, v.target_id, v.ip, v.details
    from jsonb_to_recordset(${JSON.stringify(rows)}::jsonb)
      as v(actor_type text, actor_id uuid, actor_email text, action text, target_type text, target_id text, ip text, details jsonb)`;
}

interface LedgerRow {
  id: string;
  jobId: string;
  sellerId: string;
  type: TransactionType;
  refundOf: string | null;
  amount: bigint;
  balanceAfter: bigint;
  phoneNumber: string | null;
  creditRequestId: string | null;
  description: string;
  createdAt: Date;
  hmac: string;
}

interface ProcessedRequest {
  id: string;
  status: 'approved' | 'rejected' | 'awaiting_second_approval';
  processedBy: string;
}

function succeeded(job: JobRow, result: Record<string, unknown>): JobOutcome {
  return { jobId: job.id, type: job.type, status: 'succeeded', result, error: null, replayed: false };
}

function refused(job: JobRow, refusal: Refusal): JobOutcome {
  return { jobId: job.id, type: job.type, status: 'rejected', result: null, error: refusal, replayed: false };
}

/** The outcome of a job that was not applied, and never will be. */
export function failure(jobId: string, code: JobFailureCode, message: string): JobOutcome {
  return { jobId, status: 'failed', result: null, error: { error: message, code }, replayed: false };
}

/** The sellers' new balances, and the heads their chains now end at. */
async function writeBalances(conn: Connection, changed: Array<LockedSeller>): Promise<void> {
  if (changed.length === 0) return;
  const rows = changed.map((s) => ({ id: s.id, balance: s.balance.toString(), head: s.head }));
  await conn`
    update sellers as s set credit_balance = v.balance::bigint, ledger_head = v.head
    from jsonb_to_recordset(${JSON.stringify(rows)}::jsonb) as v(id uuid, balance text, head text)
    where s.id = v.id`;
}

/**
 * A final decision records who made it and when; a first approval of two records its operator
 * apart, and leaves the request open. A request decided twice in one batch (a first approval, then
 * a second) is written once, as its last decision, keeping the first approver.
 */
async function writeProcessedRequests(conn: Connection, processed: ProcessedRequest[]): Promise<void> {
  if (processed.length === 0) return;
  const last = new Map<string, { id: string; status: string; processed_by: string; first_by: string | null }>();
  for (const p of processed) {
    const first = p.status === 'awaiting_second_approval' ? p.processedBy : (last.get(p.id)?.first_by ?? null);
    last.set(p.id, { id: p.id, status: p.status, processed_by: p.processedBy, first_by: first });
  }
  await conn`
    update credit_requests as r
    set status = v.status,
        processed_by = case when v.status = 'awaiting_second_approval' then null else v.processed_by end,
        processed_at = case when v.status = 'awaiting_second_approval' then null else now() end,
        first_approved_by = coalesce(v.first_by, r.first_approved_by),
        first_approved_at = case when v.first_by is not null then now() else r.first_approved_at end
    from jsonb_to_recordset(${JSON.stringify([...last.values()])}::jsonb)
      as v(id uuid, status text, processed_by text, first_by text)
    where r.id = v.id and r.status in ('pending', 'awaiting_second_approval')`;
}

/**
 * Inserts the ledger rows and records the jobs' outcomes in one statement (one round trip: a
 * data-modifying WITH runs whether or not the rest reads it). Rows
 * carry the ids drawn under the seller locks and the hmacs sealed with them. started_at is when the
 * transaction held its locks, applied_at the clock when its writes were done: the span in which
 * it held its sellers. Two spans of one seller that overlap would mean two transactions held it at
 * once; the transaction's own start (now()) would not tell, since a transaction may begin, then
 * wait for a seller another one holds (a stalled worker's batch, resumed, behind its successor's).
 */
async function writeLedgerAndOutcomes(
  conn: Connection,
  ledger: LedgerRow[],
  outcomes: JobOutcome[],
  lockedAt: string,
): Promise<void> {
  if (outcomes.length === 0) return;
  const rows = ledger.map((r) => ({
    id: r.id,
    seller_id: r.sellerId,
    type: r.type,
    amount: r.amount.toString(),
    balance_after: r.balanceAfter.toString(),
    job_id: r.jobId,
    credit_request_id: r.creditRequestId,
    phone_number: r.phoneNumber,
    description: r.description,
    created_at: r.createdAt.toISOString(),
    refund_of: r.refundOf,
    hmac: r.hmac,
  }));
  const results = outcomes.map((o) => ({ id: o.jobId, status: o.status, result: o.result, error: o.error }));
  await conn`
    with ledger as (
      insert into transactions (id, seller_id, type, amount, balance_after, job_id, credit_request_id, phone_number,
                                description, created_at, refund_of, hmac)
      overriding system value
      select (e.row->>'id')::bigint, (e.row->>'seller_id')::uuid, e.row->>'type', (e.row->>'amount')::bigint,
             (e.row->>'balance_after')::bigint, (e.row->>'job_id')::uuid, (e.row->>'credit_request_id')::uuid,
             e.row->>'phone_number', e.row->>'description', (e.row->>'created_at')::timestamptz,
             (e.row->>'refund_of')::bigint, e.row->>'hmac'
      from jsonb_array_elements(${JSON.stringify(rows)}::jsonb) as e(row)
    ), clock as (select clock_timestamp() as ts)
    update jobs as j set status = v.status, result = v.result, error = v.error, started_at = ${lockedAt}::timestamptz,
      applied_at = clock.ts, finished_at = case when v.status = 'delivering' then null else clock.ts end
    from jsonb_to_recordset(${JSON.stringify(results)}::jsonb) as v(id uuid, status text, result jsonb, error jsonb)
      cross join clock
    where j.id = v.id`;
}
