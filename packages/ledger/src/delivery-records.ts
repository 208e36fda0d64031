import { type Actor, arrayLiteral, auditRow, type Database, newWebhookId } from '@cs/db';
import type { TransactionSql } from 'postgres';

/**
 * Every move of a delivery's record, in one place: the delivery stage's (the provider's answers),
 * the operator's (an unresolved one) and the reads they need. None of them moves money: a refund
 * is only marked due here, and the seller's partition writes it (see `applyJobs`). Each write is
 * guarded by the status it moves from, so a stale worker (one whose lease ran out while it waited
 * for the provider) can never undo what another decided.
 *
 * A sale delivered at the first answer has no `deliveries` row: its job moves from `delivering`
 * to `succeeded`, and its result records the delivery. A row is written (`recordDeliveries`) only
 * for a sale that needs asking again, a refund or a pause, and for the sales of a hold that ran
 * out (`sweepLapsedHolds`, see `delivery_holds`).
 */

type Connection = TransactionSql<{ bigint: bigint }>;

/**
 * Where a debited sale's top-up stands, in SQL over its delivery row `d` (if any) and its job `j`:
 * the row's status where it has one; else pending while the job is `delivering`, delivered once it
 * succeeded with `result.delivery`, and null for a sale from before deliveries existed.
 */
export const saleDeliveryStatusSql = `coalesce(d.status, case when j.status = 'delivering' then 'pending'
  when j.status = 'succeeded' and j.result ? 'delivery' then 'delivered' end)`;

/** A delivery as the stage works on it. */
export interface DeliveryTask {
  jobId: string;
  phoneNumber: string;
  amount: bigint;
  provider: string;
  /** An operator's decision: the provider is then asked only to confirm or contradict it. */
  resolution: 'delivered' | 'refund' | null;
  /** When an operator resolved it (null while unresolved). */
  resolvedAt: Date | null;
  attempts: number;
  debitedAt: Date;
  /** Whether its `deliveries` row exists; a sale just debited here has none (see `recordDeliveries`). */
  recorded: boolean;
}

/**
 * Takes up to `limit` deliveries that are due and that nobody holds (a lease that ran out is
 * nobody's), and holds them for `leaseMs`. A due row whose sale is already settled (see
 * `sweepLapsedHolds`) is ended as delivered instead. SKIP LOCKED: several worker processes poll at once,
 * and each delivery goes to one of them.
 */
export async function claimDueDeliveries(db: Database, limit: number, leaseMs: number): Promise<DeliveryTask[]> {
  const rows = await db.$client<
    Array<{
      job_id: string;
      phone_number: string;
      amount: bigint;
      provider: string;
      resolution: DeliveryTask['resolution'];
      resolved_at: string | null;
      attempts: number;
      debited_at: string;
    }>
  >`
    with due as (
      select d.job_id, (j.status = 'succeeded' and j.result ? 'delivery' and d.resolution is null) as settled
      from deliveries d join jobs j on j.id = d.job_id
      where d.watching and d.next_attempt_at <= now() and (d.claimed_until is null or d.claimed_until < now())
        -- A refund on its way to the partition is the partition's until it is written.
        and d.status <> 'refund_due'
      order by d.next_attempt_at limit ${limit}
      for update of d skip locked
    ), ended as (
      -- A sale its holder settled from the job while a sweep wrote its row (the two overlapped):
      -- the row ends as the job says, and is not asked about.
      update deliveries as d set status = 'delivered', watching = false, claimed_until = null, updated_at = now(),
        delivered_at = (j.result -> 'delivery' ->> 'delivered_at')::timestamptz,
        provider_reference = coalesce(j.result -> 'delivery' ->> 'provider_reference', d.provider_reference),
        attempts = greatest(d.attempts, coalesce((j.result -> 'delivery' ->> 'attempts')::int, 0))
      from due join jobs j on j.id = due.job_id
      where d.job_id = due.job_id and due.settled
    )
    update deliveries as d set claimed_until = now() + make_interval(secs => ${leaseMs / 1000}), updated_at = now()
    from due where d.job_id = due.job_id and not due.settled
    returning d.job_id, d.phone_number, d.amount, d.provider, d.resolution, d.resolved_at, d.attempts, d.debited_at`;
  return rows.map((r) => ({
    jobId: r.job_id,
    phoneNumber: r.phone_number,
    amount: r.amount,
    provider: r.provider,
    resolution: r.resolution,
    resolvedAt: r.resolved_at === null ? null : new Date(r.resolved_at),
    attempts: r.attempts,
    debitedAt: new Date(r.debited_at),
    recorded: true,
  }));
}

/**
 * Writes the `deliveries` rows of sales still `delivering` that have none, made from their jobs
 * and ledger rows: held by this process for `heldForMs` (it goes on asking the provider), or due
 * at once for any process (null). A sale settled meanwhile, or recorded by another process, is
 * left as it is.
 */
export async function recordDeliveries(
  db: Database,
  jobIds: readonly string[],
  provider: string,
  heldForMs: number | null,
): Promise<void> {
  if (jobIds.length === 0) return;
  const claimedUntil = heldForMs === null ? null : new Date(Date.now() + heldForMs).toISOString();
  const sql = db.$client;
  await insertDeliveryRows(
    sql,
    sql`(select unnest(${arrayLiteral(jobIds)}::uuid[]) as id, ${provider}::text as provider)`,
    claimedUntil,
  );
}

/**
 * How a sale's delivery row is made, in one place for the stage and the sweep: from its job (still
 * `delivering`) and its `charge_sale` ledger row, never from what a process remembers. `sales`
 * names the job ids and their provider. A fragment, run by its caller's statement.
 */
function insertDeliveryRows(
  sql: Database['$client'],
  sales: ReturnType<Database['$client']>,
  claimedUntil: string | null,
) {
  return sql`
    insert into deliveries (job_id, seller_id, partition, sale_transaction_id, phone_number, amount, provider,
                            claimed_until, debited_at)
    select j.id, j.seller_id, j.partition, t.id, j.phone_number, j.amount, s.provider, ${claimedUntil}::timestamptz,
           j.applied_at
    from ${sales} s
    join jobs j on j.id = s.id and j.status = 'delivering'
    join transactions t on t.job_id = j.id and t.type <> 'charge_refund'
    order by j.id
    on conflict (job_id) do nothing
    returning job_id`;
}

/**
 * Takes up to `limit` holds that ran out (their process died, or is stuck): each of their sales
 * still `delivering` without a row gets one, due at once, and the holds are deleted, in one
 * statement. Several processes may sweep at once: one of two that pick the same hold waits for the
 * other's delete, then finds it gone, so each hold is swept once (no SKIP LOCKED, which would need
 * the UPDATE privilege on the table). A sale
 * its holder settles at the same moment may still get a row, pending and due; the next claim ends
 * it as its job says (`claimDueDeliveries`), or, if the settlement had not committed yet, it is
 * asked about, the provider says delivered (one reference, one top-up), and the row ends
 * delivered without moving the job again. Returns how many holds were swept and how many rows written.
 */
export async function sweepLapsedHolds(db: Database, limit: number): Promise<{ holds: number; recorded: number }> {
  const sql = db.$client;
  const [row] = await sql<[{ holds: number; recorded: number }]>`
    with lapsed as (
      delete from delivery_holds where id in (
        select id from delivery_holds where held_until < now() order by held_until limit ${limit})
      returning job_ids, provider
    ), recorded as (
      ${insertDeliveryRows(sql, sql`(select unnest(job_ids) as id, provider from lapsed)`, null)}
    )
    select (select count(*) from lapsed)::int as holds, (select count(*) from recorded)::int as recorded`;
  return { holds: row?.holds ?? 0, recorded: row?.recorded ?? 0 };
}

/**
 * Lets go of deliveries held and not started (a worker shutting down, or pausing its calls to a
 * provider that is down): any worker may take them at once.
 */
export async function releaseDeliveries(db: Database, jobIds: readonly string[]): Promise<void> {
  if (jobIds.length === 0) return;
  await db.$client`
    update deliveries set claimed_until = null, updated_at = now()
    where job_id = any(${arrayLiteral(jobIds)}::uuid[]) and claimed_until is not null`;
}

/** A top-up the provider (or an operator) says was delivered. */
export interface Delivered {
  jobId: string;
  /** The provider that delivered it; an operator's decision leaves it to the delivery's row. */
  provider?: string;
  providerReference: string | null;
  /** Calls made to the provider in all. */
  attempts: number;
  /** Set when an operator decided it. */
  resolvedBy?: { name: string; actor: Actor; ip: string | null };
}

/** A sale's job, as the stage announces it once its top-up is settled. */
export interface SettledJob {
  jobId: string;
  sellerId: string;
  provider: string;
  debitedAt: Date;
}

/**
 * Ends deliveries as delivered: the job (`delivering` → `succeeded`, the result gaining
 * `delivery`), its delivery row if it has one, the phone's totals (they count delivered top-ups
 * only) and the webhook event, in one transaction. A sale no longer `delivering`, or whose
 * delivery is no longer pending or unresolved, is left alone (decided already, by another worker
 * or an operator); it is not among those returned.
 */
export async function settleDelivered(db: Database, items: readonly Delivered[]): Promise<SettledJob[]> {
  if (items.length === 0) return [];
  const byOperator = items.filter((i) => i.resolvedBy);
  if (byOperator.length === 0) {
    return db.$client.begin(async (tx) => {
      // The provider's answer commits without waiting for the WAL flush. Safe: the debit is
      // committed and flushed already, and a settlement lost with a crash only leaves the sale
      // `delivering` (its row pending, or its hold in `delivery_holds`, swept once it runs out);
      // it is asked about again, the provider answers delivered again, and it settles then,
      // phone totals and webhook event with it, once (the move is guarded by status).
      // An operator's decision, with its audit row, waits for the flush as usual.
      await tx`select set_config('synchronous_commit', 'off', true)`;
      return settle(tx, items);
    });
  }
  return db.$client.begin(async (tx) => {
    const settled = await settle(tx, items);
    for (const item of byOperator) {
      if (settled.some((s) => s.jobId === item.jobId))
        await auditResolution(tx, item.jobId, 'delivered', item.resolvedBy);
    }
    return settled;
  });
}

/**
 * The settlement as one statement. Its parts read the rows moved by the steps before (their
 * RETURNING), so the phone totals and the webhook events count exactly the jobs settled now. A
 * job moves when its delivery row moved now, or when it has no row at all (delivered at the first
 * answer, the common case). A webhook id is drawn beforehand for every item, as the outbox draws
 * them; an item not settled, or of a seller without a webhook, leaves its id unused.
 */
async function settle(conn: TransactionSql<{ bigint: bigint }>, items: readonly Delivered[]): Promise<SettledJob[]> {
  // One item per job: a sale answered twice in one gathering (its hold ran out while its holder
  // waited, and this process took the row over) would otherwise write its webhook event twice.
  const unique = [...new Map(items.map((d) => [d.jobId, d])).values()];
  const values = unique.map((d) => ({
    id: d.jobId,
    provider: d.provider ?? null,
    reference: d.providerReference,
    attempts: d.attempts,
    resolved_by: d.resolvedBy?.name ?? null,
    webhook_id: newWebhookId(),
  }));
  const rows = await conn<Array<{ job_id: string; seller_id: string; provider: string; debited_at: string }>>`
    with v as (
      select * from jsonb_to_recordset(${JSON.stringify(values)}::jsonb)
        as v(id uuid, provider text, reference text, attempts int, resolved_by text, webhook_id text)
    ), d as (
      update deliveries as d set status = 'delivered', delivered_at = now(), updated_at = now(),
        provider_reference = coalesce(v.reference, d.provider_reference), attempts = greatest(d.attempts, v.attempts),
        claimed_until = null,
        -- An operator's word is not the provider's: it is still asked, so a contradiction shows.
        watching = v.resolved_by is not null,
        next_attempt_at = now(),
        resolution = case when v.resolved_by is null then d.resolution else 'delivered' end,
        resolved_by = coalesce(v.resolved_by, d.resolved_by),
        resolved_at = case when v.resolved_by is null then d.resolved_at else now() end
      from v where d.job_id = v.id and d.status in ('pending', 'unresolved')
      returning d.job_id, d.provider, d.provider_reference, d.delivered_at, d.attempts
    ), j as (
      update jobs as j set status = 'succeeded', finished_at = clock_timestamp(),
        result = j.result || jsonb_build_object('delivery', jsonb_build_object(
          'status', 'delivered', 'provider', coalesce(d.provider, v.provider),
          'provider_reference', case when d.job_id is null then v.reference else d.provider_reference end,
          'delivered_at', coalesce(d.delivered_at, now()), 'attempts', coalesce(d.attempts, v.attempts)))
      from v left join d on d.job_id = v.id
      where j.id = v.id and j.status = 'delivering'
        -- The snapshot before this statement's own update: a row in any status means d decides.
        and (d.job_id is not null or not exists (select 1 from deliveries x where x.job_id = v.id))
      returning j.id, j.type, j.seller_id, j.status, j.submitted_at, j.applied_at, j.finished_at, j.result, j.error,
        j.phone_number, j.amount, coalesce(d.provider, v.provider) as provider
    ), phones as (
      -- One row per number (a number may be topped up twice at once), in number order.
      insert into phone_numbers (number, total_charged, charge_count)
      select j.phone_number, sum(j.amount), count(*) from j
      group by j.phone_number order by j.phone_number
      on conflict (number) do update set
        total_charged = phone_numbers.total_charged + excluded.total_charged,
        charge_count = phone_numbers.charge_count + excluded.charge_count
    ), hooks as (
      insert into webhook_deliveries (id, seller_id, event_type, payload)
      select v.webhook_id, j.seller_id, 'charge_sale.succeeded',
             jsonb_build_object('id', v.webhook_id, 'type', 'charge_sale.succeeded', 'created_at', now(),
               'data', jsonb_build_object('job_id', j.id, 'type', j.type, 'seller_id', j.seller_id, 'status', j.status,
                 'submitted_at', j.submitted_at, 'finished_at', j.finished_at, 'result', j.result, 'error', j.error))
      from j join v on v.id = j.id
      join webhook_endpoints e on e.seller_id = j.seller_id and e.is_active
    )
    select j.id as job_id, j.seller_id, j.provider, j.applied_at as debited_at from j order by j.id`;
  return rows.map((s) => ({
    jobId: s.job_id,
    sellerId: s.seller_id,
    provider: s.provider,
    debitedAt: new Date(s.debited_at),
  }));
}

/**
 * Marks a delivery's refund due: the provider refused the top-up for certain, or an operator chose
 * refund. The refund itself is the seller's partition's to write; returns the partition, or null
 * when the delivery was no longer pending or unresolved.
 */
export async function markRefundDue(
  db: Database,
  jobId: string,
  d: { reason: string; attempts: number; resolvedBy?: { name: string; actor: Actor; ip: string | null } },
): Promise<{ partition: number } | null> {
  return db.$client.begin(async (tx) => {
    const [row] = await tx<Array<{ partition: number }>>`
      update deliveries set status = 'refund_due', provider_reason = ${d.reason},
        attempts = greatest(attempts, ${d.attempts}), claimed_until = null, updated_at = now(),
        watching = ${d.resolvedBy !== undefined}, next_attempt_at = now(),
        resolution = ${d.resolvedBy ? 'refund' : null}, resolved_by = ${d.resolvedBy?.name ?? null},
        resolved_at = ${d.resolvedBy ? new Date().toISOString() : null}
      where job_id = ${jobId} and status in ('pending', 'unresolved')
      returning partition`;
    if (row && d.resolvedBy) await auditResolution(tx, jobId, 'refund', d.resolvedBy);
    return row ?? null;
  });
}

async function auditResolution(
  tx: Connection,
  jobId: string,
  outcome: 'delivered' | 'refund',
  by: { actor: Actor; ip: string | null } | undefined,
): Promise<void> {
  if (!by) return;
  const row = auditRow({
    actor: by.actor,
    action: 'delivery.resolved',
    targetType: 'delivery',
    targetId: jobId,
    ip: by.ip,
    details: { outcome },
  });
  await tx`
    insert into audit_events (actor_type, actor_id, actor_email, action, target_type, target_id, ip, details)
    values (${row.actorType}, ${row.actorId}, ${row.actorEmail}, ${row.action}, ${row.targetType}, ${row.targetId},
            ${row.ip}, ${JSON.stringify(row.details)}::jsonb)`;
}

/**
 * The provider gave no definite answer: asks again at `nextAttemptAt`. Past the give-up point a
 * pending delivery becomes `unresolved` (an operator decides; it is still asked). Returns whether
 * it became unresolved now.
 */
export async function scheduleNextAsk(
  db: Database,
  jobId: string,
  d: { attempts: number; nextAttemptAt: Date; lastError: string | null; giveUp: boolean },
): Promise<boolean> {
  const [row] = await db.$client<Array<{ gave_up_now: boolean }>>`
    update deliveries as d set attempts = greatest(d.attempts, ${d.attempts}), next_attempt_at = ${d.nextAttemptAt.toISOString()},
      last_error = ${d.lastError}, claimed_until = null, updated_at = now(),
      status = case when ${d.giveUp} and d.status = 'pending' then 'unresolved' else d.status end,
      gave_up_at = case when ${d.giveUp} and d.status = 'pending' then now() else d.gave_up_at end
    where d.job_id = ${jobId} and d.watching
    -- now() is the statement's transaction's: equal only when it was given up here and now.
    returning (d.gave_up_at = now()) as gave_up_now`;
  return row?.gave_up_now ?? false;
}

/**
 * Stops asking the provider about a resolved delivery that it has not answered for
 * DELIVERY_WATCH_AFTER_RESOLUTION: the operator's decision stands, unconfirmed (`last_error` says so).
 */
export async function stopWatching(db: Database, jobId: string, attempts: number): Promise<void> {
  await db.$client`
    update deliveries set watching = false, claimed_until = null, updated_at = now(),
      attempts = greatest(attempts, ${attempts}),
      last_error = 'the provider never confirmed the resolution: no longer asked'
    where job_id = ${jobId} and resolution is not null and watching`;
}

/**
 * The provider's definite answer about a delivery an operator already resolved: it agrees (asking
 * ends), or it contradicts the operator (a refunded top-up that was delivered, a top-up marked
 * delivered that failed or never reached the provider), and the delivery is listed as a conflict.
 * Returns whether it is one.
 */
export async function recordLateAnswer(
  db: Database,
  jobId: string,
  answer: { delivered: boolean; providerReference: string | null; attempts: number },
): Promise<boolean> {
  const [row] = await db.$client<Array<{ status: string }>>`
    update deliveries set watching = false, claimed_until = null, updated_at = now(),
      attempts = greatest(attempts, ${answer.attempts}),
      provider_reference = coalesce(${answer.providerReference}, provider_reference),
      status = case when (resolution = 'refund') = ${answer.delivered} then 'conflict' else status end,
      conflict_at = case when (resolution = 'refund') = ${answer.delivered} then now() else conflict_at end
    where job_id = ${jobId} and resolution is not null and watching
    returning status`;
  return row?.status === 'conflict';
}

/** Refunds marked due for a while whose partition message may be lost: the requeue puts them back. */
export async function refundsWaiting(db: Database, partition: number, olderThanMs: number): Promise<string[]> {
  const rows = await db.$client<Array<{ job_id: string }>>`
    select job_id from deliveries
    where status = 'refund_due' and partition = ${partition}
      and updated_at < now() - make_interval(secs => ${olderThanMs / 1000})
    order by updated_at limit 500`;
  return rows.map((r) => r.job_id);
}
