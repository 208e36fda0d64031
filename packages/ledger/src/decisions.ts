/**
 * The money rules, as pure functions over the state a transaction has locked. They decide; the
 * caller writes. Keeping them free of I/O lets a batch of jobs be decided one after another
 * against the running balance, exactly as if each had its own transaction.
 */

export interface SellerState {
  id: string;
  balance: bigint;
  isActive: boolean;
}

export interface CreditRequestState {
  id: string;
  sellerId: string;
  amount: bigint;
  status: 'pending' | 'approved' | 'rejected';
}

/** A business refusal: final, reported to the client, never retried. */
export interface Refusal {
  error: string;
  code: string;
  [detail: string]: string;
}

export type SaleDecision = { ok: true; newBalance: bigint } | { ok: false; refusal: Refusal };

export function decideSale(seller: SellerState, amount: bigint): SaleDecision {
  if (!seller.isActive) {
    return { ok: false, refusal: { error: 'Seller is inactive', code: 'seller_inactive' } };
  }
  if (seller.balance < amount) {
    return {
      ok: false,
      refusal: {
        error: 'Insufficient balance',
        code: 'insufficient_balance',
        available_balance: seller.balance.toString(),
        required_amount: amount.toString(),
        shortage: (amount - seller.balance).toString(),
      },
    };
  }
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
  if (request.status !== 'pending') {
    return {
      ok: false,
      refusal: {
        error: `Credit request is already ${request.status}`,
        code: 'already_processed',
        status: request.status,
      },
    };
  }
  if (action === 'reject') return { ok: true, status: 'rejected' };
  return { ok: true, status: 'approved', newBalance: seller.balance + request.amount };
}
