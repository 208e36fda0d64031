import type { CreditRequestStatus } from '@cs/db';

/**
 * The business refusals, built here and nowhere else: the worker records them as a job's outcome,
 * and the API answers with the same code and words when it can refuse at once (an inactive
 * seller's sale, a request already processed), so a client sees one refusal however it arrives.
 */
export const refusalCodes = [
  'seller_inactive',
  'insufficient_balance',
  'already_processed',
  'seller_not_found',
  'credit_request_not_found',
  'second_approver_required',
  'delivery_failed',
] as const;
export type RefusalCode = (typeof refusalCodes)[number];

/** A business refusal: final, reported to the client, never retried. */
export interface Refusal {
  error: string;
  code: RefusalCode;
  [detail: string]: string | number | null;
}

/** A refusal of one code, so that a caller may say which refusals it can give. */
export type RefusalOf<C extends RefusalCode> = Refusal & { code: C };

export const refuse = {
  sellerInactive: (): RefusalOf<'seller_inactive'> => ({ error: 'Seller is inactive', code: 'seller_inactive' }),
  insufficientBalance: (available: bigint, required: bigint): RefusalOf<'insufficient_balance'> => ({
    error: 'Insufficient balance',
    code: 'insufficient_balance',
    available_balance: available.toString(),
    required_amount: required.toString(),
    shortage: (required - available).toString(),
  }),
  alreadyProcessed: (status: CreditRequestStatus): RefusalOf<'already_processed'> => ({
    error: `Credit request is already ${status}`,
    code: 'already_processed',
    status,
  }),
  secondApproverRequired: (firstApprovedBy: string): RefusalOf<'second_approver_required'> => ({
    error: 'This credit needs the approval of a second, different operator',
    code: 'second_approver_required',
    first_approved_by: firstApprovedBy,
  }),
  /** The provider refused the top-up for certain (or an operator chose refund): the sale was refunded. */
  deliveryFailed: (d: {
    provider: string;
    reason: string;
    refundTransactionId: string;
    attempts: number;
  }): RefusalOf<'delivery_failed'> => ({
    error: 'The top-up could not be delivered; the amount was refunded',
    code: 'delivery_failed',
    provider: d.provider,
    provider_reason: d.reason,
    refund_transaction_id: d.refundTransactionId,
    attempts: d.attempts,
  }),
  sellerNotFound: (): RefusalOf<'seller_not_found'> => ({ error: 'Seller not found', code: 'seller_not_found' }),
  creditRequestNotFound: (): RefusalOf<'credit_request_not_found'> => ({
    error: 'Credit request not found',
    code: 'credit_request_not_found',
  }),
};
