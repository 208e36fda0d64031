import { type Database, jobs, openJobCondition, openJobStatuses } from '@cs/db';
import { refundsWaiting } from '@cs/ledger';
import { deliver, refundMessageId } from '@cs/queue';
import type { Queue } from 'bullmq';
import { and, asc, eq, inArray, lt, sql } from 'drizzle-orm';

/** How long a job may stay open before its message is looked for. */
const GRACE_MS = 10_000;
/** Most jobs put back by one check. */
const LIMIT = 500;

/**
 * PostgreSQL is the record of every accepted job; Redis only carries its id to a worker. Puts
 * back the jobs of a partition that are open in PostgreSQL but that the queue will never deliver:
 * - their message is absent from Redis (a restart without persistence, a failover);
 * - their message is finished in BullMQ while they are not: failed (it gave up: too many stalls,
 *   or attempts used up by workers that handed it back while shutting down), or completed
 *   without naming them (its data was rewritten in Redis). It is removed first: its id is in the
 *   way of the new one, and retrying it as it was would deliver the same rewritten data again.
 * Either way the message is added again from the record, under its own id, naming those of its
 * jobs that are still open. That is safe: a job that already committed is skipped by the worker.
 *
 * Returns how many jobs were put back.
 */
export async function requeueLostJobs(db: Database, queue: Queue, partition: number): Promise<number> {
  const stale = await db
    .select({ id: jobs.id, queueJobId: jobs.queueJobId })
    .from(jobs)
    .where(
      and(
        eq(jobs.partition, partition),
        sql.raw(openJobCondition),
        inArray(jobs.status, [...openJobStatuses]),
        lt(jobs.submittedAt, sql`now() - make_interval(secs => ${GRACE_MS / 1000})`),
      ),
    )
    .orderBy(asc(jobs.submittedAt))
    .limit(LIMIT);
  if (stale.length === 0) return 0;

  const messages = new Map<string, string[]>();
  for (const job of stale) messages.set(job.queueJobId, [...(messages.get(job.queueJobId) ?? []), job.id]);

  const again: Array<{ id: string; jobIds: string[] }> = [];
  for (const [id, jobIds] of messages) {
    const state = await queue.getJobState(id);
    if (state === 'completed' || state === 'failed') await (await queue.getJob(id))?.remove();
    else if (state !== 'unknown') continue; // waiting, delayed or in hand: it will be delivered
    again.push({ id, jobIds });
  }
  if (again.length > 0) await deliver(queue, again);
  return again.reduce((count, m) => count + m.jobIds.length, 0);
}

/**
 * Puts back the refunds of a partition that PostgreSQL has due and the queue will never deliver:
 * the delivery stage marks a refund due, then queues its message, and may die in between, or the
 * message may be lost with Redis. As above: a refund already written is not written again (the
 * job is final, and the ledger refuses a second refund of one sale).
 */
export async function requeueLostRefunds(db: Database, queue: Queue, partition: number): Promise<number> {
  const due = await refundsWaiting(db, partition, GRACE_MS);
  let count = 0;
  for (const jobId of due) {
    const id = refundMessageId(jobId);
    const state = await queue.getJobState(id);
    if (state === 'completed' || state === 'failed') await (await queue.getJob(id))?.remove();
    else if (state !== 'unknown') continue;
    await deliver(queue, [{ id, jobIds: [jobId] }]);
    count++;
  }
  return count;
}
