import { sql } from 'drizzle-orm';
import {
  bigint,
  check,
  index,
  jsonb,
  pgTable,
  smallint,
  text,
  timestamp,
  uniqueIndex,
  uuid,
} from 'drizzle-orm/pg-core';
import {
  approvalActions,
  finalJobStatuses,
  jobStatuses,
  jobTypes,
  normalisedPhonePattern,
  openJobCondition,
  openJobStatuses,
  sqlList,
} from './vocabulary.ts';

/**
 * Every accepted request is a row here before the client hears 202: it is the durable record the
 * queue is rebuilt from if Redis loses it, the gate that lets a job take effect once (a worker
 * only applies a job whose row is not final), and where its outcome stays queryable.
 */
export const jobs = pgTable(
  'jobs',
  {
    id: uuid('id').primaryKey(),
    type: text('type', { enum: jobTypes }).notNull(),
    /** Checked at insert by the trigger `jobs_name_their_seller` (migration 0009), as is `creditRequestId`. */
    sellerId: uuid('seller_id').notNull(),
    partition: smallint('partition').notNull(),
    /**
     * The queue message that carries the job to a worker: jobs accepted together for one
     * partition travel in one message, whose id is the first of their ids.
     */
    queueJobId: uuid('queue_job_id').notNull(),
    status: text('status', { enum: jobStatuses }).notNull().default('queued'),
    // What the job does, as the API recorded it. A worker applies these columns and nothing a
    // queue message says; the application role may not update them.
    /** A sale: rials to debit, and the phone charged. */
    amount: bigint('amount', { mode: 'bigint' }),
    phoneNumber: text('phone_number'),
    /** A credit approval: the request, what to do with it, and who decided. */
    creditRequestId: uuid('credit_request_id'),
    action: text('action', { enum: approvalActions }),
    processedBy: text('processed_by'),
    /** Who asked, for the audit row the worker writes with the effect: the operator (null: bootstrap) and its address. */
    actorId: uuid('actor_id'),
    actorIp: text('actor_ip'),
    idempotencyKey: text('idempotency_key'),
    /** Hash of the normalised request, to tell a replay from a reuse of the key with another body. */
    requestHash: text('request_hash'),
    requestId: text('request_id'),
    result: jsonb('result'),
    error: jsonb('error'),
    submittedAt: timestamp('submitted_at', { withTimezone: true }).notNull().defaultNow(),
    /** When the transaction that decided the job held its locks; with applied_at, the span it held its seller. */
    startedAt: timestamp('started_at', { withTimezone: true }),
    /**
     * The clock once that transaction had written: a sale's debit, an approval's decision. A sale
     * is final later, once its top-up is delivered or refunded (finished_at).
     */
    appliedAt: timestamp('applied_at', { withTimezone: true }),
    finishedAt: timestamp('finished_at', { withTimezone: true }),
  },
  (t) => [
    check('jobs_type_valid', sql`${t.type} in (${sqlList(jobTypes)})`),
    check('jobs_status_valid', sql`${t.status} in (${sqlList(jobStatuses)})`),
    check(
      'jobs_finished_iff_final',
      sql`(${t.status} in (${sqlList(finalJobStatuses)})) = (${t.finishedAt} is not null)`,
    ),
    // Each type carries its own facts and no others, so a row can only ever mean one thing. Every
    // fact is tested for null first: a check whose expression is null passes.
    check(
      'jobs_facts_of_type',
      sql`(${t.type} = 'charge_sale' and ${t.amount} is not null and ${t.amount} > 0
            and ${t.phoneNumber} is not null and ${t.phoneNumber} ~ '${sql.raw(normalisedPhonePattern)}'
            and ${t.creditRequestId} is null and ${t.action} is null and ${t.processedBy} is null)
       or (${t.type} = 'credit_approval' and ${t.amount} is null and ${t.phoneNumber} is null
            and ${t.creditRequestId} is not null and ${t.action} is not null and ${t.action} in (${sqlList(approvalActions)})
            and ${t.processedBy} is not null and length(${t.processedBy}) > 0)`,
    ),
    check('jobs_idempotency_key_length', sql`length(${t.idempotencyKey}) between 1 and 255`),
    // Two requests with one key can never both be accepted, even from two API processes at once.
    // Partial: most jobs have no key, and an index entry for each would only cost writes (on the
    // insert, and again on the update that records the outcome).
    uniqueIndex('jobs_seller_idempotency_key_unique')
      .on(t.sellerId, t.idempotencyKey)
      .where(sql`${t.idempotencyKey} is not null`),
    // A job is open until it is applied or failed, and only then (see openJobCondition).
    check(
      'jobs_open_iff_unapplied',
      sql`(${t.status} in (${sqlList(openJobStatuses)})) = (${sql.raw(openJobCondition)})`,
    ),
    index('jobs_unfinished_idx').on(t.partition, t.submittedAt).where(sql.raw(openJobCondition)),
  ],
);
