import { createHash } from 'node:crypto';
import { type Database, jobs } from '@cs/db';
import { recordFailure } from '@cs/ledger';
import type { ChargeSalePayload, CreditApprovalPayload, JobPayload } from '@cs/queue';
import { Batcher } from '@cs/queue';
import { and, eq, or } from 'drizzle-orm';
import type { Logger } from 'pino';
import { uuidv7 } from 'uuidv7';
import type { AppDeps } from '../context.ts';
import { ApiError } from '../errors.ts';
import type { JobQueues } from './job-queues.ts';

type Payload = Omit<ChargeSalePayload, 'jobId'> | Omit<CreditApprovalPayload, 'jobId'>;

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

/** Accepts a job: see {@link JobSubmitter}. */
export function submitJob(deps: AppDeps, submission: Submission): Promise<Accepted> {
  return deps.submitter.submit(submission);
}

type Prepared = typeof jobs.$inferInsert & { id: string; payload: JobPayload; partition: number };

/**
 * Accepts jobs: records each in PostgreSQL, then puts it on its seller's partition queue. The
 * row comes first so that a job that got a 202 is never lost, even if Redis later loses it
 * (workers put back jobs that are unfinished in PostgreSQL and missing from Redis).
 *
 * Concurrent submissions are gathered: one multi-row INSERT and one pipelined `addBulk` per
 * partition serve a whole batch, so a burst costs a few round trips instead of two per request.
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

  constructor(
    private readonly db: Database,
    private readonly queues: JobQueues,
    private readonly logger: Logger,
  ) {}

  submit({ payload, idempotencyKey, request }: Submission): Promise<Accepted> {
    const id = uuidv7();
    return this.batcher.submit({
      id,
      type: payload.type,
      sellerId: payload.sellerId,
      partition: this.queues.partitionOf(payload.sellerId),
      payload: { ...payload, jobId: id } as JobPayload,
      idempotencyKey: idempotencyKey ?? null,
      requestHash: idempotencyKey ? hashRequest(request ?? payload) : null,
      requestId: payload.requestId ?? null,
    });
  }

  private async acceptAll(items: Prepared[]): Promise<Array<Accepted | Error>> {
    // Rows go in (seller, key) order, so concurrent batches (of this process or another) lock
    // idempotency keys and sellers in one order and can never deadlock on each other.
    const ordered = [...items].sort((a, b) => compareKeys(a, b));
    const inserted = await this.db
      .insert(jobs)
      .values(ordered)
      .onConflictDoNothing({ target: [jobs.sellerId, jobs.idempotencyKey] })
      .returning();
    const byId = new Map(inserted.map((row) => [row.id, row]));
    const replays = items.filter((item) => !byId.has(item.id));
    const earlier = replays.length > 0 ? await this.findByKeys(replays) : new Map<string, JobRow>();

    const queueFailed = await this.enqueue(items.filter((item) => byId.has(item.id)));

    return items.map((item) => {
      const row = byId.get(item.id);
      if (row) {
        return queueFailed.has(item.id)
          ? new ApiError('service_unavailable', 'The queue is unavailable; nothing was done, retry later')
          : { job: row, created: true };
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

  /** Queues the recorded jobs, one pipelined call per partition; returns the ids that failed. */
  private async enqueue(items: Prepared[]): Promise<Set<string>> {
    const byPartition = new Map<number, Prepared[]>();
    for (const item of items) byPartition.set(item.partition, [...(byPartition.get(item.partition) ?? []), item]);
    const failed = new Set<string>();
    await Promise.all(
      [...byPartition].map(async ([partition, group]) => {
        try {
          await this.queues.addBulk(
            partition,
            group.map((item) => item.payload),
          );
        } catch (error) {
          this.logger.warn({ err: (error as Error).message, partition, jobs: group.length }, 'could not enqueue');
          for (const item of group) failed.add(item.id);
        }
      }),
    );
    if (failed.size > 0) {
      // Not queued, so not accepted: close the records so no worker or requeue ever applies them.
      await recordFailure(this.db, [...failed], 'queue_unavailable', 'The job could not be queued').catch(
        (err: unknown) => this.logger.error({ err }, 'could not close unqueued jobs'),
      );
    }
    return failed;
  }
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
