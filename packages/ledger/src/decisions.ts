/**
 * The money rules, as pure functions over the state a transaction has locked. They decide; the
 * caller writes. Keeping them free of I/O lets a batch of jobs be decided one after another
 * against the running balance, exactly as if each had its own transaction.
 */
import type { CreditRequestStatus } from '@cs/db';
import { type Refusal, refuse } from './refusals.ts';

export interface SellerState {
  id: string;
  balance: bigint;
  isActive: boolean;
}

export interface CreditRequestState {
  id: string;
  sellerId: string;
  amount: bigint;
  status: CreditRequestStatus;
  /** Who gave the first of two approvals (status `awaiting_second_approval`); else null. */
  firstApprovedBy: string | null;
}

export type SaleDecision = { ok: true; newBalance: bigint } | { ok: false; refusal: Refusal };

export function decideSale(seller: SellerState, amount: bigint): SaleDecision {
  if (!seller.isActive) return { ok: false, refusal: refuse.sellerInactive() };
  if (seller.balance < amount) return { ok: false, refusal: refuse.insufficientBalance(seller.balance, amount) };
  return { ok: true, newBalance: seller.balance - amount };
}

export type ApprovalDecision =
  | { ok: true; status: 'approved'; newBalance: bigint; secondApproval: boolean }
  | { ok: true; status: 'awaiting_second_approval' }
  | { ok: true; status: 'rejected' }
  | { ok: false; refusal: Refusal };

/** Who processes a request, as its job records it (an operator's email, or `bootstrap`), and the rule of two. */
export interface ApprovalAsk {
  action: 'approve' | 'reject';
  by: string;
  /** Requests above this many rials need two different operators; undefined: one is enough. */
  secondApprovalAbove: bigint | undefined;
}

/**
 * A request is decided once: approved (credited), or rejected, from either open status. Above the
 * threshold of two approvals, the first approval only records its operator; the credit needs a
 * second approval by another one. Once a request awaits its second approval it needs another
 * operator whatever the threshold has since become.
 */
export function decideCreditRequest(
  seller: SellerState,
  request: CreditRequestState,
  { action, by, secondApprovalAbove }: ApprovalAsk,
): ApprovalDecision {
  if (request.status !== 'pending' && request.status !== 'awaiting_second_approval') {
    return { ok: false, refusal: refuse.alreadyProcessed(request.status) };
  }
  if (action === 'reject') return { ok: true, status: 'rejected' };
  if (request.status === 'awaiting_second_approval') {
    const first = request.firstApprovedBy ?? '';
    if (first === by) return { ok: false, refusal: refuse.secondApproverRequired(first) };
    return { ok: true, status: 'approved', newBalance: seller.balance + request.amount, secondApproval: true };
  }
  if (secondApprovalAbove !== undefined && request.amount > secondApprovalAbove) {
    return { ok: true, status: 'awaiting_second_approval' };
  }
  return { ok: true, status: 'approved', newBalance: seller.balance + request.amount, secondApproval: false };
}
