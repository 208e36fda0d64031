import { type CreditRequestState, decideCreditRequest, decideSale, type SellerState } from '@cs/ledger';
import { describe, expect, it } from 'vitest';

const seller = (balance: bigint, isActive = true): SellerState => ({ id: 'seller-1', balance, isActive });
const request = (
  status: CreditRequestState['status'],
  amount = 7_000n,
  firstApprovedBy: string | null = null,
): CreditRequestState => ({
  id: 'request-1',
  sellerId: 'seller-1',
  amount,
  status,
  firstApprovedBy,
});
const ask = (action: 'approve' | 'reject', by = 'ana@ops.test', secondApprovalAbove?: bigint) => ({
  action,
  by,
  secondApprovalAbove,
});

describe('decideSale', () => {
  it('sells from the balance and gives the balance left', () => {
    expect(decideSale(seller(50_000n), 20_000n)).toEqual({ ok: true, newBalance: 30_000n });
  });

  it('sells the exact balance, down to zero', () => {
    expect(decideSale(seller(10_000n), 10_000n)).toEqual({ ok: true, newBalance: 0n });
  });

  it('refuses one rial short, with the balance, the amount and the shortage as strings', () => {
    expect(decideSale(seller(9_999n), 10_000n)).toEqual({
      ok: false,
      refusal: {
        error: 'Insufficient balance',
        code: 'insufficient_balance',
        available_balance: '9999',
        required_amount: '10000',
        shortage: '1',
      },
    });
  });

  it('refuses any sale from an empty balance', () => {
    const decision = decideSale(seller(0n), 1n);
    expect(decision.ok).toBe(false);
    if (!decision.ok) expect(decision.refusal).toMatchObject({ code: 'insufficient_balance', shortage: '1' });
  });

  it('keeps exact precision at the largest amounts (no float on the way)', () => {
    const decision = decideSale(seller(9_007_199_254_740_993n), 1_000_000_000_000n);
    expect(decision).toEqual({ ok: true, newBalance: 9_006_199_254_740_993n });
  });

  it('refuses an inactive seller, even with the balance for it, and says nothing of the balance', () => {
    expect(decideSale(seller(50_000n, false), 1_000n)).toEqual({
      ok: false,
      refusal: { error: 'Seller is inactive', code: 'seller_inactive' },
    });
  });

  it('checks activity before the balance: an inactive seller short of money is refused as inactive', () => {
    expect(decideSale(seller(0n, false), 1_000n)).toEqual({
      ok: false,
      refusal: { error: 'Seller is inactive', code: 'seller_inactive' },
    });
  });
});

describe('decideCreditRequest', () => {
  it('approves a pending request: the balance grows by its amount', () => {
    expect(decideCreditRequest(seller(3_000n), request('pending'), ask('approve'))).toEqual({
      ok: true,
      status: 'approved',
      newBalance: 10_000n,
      secondApproval: false,
    });
  });

  it('above the threshold of two, a first approval credits nothing and awaits another operator', () => {
    expect(decideCreditRequest(seller(3_000n), request('pending'), ask('approve', 'ana@ops.test', 6_999n))).toEqual({
      ok: true,
      status: 'awaiting_second_approval',
    });
    // At the threshold one approval is enough.
    expect(
      decideCreditRequest(seller(3_000n), request('pending'), ask('approve', 'ana@ops.test', 7_000n)),
    ).toMatchObject({ status: 'approved', secondApproval: false });
  });

  it('a second approval by another operator credits once; by the same operator it is refused', () => {
    const awaiting = request('awaiting_second_approval', 7_000n, 'ana@ops.test');
    expect(decideCreditRequest(seller(3_000n), awaiting, ask('approve', 'bob@ops.test', 6_999n))).toEqual({
      ok: true,
      status: 'approved',
      newBalance: 10_000n,
      secondApproval: true,
    });
    expect(decideCreditRequest(seller(3_000n), awaiting, ask('approve', 'ana@ops.test', 6_999n))).toEqual({
      ok: false,
      refusal: {
        error: 'This credit needs the approval of a second, different operator',
        code: 'second_approver_required',
        first_approved_by: 'ana@ops.test',
      },
    });
    // The threshold raised meanwhile does not let the first approver finish alone.
    expect(decideCreditRequest(seller(3_000n), awaiting, ask('approve', 'ana@ops.test'))).toMatchObject({ ok: false });
    expect(decideCreditRequest(seller(3_000n), awaiting, ask('reject', 'ana@ops.test'))).toEqual({
      ok: true,
      status: 'rejected',
    });
  });

  it('rejects a pending request without touching the balance', () => {
    expect(decideCreditRequest(seller(3_000n), request('pending'), ask('reject'))).toEqual({
      ok: true,
      status: 'rejected',
    });
  });

  it('approves for an inactive seller too: only sales need an active seller', () => {
    expect(decideCreditRequest(seller(0n, false), request('pending'), ask('approve'))).toMatchObject({
      ok: true,
      status: 'approved',
      newBalance: 7_000n,
    });
  });

  for (const status of ['approved', 'rejected'] as const) {
    for (const action of ['approve', 'reject'] as const) {
      it(`refuses to ${action} a request already ${status}, naming its status`, () => {
        expect(decideCreditRequest(seller(3_000n), request(status), ask(action))).toEqual({
          ok: false,
          refusal: {
            error: `Credit request is already ${status}`,
            code: 'already_processed',
            status,
          },
        });
      });
    }
  }
});
