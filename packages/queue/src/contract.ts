import type { JobStatus } from '@cs/db';
import type { JobsOptions } from 'bullmq';
import { z } from 'zod';

/** Job types, as the API shows them and as queue messages carry them. */
export const JobName = {
  chargeSale: 'charge_sale',
  creditApproval: 'credit_approval',
} as const;

const uuid = z.uuid();
/** A job id as the queue carries it: a UUID, which every job record is keyed by. */
export const isJobId = (value: unknown): value is string => uuid.safeParse(value).success;
const digits = z.string().regex(/^[1-9][0-9]*$/);

export const chargeSalePayload = z.object({
  type: z.literal(JobName.chargeSale),
  jobId: uuid,
  sellerId: uuid,
  phoneNumber: z.string().regex(/^09[0-9]{9}$/),
  /** Integer rials as a string of digits: JSON has no bigint. */
  amount: digits,
  requestId: z.string().optional(),
});
export type ChargeSalePayload = z.infer<typeof chargeSalePayload>;

export const creditApprovalPayload = z.object({
  type: z.literal(JobName.creditApproval),
  jobId: uuid,
  sellerId: uuid,
  creditRequestId: uuid,
  action: z.enum(['approve', 'reject']),
  processedBy: z.string().min(1),
  requestId: z.string().optional(),
});
export type CreditApprovalPayload = z.infer<typeof creditApprovalPayload>;

/** What a queue job carries; the worker parses it before doing anything. */
export const jobPayload = z.discriminatedUnion('type', [chargeSalePayload, creditApprovalPayload]);
export type JobPayload = z.infer<typeof jobPayload>;

/**
 * What one queue message carries: jobs of one partition accepted together, oldest first. Its
 * BullMQ id is the first job's id, recorded on every job it carries (`jobs.queue_job_id`). The
 * queue costs a few Lua calls per message (add, take, finish), so a burst for a seller costs
 * them once rather than once per sale.
 */
export interface Delivery {
  jobs: JobPayload[];
}
export const deliveryName = 'delivery';

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
  type: 'charge_sale' | 'credit_approval';
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
}
