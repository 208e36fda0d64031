import type { JobStatus, JobType } from '@cs/db';
import type { JobsOptions } from 'bullmq';
import { z } from 'zod';

const uuid = z.uuid();
/** A job id as the queue carries it: a UUID, which every job record is keyed by. */
export const isJobId = (value: unknown): value is string => uuid.safeParse(value).success;

/**
 * What one queue message carries: the ids of jobs of one partition accepted together, oldest
 * first, and nothing else. PostgreSQL is the record of what each job does; a worker reads it from
 * the job's row, so whoever can write to Redis can delay or repeat a job, never change it. The
 * message's BullMQ id is the first job's id, recorded on every job it carries
 * (`jobs.queue_job_id`). The queue costs a few Lua calls per message (add, take, finish), so a
 * burst for a seller costs them once rather than once per sale.
 */
export interface Delivery {
  ids: string[];
}
export const deliveryName = 'delivery';

/**
 * The message that brings a sale back to its partition for its refund: named after the job, so
 * queuing it twice leaves one (a sale is refunded once; BullMQ ids may not hold a colon).
 */
export const refundMessageId = (jobId: string) => `refund-${jobId}`;

/** The job ids a message names; anything else in it is ignored. */
export function jobIdsOf(data: unknown): string[] {
  const ids = (data as Partial<Delivery> | null | undefined)?.ids;
  return Array.isArray(ids) ? ids.filter(isJobId).map((id) => id.toLowerCase()) : [];
}

/**
 * Finished jobs leave Redis soon: their outcome lives in PostgreSQL. A few are kept for the
 * dashboard. The worker retries transient failures in place (handing a job back would let a
 * later job of the same seller overtake it); BullMQ's attempts only cover a worker that gave a
 * job back while shutting down.
 */
export const defaultJobOptions: JobsOptions = {
  attempts: 10,
  backoff: { type: 'fixed', delay: 1000 },
  removeOnComplete: { count: 1000 },
  removeOnFail: { count: 5000 },
};

/** The job resource of the HTTP contract, as stored and as pushed to API processes. */
export interface JobResource {
  job_id: string;
  type: JobType;
  seller_id: string;
  status: JobStatus;
  submitted_at: string;
  finished_at: string | null;
  result: Record<string, unknown> | null;
  error: Record<string, unknown> | null;
}

/** A status change, published by workers, consumed by API processes (wait, SSE). */
export interface JobEvent {
  job_id: string;
  status: JobStatus;
  /** On final events: the job's type, and milliseconds from queued to committed. */
  type?: string;
  latency_ms?: number;
  /** A sale's top-up settled or stuck: by which provider, how, and milliseconds from debit to then. */
  delivery?: { provider: string; outcome: DeliveryOutcome; latency_ms: number };
}

/** What the delivery stage reports of a top-up, for the metrics. */
export type DeliveryOutcome = 'delivered' | 'refund_due' | 'unresolved' | 'conflict';
