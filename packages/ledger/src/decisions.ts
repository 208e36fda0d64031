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
}

export type SaleDecision = { ok: true; newBalance: bigint } | { ok: false; refusal: Refusal };

export function decideSale(seller: SellerState, amount: bigint): SaleDecision {
  if (!seller.isActive) return { ok: false, refusal: refuse.sellerInactive() };
  if (seller.balance < amount) return { ok: false, refusal: refuse.insufficientBalance(seller.balance, amount) };
  return { ok: true, newBalance: seller.balance - amount };
}

export type ApprovalDecision =
  | { ok: true; status: 'approved'; newBalance: bigint }
  | { ok: true; status: 'rejected' }
  | { ok: false; refusal: Refusal };

export function decideCreditRequest(
  seller: SellerState,
  request: CreditRequestState,
  action: 'approve' | 'reject',
): ApprovalDecision {
  if (request.status !== 'pending') return { ok: false, refusal: refuse.alreadyProcessed(request.status) };
  if (action === 'reject') return { ok: true, status: 'rejected' };
  return { ok: true, status: 'approved', newBalance: seller.balance + request.amount };
}
