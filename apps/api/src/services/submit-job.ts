import { createHash } from 'node:crypto';
import { jobs } from '@cs/db';
import { recordFailure } from '@cs/ledger';
import type { ChargeSalePayload, CreditApprovalPayload } from '@cs/queue';
import { and, eq } from 'drizzle-orm';
import { uuidv7 } from 'uuidv7';
import type { AppDeps } from '../context.ts';
import { ApiError } from '../errors.ts';

type Payload = Omit<ChargeSalePayload, 'jobId'> | Omit<CreditApprovalPayload, 'jobId'>;

export interface Submission {
  payload: Payload;
  idempotencyKey?: string;
  /** The normalised request that the idempotency key stands for. */
  request?: unknown;
}

export type JobRow = typeof jobs.$inferSelect;

/**
 * Accepts a job: records it in PostgreSQL, then puts it on its seller's partition queue. The row
 * comes first so that a job that got a 202 is never lost, even if Redis later loses it (workers
 * put back jobs that are unfinished in PostgreSQL and missing from Redis).
 *
 * With an idempotency key, the unique (seller, key) constraint decides between concurrent
 * submissions: one row is inserted, every other submission gets that same job back, or 422 when
 * it asked for something else under the same key.
 */
export async function submitJob(deps: AppDeps, submission: Submission): Promise<{ job: JobRow; created: boolean }> {
  const { payload, idempotencyKey } = submission;
  const id = uuidv7();
  const partition = deps.queues.partitionOf(payload.sellerId);
  const requestHash = idempotencyKey ? hashRequest(submission.request ?? payload) : null;
  const fullPayload = { ...payload, jobId: id };

  const [inserted] = await deps.db
    .insert(jobs)
    .values({
      id,
      type: payload.type,
      sellerId: payload.sellerId,
      partition,
      payload: fullPayload,
      idempotencyKey: idempotencyKey ?? null,
      requestHash,
      requestId: payload.requestId ?? null,
    })
    .onConflictDoNothing({ target: [jobs.sellerId, jobs.idempotencyKey] })
    .returning();

  if (!inserted) {
    const [existing] = await deps.db
      .select()
      .from(jobs)
      .where(and(eq(jobs.sellerId, payload.sellerId), eq(jobs.idempotencyKey, idempotencyKey ?? '')))
      .limit(1);
    if (!existing) throw new Error('idempotency conflict without a row');
    if (existing.requestHash !== requestHash) {
      throw new ApiError('idempotency_key_reused', 'This Idempotency-Key was used with a different request', {
        job_id: existing.id,
      });
    }
    return { job: existing, created: false };
  }

  try {
    await deps.queues.add(partition, fullPayload);
  } catch (error) {
    // Not queued, so not accepted: close the record so no worker or requeue ever applies it.
    await recordFailure(deps.db, id, 'queue_unavailable', 'The job could not be queued').catch(() => {});
    deps.logger.warn({ err: (error as Error).message, jobId: id }, 'could not enqueue');
    throw new ApiError('service_unavailable', 'The queue is unavailable; nothing was done, retry later');
  }
  return { job: inserted, created: true };
}

function hashRequest(request: unknown): string {
  return createHash('sha256')
    .update(JSON.stringify(request, (_k, v) => (typeof v === 'bigint' ? v.toString() : v)))
    .digest('hex');
}
