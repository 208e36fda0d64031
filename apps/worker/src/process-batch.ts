import { setTimeout as sleep } from 'node:timers/promises';
import { type Database, failOpenJobs, isRetryableDatabaseError } from '@cs/db';
import { applyJobs, failure, type JobOutcome, type JobRef, type Rules } from '@cs/ledger';
import type { Logger } from 'pino';

export interface BatchDeps {
  db: Database;
  logger: Logger;
  /** The ledger's chain key (LEDGER_HMAC_KEY). */
  ledgerKey: string;
  /** The deployment's money rules (CREDIT_SECOND_APPROVAL_ABOVE). */
  rules: Rules;
  /** Aborted when the process is shutting down: in-place retries stop, and the batch is left to redelivery. */
  signal: AbortSignal;
}

/**
 * Applies the jobs that queue messages named, in one transaction, and returns their outcomes by
 * job id. What each job does is read from its row (see `applyJobs`).
 *
 * Transient failures (PostgreSQL down, restarting, a serialization conflict) are retried here,
 * in place, for as long as it takes: handing the jobs back to the queue would let a later job of
 * the same seller overtake them. A job that fails for any other reason is isolated by applying
 * the batch one job at a time, so one bad job never holds back its partition.
 */
export async function processBatch(deps: BatchDeps, refs: readonly JobRef[]): Promise<Map<string, JobOutcome>> {
  const outcomes = new Map<string, JobOutcome>();
  try {
    for (const outcome of await withRetry(deps, () => applyJobs(deps.db, refs, deps.ledgerKey, deps.rules))) {
      // A job named by its own partition's message and by a stray one has two outcomes: what was
      // decided, and the stray's "ignored". The decision is the one its partition must see.
      if (!outcome.ignored || !outcomes.has(outcome.jobId)) outcomes.set(outcome.jobId, outcome);
    }
  } catch (error) {
    if (deps.signal.aborted) throw error;
    deps.logger.error({ err: error, jobs: refs.length }, 'batch failed; applying its jobs one at a time');
    for (const ref of refs) {
      try {
        const [outcome] = await withRetry(deps, () => applyJobs(deps.db, [ref], deps.ledgerKey, deps.rules));
        if (outcome) outcomes.set(outcome.jobId, outcome);
      } catch (jobError) {
        if (deps.signal.aborted) throw jobError;
        deps.logger.error({ err: jobError, jobId: ref.id }, 'job failed; recorded as failed, nothing applied');
        const message = 'The job could not be applied';
        await withRetry(deps, () => failOpenJobs(deps.db, [ref.id], 'internal_error', message));
        outcomes.set(ref.id, failure(ref.id, 'internal_error', message));
      }
    }
  }
  return outcomes;
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
