import { createHash } from 'node:crypto';
import { type ApprovalAction, type Database, failOpenJobs, jobs } from '@cs/db';
import { Batcher } from '@cs/queue';
import { and, eq, or } from 'drizzle-orm';
import type { Logger } from 'pino';
import { uuidv7 } from 'uuidv7';
import type { AppDeps } from '../context.ts';
import { ApiError } from '../errors.ts';
import type { JobQueues } from './job-queues.ts';

/** What a job does: recorded in its row, which is all a worker reads. */
type Payload = { requestId?: string; sellerId: string } & (
  | { type: 'charge_sale'; phoneNumber: string; amount: string }
  | {
      type: 'credit_approval';
      creditRequestId: string;
      action: ApprovalAction;
      /** The operator's email, or `bootstrap`; with its id (null: bootstrap) and address, for the audit row. */
      processedBy: string;
      actorId: string | null;
      actorIp: string | null;
    }
);

export interface Submission {
  payload: Payload;
  idempotencyKey?: string;
  /** The normalised request that the idempotency key stands for. */
  request?: unknown;
}

export type JobRow = typeof jobs.$inferSelect;
export interface Accepted {
  job: JobRow;
  /** False when an earlier submission with the same idempotency key is returned. */
  created: boolean;
}

/** What an `overloaded` answer tells the client to wait, in seconds. */
const OVERLOADED_RETRY_AFTER_S = 1;

/** Accepts a job: see {@link JobSubmitter}. */
export function submitJob(deps: AppDeps, submission: Submission): Promise<Accepted> {
  return deps.submitter.submit(submission);
}

type Prepared = Omit<JobRow, 'submittedAt' | 'status' | 'result' | 'error' | 'startedAt' | 'appliedAt' | 'finishedAt'>;

/**
 * Accepts jobs: records each in PostgreSQL, then puts it on its seller's partition queue. The
 * row comes first so that a job that got a 202 is never lost, even if Redis later loses it
 * (workers put back jobs that are unfinished in PostgreSQL and missing from Redis).
 *
 * Concurrent submissions are gathered: one INSERT, and one queue message per partition, serve a
 * whole batch, so a burst costs a few round trips instead of two per request.
 *
 * With an idempotency key, the unique (seller, key) constraint decides between concurrent
 * submissions, even across API processes: one row is inserted, every other submission gets that
 * same job back, or 422 when it asked for something else under the same key.
 */
export class JobSubmitter {
  private readonly batcher = new Batcher<Prepared, Accepted>((items) => this.acceptAll(items), {
    maxBatch: 500,
    maxInFlight: 2,
  });

  /** Submissions held in this process until they are recorded and queued. */
  private pending = 0;

  constructor(
    private readonly db: Database,
    private readonly queues: JobQueues,
    private readonly logger: Logger,
    /** Past this many pending submissions, new ones are refused (503 `overloaded`). */
    private readonly maxPending: number,
  ) {}

  /**
   * Bounded intake: when PostgreSQL or Redis cannot keep up, submissions would otherwise wait in
   * this process's memory without limit. Only what this process holds counts: a backlog in the
   * queues (workers down or slow) is normal and keeps being accepted.
   */
  submit(submission: Submission): Promise<Accepted> {
    if (this.pending >= this.maxPending) {
      return Promise.reject(
        new ApiError(
          'overloaded',
          'The API is saturated; nothing was done, retry shortly',
          {},
          OVERLOADED_RETRY_AFTER_S,
        ),
      );
    }
    this.pending++;
    return this.accept(submission).finally(() => {
      this.pending--;
    });
  }

  private accept({ payload, idempotencyKey, request }: Submission): Promise<Accepted> {
    const id = uuidv7();
    return this.batcher.submit({
      id,
      type: payload.type,
      sellerId: payload.sellerId,
      partition: this.queues.partitionOf(payload.sellerId),
      queueJobId: id,
      amount: payload.type === 'charge_sale' ? BigInt(payload.amount) : null,
      phoneNumber: payload.type === 'charge_sale' ? payload.phoneNumber : null,
      creditRequestId: payload.type === 'credit_approval' ? payload.creditRequestId : null,
      action: payload.type === 'credit_approval' ? payload.action : null,
      processedBy: payload.type === 'credit_approval' ? payload.processedBy : null,
      actorId: payload.type === 'credit_approval' ? payload.actorId : null,
      actorIp: payload.type === 'credit_approval' ? payload.actorIp : null,
      idempotencyKey: idempotencyKey ?? null,
      requestHash: idempotencyKey ? hashRequest(request ?? payload) : null,
      requestId: payload.requestId ?? null,
    });
  }

  private async acceptAll(items: Prepared[]): Promise<Array<Accepted | Error>> {
    // One message per partition, named after its oldest job (ids are time-ordered).
    const deliveries = new Map<number, Prepared[]>();
    for (const item of items) {
      const delivery = deliveries.get(item.partition);
      if (delivery) delivery.push(item);
      else deliveries.set(item.partition, [item]);
    }
    for (const delivery of deliveries.values()) {
      for (const item of delivery) item.queueJobId = (delivery[0] as Prepared).id;
    }

    const inserted = await insertJobs(this.db, items);
    const replays = items.filter((item) => !inserted.has(item.id));
    const earlier = replays.length > 0 ? await this.findByKeys(replays) : new Map<string, JobRow>();

    const queueFailed = await this.enqueue(deliveries, inserted);

    return items.map((item) => {
      const submittedAt = inserted.get(item.id);
      if (submittedAt) {
        return queueFailed.has(item.id)
          ? new ApiError('service_unavailable', 'The queue is unavailable; nothing was done, retry later')
          : {
              job: {
                ...item,
                status: 'queued',
                result: null,
                error: null,
                submittedAt,
                startedAt: null,
                appliedAt: null,
                finishedAt: null,
              },
              created: true,
            };
      }
      const existing = earlier.get(`${item.sellerId}\u0000${item.idempotencyKey}`);
      if (!existing) return new Error('idempotency conflict without a row');
      if (existing.requestHash !== item.requestHash) {
        return new ApiError('idempotency_key_reused', 'This Idempotency-Key was used with a different request', {
          job_id: existing.id,
        });
      }
      return { job: existing, created: false };
    });
  }

  private async findByKeys(items: Prepared[]): Promise<Map<string, JobRow>> {
    const rows = await this.db
      .select()
      .from(jobs)
      .where(
        or(
          ...items.map((item) =>
            and(eq(jobs.sellerId, item.sellerId), eq(jobs.idempotencyKey, item.idempotencyKey ?? '')),
          ),
        ),
      );
    return new Map(rows.map((row) => [`${row.sellerId}\u0000${row.idempotencyKey}`, row]));
  }

  /** Queues the recorded jobs, one message per partition; returns the ids that failed. */
  private async enqueue(deliveries: Map<number, Prepared[]>, recorded: Map<string, Date>): Promise<Set<string>> {
    const failed = new Set<string>();
    await Promise.all(
      [...deliveries].map(async ([partition, delivery]) => {
        const group = delivery.filter((item) => recorded.has(item.id));
        if (group.length === 0) return;
        try {
          await this.queues.deliver(
            partition,
            (group[0] as Prepared).queueJobId,
            group.map((item) => item.id),
          );
        } catch (error) {
          this.logger.warn({ err: (error as Error).message, partition, jobs: group.length }, 'could not enqueue');
          for (const item of group) failed.add(item.id);
        }
      }),
    );
    if (failed.size > 0) {
      // Not queued, so not accepted: close the records so no worker or requeue ever applies them.
      await failOpenJobs(this.db, [...failed], 'queue_unavailable', 'The job could not be queued').catch(
        (err: unknown) => this.logger.error({ err }, 'could not close unqueued jobs'),
      );
    }
    return failed;
  }
}

/**
 * Inserts the jobs that are new and returns when each was submitted. One statement whose text
 * never changes: postgres.js prepares it once per connection (Drizzle sends its queries
 * unprepared). Rows go in (seller, key) order, so concurrent batches (of this process or another)
 * take idempotency keys in one order and can never deadlock on each other. The seller is checked
 * by the insert trigger `jobs_name_their_seller`, which takes no lock.
 */
async function insertJobs(db: Database, items: Prepared[]): Promise<Map<string, Date>> {
  const rows = [...items].sort(compareKeys).map((item) => ({
    id: item.id,
    type: item.type,
    seller_id: item.sellerId,
    partition: item.partition,
    queue_job_id: item.queueJobId,
    amount: item.amount?.toString() ?? null,
    phone_number: item.phoneNumber,
    credit_request_id: item.creditRequestId,
    action: item.action,
    processed_by: item.processedBy,
    actor_id: item.actorId,
    actor_ip: item.actorIp,
    idempotency_key: item.idempotencyKey,
    request_hash: item.requestHash,
    request_id: item.requestId,
  }));
  // Drizzle leaves timestamps as text on this client; it parses them itself for its own queries.
  const inserted = await db.$client<Array<{ id: string; submitted_at: string }>>`
    insert into jobs (id, type, seller_id, partition, queue_job_id, amount, phone_number, credit_request_id, action,
                      processed_by, actor_id, actor_ip, idempotency_key, request_hash, request_id)
    select (e.row->>'id')::uuid, e.row->>'type', (e.row->>'seller_id')::uuid, (e.row->>'partition')::smallint,
           (e.row->>'queue_job_id')::uuid, (e.row->>'amount')::bigint, e.row->>'phone_number',
           (e.row->>'credit_request_id')::uuid, e.row->>'action', e.row->>'processed_by', (e.row->>'actor_id')::uuid,
           e.row->>'actor_ip', e.row->>'idempotency_key',
           e.row->>'request_hash', e.row->>'request_id'
    from jsonb_array_elements(${JSON.stringify(rows)}::jsonb) with ordinality as e(row, ord)
    order by e.ord
    on conflict (seller_id, idempotency_key) where idempotency_key is not null do nothing
    returning id, submitted_at`;
  return new Map(inserted.map((row) => [row.id, new Date(row.submitted_at)]));
}

function compareKeys(a: Prepared, b: Prepared): number {
  const left = `${a.sellerId}\u0000${a.idempotencyKey ?? ''}`;
  const right = `${b.sellerId}\u0000${b.idempotencyKey ?? ''}`;
  return left < right ? -1 : left > right ? 1 : 0;
}

function hashRequest(request: unknown): string {
  return createHash('sha256')
    .update(JSON.stringify(request, (_k, v) => (typeof v === 'bigint' ? v.toString() : v)))
    .digest('hex');
}
