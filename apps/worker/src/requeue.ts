import { type Database, jobs } from '@cs/db';
import { type Delivery, defaultJobOptions, deliveryName } from '@cs/queue';
import type { Queue } from 'bullmq';
import { and, asc, eq, inArray, lt, sql } from 'drizzle-orm';
import type { Redis } from 'ioredis';

/**
 * PostgreSQL is the record of every accepted job; Redis only carries it to a worker. Put back the
 * jobs that are unfinished in PostgreSQL but that the queue will never deliver:
 * - their message is absent from Redis (a restart without persistence, a failover): re-added
 *   under its own id, naming those of its jobs that are still unfinished;
 * - their message is finished in BullMQ while they are not: failed (it gave up: too many stalls,
 *   or attempts used up by workers that handed it back while shutting down), or completed
 *   without naming them (its data was rewritten in Redis): removed, and added again from the
 *   record.
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
    .select({ id: jobs.id, queueJobId: jobs.queueJobId })
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

  const messages = new Map<string, string[]>();
  for (const job of stale) {
    messages.set(job.queueJobId, [...(messages.get(job.queueJobId) ?? []), job.id]);
  }
  const ids = [...messages.keys()];
  const pipeline = redis.pipeline();
  for (const id of ids) {
    pipeline.exists(queue.toKey(id));
    pipeline.zscore(queue.toKey('failed'), id);
    pipeline.zscore(queue.toKey('completed'), id);
  }
  const replies = (await pipeline.exec()) ?? [];
  const lost = ids.filter((_, i) => replies[3 * i]?.[1] === 0);
  const finished = ids.filter(
    (_, i) => replies[3 * i]?.[1] === 1 && (replies[3 * i + 1]?.[1] !== null || replies[3 * i + 2]?.[1] !== null),
  );

  // A finished message is in the way of its own id: remove it, then add it anew like a lost one.
  for (const id of finished) await (await queue.getJob(id))?.remove();
  const again = [...lost, ...finished];
  if (again.length > 0) {
    await queue.addBulk(
      again.map((id) => {
        const delivery: Delivery = { ids: messages.get(id) ?? [] };
        return { name: deliveryName, data: delivery, opts: { ...defaultJobOptions, jobId: id } };
      }),
    );
  }
  return again.reduce((count, id) => count + (messages.get(id)?.length ?? 0), 0);
}
