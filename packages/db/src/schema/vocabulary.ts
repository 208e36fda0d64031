import { type SQL, sql } from 'drizzle-orm';

/**
 * The closed lists the tables, the money rules and the API share, each written once: the SQL
 * CHECKs, the TypeScript types, the API's zod enums and `isFinalJobStatus` all come from here.
 */

export const jobTypes = ['charge_sale', 'credit_approval'] as const;
export type JobType = (typeof jobTypes)[number];

/** A job in one of these may still take its effect. */
export const openJobStatuses = ['queued', 'processing'] as const;
/**
 * An open job in SQL, as the partial index `jobs_unfinished_idx` and the CHECK
 * `jobs_open_iff_unapplied` state it: not yet applied, and not failed unapplied. It names no
 * `status` on purpose: an index over `status` makes every change of it a non-HOT update (a new row
 * version on any page, an entry in every index), and a sale's settlement, `delivering` →
 * `succeeded`, changes nothing else indexed. A query of open jobs adds this condition, so that the
 * planner can use the index.
 */
export const openJobCondition = 'applied_at is null and error is null';
/** A job in one of these has taken its one effect (or none, for good): nothing more happens to it. */
export const finalJobStatuses = ['succeeded', 'rejected', 'failed'] as const;
/**
 * A sale that is debited (its `charge_sale` row is written) and whose top-up the provider has not yet
 * delivered or refused for certain. Neither open (the partition has applied it, and must never
 * apply it again) nor final (it still ends `succeeded` or, refunded, `rejected`).
 */
export const deliveringJobStatus = 'delivering' as const;
export const jobStatuses = [...openJobStatuses, deliveringJobStatus, ...finalJobStatuses] as const;
export type JobStatus = (typeof jobStatuses)[number];
export type FinalJobStatus = (typeof finalJobStatuses)[number];
export const isFinalJobStatus = (status: string): status is FinalJobStatus =>
  (finalJobStatuses as readonly string[]).includes(status);

export const approvalActions = ['approve', 'reject'] as const;
export type ApprovalAction = (typeof approvalActions)[number];

/** A request in one of these is still open: it may yet be approved or rejected. */
export const openCreditRequestStatuses = ['pending', 'awaiting_second_approval'] as const;
export const creditRequestStatuses = [...openCreditRequestStatuses, 'approved', 'rejected'] as const;
export type CreditRequestStatus = (typeof creditRequestStatuses)[number];
export const isOpenCreditRequest = (status: string): boolean =>
  (openCreditRequestStatuses as readonly string[]).includes(status);

/** What an operator may do: read (viewer), also process credit requests (approver), everything (admin). */
export const operatorRoles = ['admin', 'approver', 'viewer'] as const;
export type OperatorRole = (typeof operatorRoles)[number];

/** Who an audit row says acted: a named operator, a seller's key, or the bootstrap ADMIN_TOKEN. */
export const actorTypes = ['operator', 'seller', 'bootstrap'] as const;
export type ActorType = (typeof actorTypes)[number];

/** Every action the audit trail records (the contract's list). */
export const auditActions = [
  'operator.created',
  'operator.updated',
  'operator.token_rotated',
  'seller.created',
  'seller.updated',
  'seller.key_rotated',
  'credit_request.approved',
  'credit_request.second_approval_given',
  'credit_request.rejected',
  'delivery.resolved',
  'webhook.updated',
  'session.signed_in',
  'session.sign_in_failed',
  'session.signed_out',
] as const;
export type AuditAction = (typeof auditActions)[number];

export const transactionTypes = ['charge_sale', 'credit_increase', 'charge_refund'] as const;
export type TransactionType = (typeof transactionTypes)[number];

/**
 * Where a sale's top-up stands. `pending`: the provider is being asked. `unresolved`: it has not
 * known for DELIVERY_GIVE_UP_AFTER, and an operator decides (it is still asked). `refund_due`: it
 * failed for certain (or an operator chose refund), and the refund waits for the seller's partition.
 * `delivered` and `refunded` are final; `conflict`: the provider's late answer contradicts what an
 * operator chose (a delivery refunded, or a refund for a delivered top-up).
 */
export const deliveryStatuses = ['pending', 'unresolved', 'refund_due', 'delivered', 'refunded', 'conflict'] as const;
export type DeliveryStatus = (typeof deliveryStatuses)[number];
/** What an operator may decide for an unresolved delivery. */
export const deliveryResolutions = ['delivered', 'refund'] as const;
export type DeliveryResolution = (typeof deliveryResolutions)[number];

/** The events a seller's webhook receives. */
export const webhookEventTypes = [
  'charge_sale.succeeded',
  'charge_sale.rejected',
  'credit_request.approved',
  'credit_request.rejected',
] as const;
export type WebhookEventType = (typeof webhookEventTypes)[number];
export const webhookDeliveryStatuses = ['pending', 'delivered', 'failed'] as const;
export type WebhookDeliveryStatus = (typeof webhookDeliveryStatuses)[number];

/** A phone number as stored: an Iranian mobile, `09` and nine more digits. */
export const normalisedPhonePattern = '^09[0-9]{9}$';

/** A list as the right-hand side of a SQL `in (...)`: the text of the CHECKs stays as it was written. */
export function sqlList(values: readonly string[]): SQL {
  return sql.raw(values.map((v) => `'${v.replaceAll("'", "''")}'`).join(', '));
}
