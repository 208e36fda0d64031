import { type Database, jobs } from '@cs/db';
import { defaultJobOptions } from '@cs/queue';
import type { Queue } from 'bullmq';
import { and, asc, eq, inArray, lt, sql } from 'drizzle-orm';
import type { Redis } from 'ioredis';

/**
 * PostgreSQL is the record of every accepted job; Redis only carries it to a worker. Put back the
 * jobs that are unfinished in PostgreSQL but that the queue will never deliver:
 * - absent from Redis (a restart without persistence, a failover): re-added under their own id;
 * - in BullMQ's failed set (it gave up: too many stalls, or attempts used up by workers that
 *   handed them back while shutting down): retried.
 * Either is safe: a job that already committed is skipped by the worker.
 *
 * Returns how many jobs were put back.
 */
export async function requeueLostJobs(
  db: Database,
  redis: Redis,
  queue: Queue,
  partition: number,
  { olderThanMs = 10_000, limit = 500 } = {},
): Promise<number> {
  const stale = await db
    .select({ id: jobs.id, type: jobs.type, payload: jobs.payload })
    .from(jobs)
    .where(
      and(
        eq(jobs.partition, partition),
        inArray(jobs.status, ['queued', 'processing']),
        lt(jobs.submittedAt, sql`now() - make_interval(secs => ${olderThanMs / 1000})`),
      ),
    )
    .orderBy(asc(jobs.submittedAt))
    .limit(limit);
  if (stale.length === 0) return 0;

  const pipeline = redis.pipeline();
  for (const job of stale) {
    pipeline.exists(queue.toKey(job.id));
    pipeline.zscore(queue.toKey('failed'), job.id);
  }
  const replies = (await pipeline.exec()) ?? [];
  const lost = stale.filter((_, i) => replies[2 * i]?.[1] === 0);
  const givenUp = stale.filter((_, i) => replies[2 * i]?.[1] === 1 && replies[2 * i + 1]?.[1] !== null);

  if (lost.length > 0) {
    await queue.addBulk(
      lost.map((job) => ({ name: job.type, data: job.payload, opts: { ...defaultJobOptions, jobId: job.id } })),
    );
  }
  for (const { id } of givenUp) {
    const job = await queue.getJob(id);
    await job?.retry('failed');
  }
  return lost.length + givenUp.length;
}
