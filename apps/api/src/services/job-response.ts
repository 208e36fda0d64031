import { isFinalJobStatus, jobs } from '@cs/db';
import { eq } from 'drizzle-orm';
import type { Context } from 'hono';
import type { AppDeps, AppEnv } from '../context.ts';
import type { JobRow } from './submit-job.ts';
import { jobView } from './views.ts';

const MAX_WAIT_SECONDS = 30;

/** Seconds asked for by `Prefer: wait=N` (RFC 7240), capped at 30; 0 when absent. */
export function preferredWait(header: string | undefined): number {
  const match = /(?:^|[,;\s])wait\s*=\s*"?(\d{1,6})"?/i.exec(header ?? '');
  return match ? Math.min(Number(match[1]), MAX_WAIT_SECONDS) : 0;
}

/** The job as the contract shows it; a queued job that a worker holds right now is `processing`. */
export async function currentJobView(deps: AppDeps, row: JobRow) {
  if (row.status === 'queued') {
    const active = await deps.queues.isActive(row.partition, row.queueJobId).catch(() => false);
    if (active) return jobView(row, 'processing');
  }
  return jobView(row);
}

/**
 * Answers a submission: 202 with where to look, or, when the client asked to wait and the job
 * finishes in time, 200 with the finished job.
 */
export async function respondWithJob(c: Context<AppEnv>, job: JobRow) {
  const deps = c.var.deps;
  const waitSeconds = preferredWait(c.req.header('prefer'));
  let row = job;
  if (waitSeconds > 0 && !isFinalJobStatus(row.status)) {
    const waiter = deps.jobEvents.waitForFinal(job.id, waitSeconds * 1000);
    // A client that hangs up is waited for no longer (the job runs on all the same).
    const signal = c.req.raw.signal;
    const hangUp = () => waiter.cancel();
    signal.addEventListener('abort', hangUp, { once: true });
    try {
      // The job may have finished before the subscription: look once after subscribing.
      const [now] = await deps.db.select().from(jobs).where(eq(jobs.id, job.id));
      if (signal.aborted || (now && isFinalJobStatus(now.status))) waiter.cancel();
      else if ((await waiter.done) || !signal.aborted) {
        // Final or not, the answer says where the job is now (`delivering`, say, once it is debited).
        const [later] = await deps.db.select().from(jobs).where(eq(jobs.id, job.id));
        if (later) row = later;
      }
      if (now && isFinalJobStatus(now.status)) row = now;
    } finally {
      signal.removeEventListener('abort', hangUp);
    }
  }
  if (waitSeconds > 0 && isFinalJobStatus(row.status)) {
    c.header('Preference-Applied', `wait=${waitSeconds}`);
    return c.json(jobView(row), 200);
  }
  return c.json({ job_id: row.id, status: row.status, status_url: `/api/jobs/${row.id}` }, 202);
}
