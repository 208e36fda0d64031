import { setTimeout as sleep } from 'node:timers/promises';
import { type Database, isRetryableDatabaseError } from '@cs/db';
import { applyJobs, type JobOutcome, type LedgerJob, recordFailure } from '@cs/ledger';
import { type JobPayload, jobPayload } from '@cs/queue';
import type { Logger } from 'pino';

/** What a queue job is to the batch processor: its id and its raw data. */
export interface QueuedJob {
  id: string;
  data: unknown;
}

export interface BatchDeps {
  db: Database;
  logger: Logger;
  /** Aborted when the process is shutting down: in-place retries stop, and the batch is left to redelivery. */
  signal: AbortSignal;
}

/**
 * Applies a partition's batch in one transaction and returns one outcome per job, in input order.
 *
 * Transient failures (PostgreSQL down, restarting, a serialization conflict) are retried here,
 * in place, for as long as it takes: handing the jobs back to the queue would let a later job of
 * the same seller overtake them. A job that fails for any other reason is isolated by applying
 * the batch one job at a time, so one bad job never holds back its partition.
 */
export async function processBatch(deps: BatchDeps, queued: readonly QueuedJob[]): Promise<JobOutcome[]> {
  const outcomes = new Map<string, JobOutcome>();
  const valid: LedgerJob[] = [];
  for (const job of queued) {
    const parsed = jobPayload.safeParse(job.data);
    if (parsed.success && parsed.data.jobId === job.id) valid.push(toLedgerJob(parsed.data));
    else outcomes.set(job.id, await fail(deps, job.id, 'invalid_payload', 'The job payload is malformed'));
  }
  // Submission order: ids are time-ordered (UUIDv7), so a batch is applied oldest first even when
  // redelivered jobs come back in a different order.
  valid.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));

  try {
    for (const outcome of await withRetry(deps, () => applyJobs(deps.db, valid))) {
      outcomes.set(outcome.jobId, outcome);
    }
  } catch (error) {
    if (deps.signal.aborted) throw error;
    deps.logger.error({ err: error, jobs: valid.length }, 'batch failed; applying its jobs one at a time');
    for (const job of valid) {
      try {
        const [outcome] = await withRetry(deps, () => applyJobs(deps.db, [job]));
        if (outcome) outcomes.set(outcome.jobId, outcome);
      } catch (jobError) {
        if (deps.signal.aborted) throw jobError;
        deps.logger.error({ err: jobError, jobId: job.id }, 'job failed; recorded as failed, nothing applied');
        outcomes.set(job.id, await fail(deps, job.id, 'internal_error', 'The job could not be applied'));
      }
    }
  }
  return queued.map(
    (job) =>
      outcomes.get(job.id) ?? {
        jobId: job.id,
        status: 'failed',
        result: null,
        error: { error: 'No outcome', code: 'internal_error' },
        replayed: false,
      },
  );
}

function toLedgerJob(payload: JobPayload): LedgerJob {
  if (payload.type === 'charge_sale') {
    return {
      id: payload.jobId,
      type: 'charge_sale',
      sellerId: payload.sellerId,
      phoneNumber: payload.phoneNumber,
      amount: BigInt(payload.amount),
    };
  }
  return {
    id: payload.jobId,
    type: 'credit_approval',
    sellerId: payload.sellerId,
    creditRequestId: payload.creditRequestId,
    action: payload.action,
    processedBy: payload.processedBy,
  };
}

async function fail(deps: BatchDeps, jobId: string, code: string, message: string): Promise<JobOutcome> {
  await withRetry(deps, () => recordFailure(deps.db, jobId, code, message));
  return { jobId, status: 'failed', result: null, error: { error: message, code }, replayed: false };
}

async function withRetry<T>(deps: BatchDeps, run: () => Promise<T>): Promise<T> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await run();
    } catch (error) {
      if (!isRetryableDatabaseError(error) || deps.signal.aborted) throw error;
      const delay = Math.min(50 * 2 ** attempt, 2000);
      if (attempt % 10 === 0) {
        deps.logger.warn({ code: (error as { code?: string }).code, attempt }, 'database unavailable; retrying');
      }
      await sleep(delay, undefined, { signal: deps.signal }).catch(() => {});
    }
  }
}
