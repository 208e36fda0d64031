import type { Database } from './client.ts';
import { openJobStatuses } from './schema/vocabulary.ts';

/** Why a job ended `failed`: it was never applied, and never will be. */
export const jobFailureCodes = ['queue_unavailable', 'internal_error', 'unknown_job'] as const;
export type JobFailureCode = (typeof jobFailureCodes)[number];

/**
 * A PostgreSQL array literal of distinct values, sent as one parameter (`= any($1::uuid[])`): the
 * statement's text never changes with the number of values, so it is prepared once.
 */
export function arrayLiteral(values: readonly string[]): string {
  return `{${[...new Set(values)].join(',')}}`;
}

const open = arrayLiteral(openJobStatuses);

/**
 * Closes jobs as `failed` with nothing applied: the API's jobs whose message could not be queued,
 * the worker's job that could not be applied at all. A job already final is left as it is: a late
 * failure must never overwrite an outcome.
 */
export async function failOpenJobs(db: Database, jobIds: readonly string[], code: JobFailureCode, message: string) {
  if (jobIds.length === 0) return;
  await db.$client`
    update jobs set status = 'failed', error = ${JSON.stringify({ error: message, code })}::jsonb, finished_at = now()
    where id = any(${arrayLiteral(jobIds)}::uuid[]) and status = any(${open}::text[])`;
}
