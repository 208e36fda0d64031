import { type Database, jobs } from '@cs/db';
import { defaultJobOptions } from '@cs/queue';
import type { Queue } from 'bullmq';
import { and, asc, eq, inArray, lt, sql } from 'drizzle-orm';
import type { Redis } from 'ioredis';

/**
 * PostgreSQL is the record of every accepted job; Redis only carries it to a worker. If Redis
 * lost jobs (a restart without persistence, a failover), they are still unfinished in
 * PostgreSQL and absent from the queue: put them back. A job re-added under its own id is a
 * no-op if it is in fact still there, and a job that already committed is skipped by the worker.
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
  for (const job of stale) pipeline.exists(queue.toKey(job.id));
  const present = (await pipeline.exec()) ?? [];
  const lost = stale.filter((_, i) => present[i]?.[1] === 0);
  if (lost.length === 0) return 0;
  await queue.addBulk(
    lost.map((job) => ({ name: job.type, data: job.payload, opts: { ...defaultJobOptions, jobId: job.id } })),
  );
  return lost.length;
}
