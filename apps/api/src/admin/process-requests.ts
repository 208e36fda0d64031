import { creditRequests, isFinalJobStatus, isOpenCreditRequest, jobs } from '@cs/db';
import { inArray } from 'drizzle-orm';
import type { AppDeps } from '../context.ts';
import type { ApprovalBy } from '../middleware/auth.ts';
import { submitJob } from '../services/submit-job.ts';
import type { Flash } from './flash.ts';
import { rials } from './views.tsx';

export type CreditAction = 'approve' | 'reject';

/** What became of one request the operator asked to process. */
export type Outcome =
  | { id: string; kind: 'done'; amount: bigint }
  | { id: string; kind: 'already'; status: string }
  | { id: string; kind: 'missing' }
  | { id: string; kind: 'queued'; jobId: string }
  | { id: string; kind: 'failed'; jobId?: string; message: string };

/** How long a form submission waits for the worker before it reports jobs as still queued. */
export const PROCESS_WAIT_MS = 5_000;
/** Most requests processed by one submission. */
export const MAX_BATCH = 100;

/**
 * Approves or rejects credit requests the way the API does: one job each on the seller's
 * partition, applied by the worker, which alone decides (under lock) whether a request is still
 * pending. Waits up to `waitMs` for the outcomes so the operator sees what happened.
 */
export async function processCreditRequests(
  deps: AppDeps,
  ids: readonly string[],
  action: CreditAction,
  by: ApprovalBy,
  requestId: string,
  waitMs = PROCESS_WAIT_MS,
): Promise<Outcome[]> {
  const rows = ids.length
    ? await deps.db
        .select()
        .from(creditRequests)
        .where(inArray(creditRequests.id, [...ids]))
    : [];
  const byId = new Map(rows.map((row) => [row.id, row]));
  const submitted = new Map<string, { jobId: string; amount: bigint }>();
  const early = new Map<string, Outcome>();

  for (const id of ids) {
    const request = byId.get(id);
    if (!request) early.set(id, { id, kind: 'missing' });
    else if (!isOpenCreditRequest(request.status)) early.set(id, { id, kind: 'already', status: request.status });
    else {
      try {
        const { job } = await submitJob(deps, {
          payload: {
            type: 'credit_approval',
            sellerId: request.sellerId,
            creditRequestId: id,
            action,
            ...by,
            requestId,
          },
        });
        submitted.set(id, { jobId: job.id, amount: request.amount });
      } catch (error) {
        // Reported with the others: the requests queued before this one are still being applied.
        deps.logger.warn({ err: (error as Error).message, creditRequestId: id }, 'credit request could not be queued');
        early.set(id, { id, kind: 'failed', message: 'it could not be queued; retry in a moment' });
      }
    }
  }

  const jobIds = [...submitted.values()].map((s) => s.jobId);
  const finals = await waitForJobs(deps, jobIds, waitMs);
  return ids.map((id): Outcome => {
    const known = early.get(id);
    if (known) return known;
    const sent = submitted.get(id);
    if (!sent) return { id, kind: 'missing' };
    const job = finals.get(sent.jobId);
    if (!job || !isFinalJobStatus(job.status)) return { id, kind: 'queued', jobId: sent.jobId };
    if (job.status === 'succeeded') return { id, kind: 'done', amount: sent.amount };
    const error = (job.error ?? {}) as { code?: string; error?: string };
    if (error.code === 'already_processed') return { id, kind: 'already', status: 'processed' };
    return { id, kind: 'failed', jobId: sent.jobId, message: error.error ?? job.status };
  });
}

type JobRow = typeof jobs.$inferSelect;

async function waitForJobs(deps: AppDeps, jobIds: string[], waitMs: number): Promise<Map<string, JobRow>> {
  if (jobIds.length === 0) return new Map();
  const load = async () =>
    new Map((await deps.db.select().from(jobs).where(inArray(jobs.id, jobIds))).map((j) => [j.id, j]));
  // Subscribe before looking: a job that finishes between the look and the subscription is still seen.
  const waiters = jobIds.map((id) => ({ id, waiter: deps.jobEvents.waitForFinal(id, waitMs) }));
  const now = await load();
  for (const { id, waiter } of waiters) if (isFinalJobStatus(now.get(id)?.status ?? 'queued')) waiter.cancel();
  const finishedLate = await Promise.all(waiters.map(({ waiter }) => waiter.done));
  return finishedLate.some(Boolean) ? load() : now;
}

const plural = (n: number, one: string, many = `${one}s`) => `${n} ${n === 1 ? one : many}`;

/** One line for the operator saying what the submission did. */
export function summarise(action: CreditAction, outcomes: readonly Outcome[]): Flash {
  const done = outcomes.filter((o) => o.kind === 'done');
  const parts: string[] = [];
  if (done.length > 0) {
    const total = done.reduce((sum, o) => sum + o.amount, 0n);
    parts.push(
      action === 'approve'
        ? `Approved ${plural(done.length, 'request')}: ${rials(total)} rials credited.`
        : `Rejected ${plural(done.length, 'request')} (${rials(total)} rials); nothing was credited.`,
    );
  }
  const already = outcomes.filter((o) => o.kind === 'already').length;
  if (already > 0)
    parts.push(`${plural(already, 'request was', 'requests were')} already processed; left as they were.`);
  const missing = outcomes.filter((o) => o.kind === 'missing').length;
  if (missing > 0) parts.push(`${plural(missing, 'request')} not found.`);
  const queued = outcomes.filter((o) => o.kind === 'queued').length;
  if (queued > 0) parts.push(`${plural(queued, 'request is', 'requests are')} still queued: reload in a moment.`);
  const failed = outcomes.filter((o) => o.kind === 'failed');
  for (const f of failed) {
    parts.push(`Request ${f.id} failed${f.jobId ? ` (job ${f.jobId})` : ''}: ${f.message}. Nothing was applied.`);
  }
  const kind = failed.length > 0 ? 'error' : done.length === outcomes.length ? 'success' : 'warning';
  return { kind, text: parts.join(' ') || 'Nothing to do.' };
}
