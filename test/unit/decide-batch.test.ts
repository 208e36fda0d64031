import {
  CHAIN_START,
  type ChainedRow,
  ChainVerifier,
  type CreditRequestState,
  type Decided,
  type DeliveryRow,
  decide,
  type JobRef,
  type JobRow,
  type LockedSeller,
  type LockedState,
  sealRow,
} from '@cs/ledger';
import { describe, expect, it } from 'vitest';

/**
 * `decide` is where a batch's money rules meet: the state below is what `lockState` would have
 * read under its locks, built by hand.
 */

const KEY = 'unit-test-ledger-key-0123456789abcdef';
const PARTITION = 3;

const sellerId = (n: number) => `0190a000-0000-7000-8000-${String(n).padStart(12, '0')}`;
const jobId = (n: number) => `0190b000-0000-7000-8000-${String(n).padStart(12, '0')}`;
const requestId = (n: number) => `0190c000-0000-7000-8000-${String(n).padStart(12, '0')}`;

const baseJob = (id: string, seller: string): Omit<JobRow, 'type'> => ({
  id,
  seller_id: seller,
  partition: PARTITION,
  status: 'queued',
  result: null,
  error: null,
  submitted_at: '2026-01-01 00:00:00+00',
  amount: null,
  phone_number: null,
  credit_request_id: null,
  action: null,
  processed_by: null,
  actor_id: null,
  actor_ip: null,
});

const sale = (id: string, seller: string, amount: bigint, phone = '09121234567'): JobRow => ({
  ...baseJob(id, seller),
  type: 'charge_sale',
  amount,
  phone_number: phone,
});

const approval = (id: string, seller: string, request: string, action: 'approve' | 'reject'): JobRow => ({
  ...baseJob(id, seller),
  type: 'credit_approval',
  credit_request_id: request,
  action,
  processed_by: 'admin',
});

function lockedState({
  jobs,
  sellers,
  requests = [],
  deliveries = [],
  ledgerIds = ['1001', '1002', '1003', '1004', '1005', '1006', '1007', '1008'],
}: {
  jobs: JobRow[];
  sellers: LockedSeller[];
  requests?: Array<CreditRequestState & { requestedAt?: Date }>;
  deliveries?: DeliveryRow[];
  ledgerIds?: string[];
}): LockedState {
  return {
    jobs: new Map(jobs.map((j) => [j.id, j])),
    sellers: new Map(sellers.map((s) => [s.id, { ...s }])),
    requests: new Map(requests.map((r) => [r.id, { requestedAt: new Date('2026-01-01T00:00:00Z'), ...r }])),
    deliveries: new Map(deliveries.map((d) => [d.job_id, d])),
    ledgerIds,
  };
}

const seller = (id: string, balance: bigint, extra: Partial<LockedSeller> = {}): LockedSeller => ({
  id,
  balance,
  isActive: true,
  head: CHAIN_START,
  ...extra,
});

const refs = (...ids: string[]): JobRef[] => ids.map((id) => ({ id, partition: PARTITION }));

/** A ledger row as the chain covers it, as reconcile reads it back. */
function chained(row: Decided['ledger'][number]): ChainedRow {
  return {
    id: row.id,
    sellerId: row.sellerId,
    type: row.type,
    amount: row.amount.toString(),
    balanceAfter: row.balanceAfter.toString(),
    jobId: row.jobId,
    creditRequestId: row.creditRequestId,
    phoneNumber: row.phoneNumber,
    description: row.description,
    createdAtMicros: (BigInt(row.createdAt.getTime()) * 1000n).toString(),
    refundOf: row.refundOf,
  };
}

describe('decide: a batch of sales against a running balance', () => {
  const A = sellerId(1);
  const jobs = [
    sale(jobId(1), A, 4_000n),
    sale(jobId(2), A, 5_000n),
    sale(jobId(3), A, 3_000n), // 1 000 left: refused
    sale(jobId(4), A, 1_000n), // exactly what is left
  ];
  const decided = decide(refs(...jobs.map((j) => j.id)), lockedState({ jobs, sellers: [seller(A, 10_000n)] }), KEY);

  it('lets each job see the balance its predecessors left', () => {
    expect(decided.outcomes.map((o) => [o.status, o.result?.new_balance])).toEqual([
      ['delivering', '6000'],
      ['delivering', '1000'],
      ['rejected', undefined],
      ['delivering', '0'],
    ]);
  });

  it('refuses the one that does not fit with its shortage, without undoing the others', () => {
    expect(decided.outcomes[2]).toEqual({
      jobId: jobId(3),
      type: 'charge_sale',
      status: 'rejected',
      result: null,
      error: {
        error: 'Insufficient balance',
        code: 'insufficient_balance',
        available_balance: '1000',
        required_amount: '3000',
        shortage: '2000',
      },
      replayed: false,
    });
    expect(decided.ledger.map((r) => r.jobId)).toEqual([jobId(1), jobId(2), jobId(4)]);
  });

  it('records every outcome, refusals included', () => {
    expect(decided.recorded.map((o) => o.jobId)).toEqual(jobs.map((j) => j.id));
  });

  it('gives the ledger rows the drawn ids in order; a refusal draws none', () => {
    expect(decided.ledger.map((r) => r.id)).toEqual(['1001', '1002', '1003']);
    expect(decided.outcomes.map((o) => o.result?.transaction_id)).toEqual(['1001', '1002', undefined, '1003']);
  });

  it('writes each sale as a negative amount with the balance after it, and the sale in the result', () => {
    expect(decided.ledger[0]).toMatchObject({
      jobId: jobId(1),
      sellerId: A,
      type: 'charge_sale',
      amount: -4_000n,
      balanceAfter: 6_000n,
      phoneNumber: '09121234567',
      creditRequestId: null,
      description: 'Charge of 4000 rials to 09121234567',
    });
    expect(decided.outcomes[0]?.result).toEqual({
      transaction_id: '1001',
      seller_id: A,
      phone_number: '09121234567',
      amount: '4000',
      new_balance: '6000',
    });
  });

  it("chains each row's hmac to the previous row of its seller", () => {
    const [first, second, third] = decided.ledger.map((r) => ({ row: chained(r), hmac: r.hmac }));
    expect(first?.hmac).toBe(sealRow(KEY, first?.row as ChainedRow, CHAIN_START));
    expect(second?.hmac).toBe(sealRow(KEY, second?.row as ChainedRow, first?.hmac as string));
    expect(third?.hmac).toBe(sealRow(KEY, third?.row as ChainedRow, second?.hmac as string));
    const verifier = new ChainVerifier(KEY);
    for (const r of decided.ledger) verifier.add(chained(r), r.hmac);
    expect(verifier.result(decided.balances[0]?.head ?? null)).toEqual({
      head: third?.hmac,
      brokenAt: null,
      intact: true,
    });
  });

  it('hands back the seller with its final balance and the head its chain now ends at', () => {
    expect(decided.balances).toEqual([{ id: A, balance: 0n, isActive: true, head: decided.ledger[2]?.hmac as string }]);
  });

  it('writes no credit request', () => {
    expect(decided.processed).toEqual([]);
  });
});

describe('decide: several sellers in one batch', () => {
  const A = sellerId(1);
  const B = sellerId(2);
  const C = sellerId(3);
  const previousHead = 'f'.repeat(64);
  const jobs = [
    sale(jobId(1), A, 1_000n),
    sale(jobId(2), B, 2_000n),
    sale(jobId(3), A, 1_500n),
    sale(jobId(4), C, 1n), // C is inactive
    sale(jobId(5), B, 500n),
  ];
  const decided = decide(
    refs(...jobs.map((j) => j.id)),
    lockedState({
      jobs,
      sellers: [seller(A, 5_000n), seller(B, 9_000n, { head: previousHead }), seller(C, 100n, { isActive: false })],
    }),
    KEY,
  );

  it('keeps each seller on its own balance', () => {
    expect(decided.outcomes.map((o) => o.result?.new_balance ?? o.error?.code)).toEqual([
      '4000',
      '7000',
      '2500',
      'seller_inactive',
      '6500',
    ]);
  });

  it("chains each row to its own seller's previous row, starting from the head the seller had", () => {
    const rowsOf = (id: string) => decided.ledger.filter((r) => r.sellerId === id);
    for (const [id, start] of [
      [A, CHAIN_START],
      [B, previousHead],
    ] as const) {
      let previous: string = start;
      for (const r of rowsOf(id)) {
        expect(r.hmac).toBe(sealRow(KEY, chained(r), previous));
        previous = r.hmac;
      }
    }
    expect(decided.ledger.map((r) => r.id)).toEqual(['1001', '1002', '1003', '1004']);
  });

  it('hands back only the sellers it changed, each with its last head', () => {
    const byId = new Map(decided.balances.map((s) => [s.id, s]));
    expect([...byId.keys()].sort()).toEqual([A, B]);
    expect(byId.get(A)).toMatchObject({ balance: 2_500n, head: decided.ledger[2]?.hmac });
    expect(byId.get(B)).toMatchObject({ balance: 6_500n, head: decided.ledger[3]?.hmac });
  });

  it('refuses a job whose seller was not found', () => {
    const lost = sale(jobId(9), sellerId(9), 1n);
    const out = decide(refs(lost.id), lockedState({ jobs: [lost], sellers: [] }), KEY);
    expect(out.outcomes[0]).toMatchObject({
      status: 'rejected',
      error: { code: 'seller_not_found' },
      replayed: false,
    });
    expect(out.recorded).toHaveLength(1);
    expect(out.ledger).toEqual([]);
  });
});

describe('decide: redeliveries and messages that name nothing', () => {
  const A = sellerId(1);

  it('replays a job whose row is already final: its recorded outcome, nothing written, nothing recorded', () => {
    const done: JobRow = {
      ...sale(jobId(1), A, 4_000n),
      status: 'succeeded',
      result: { transaction_id: '77', new_balance: '6000' },
    };
    const refusedBefore: JobRow = {
      ...sale(jobId(2), A, 99_000n),
      status: 'rejected',
      error: { error: 'Insufficient balance', code: 'insufficient_balance' },
    };
    const fresh = sale(jobId(3), A, 1_000n);
    const out = decide(
      refs(done.id, refusedBefore.id, fresh.id),
      lockedState({ jobs: [done, refusedBefore, fresh], sellers: [seller(A, 6_000n)] }),
      KEY,
    );
    expect(out.outcomes[0]).toEqual({
      jobId: done.id,
      type: 'charge_sale',
      status: 'succeeded',
      result: { transaction_id: '77', new_balance: '6000' },
      error: null,
      replayed: true,
    });
    expect(out.outcomes[1]).toMatchObject({ status: 'rejected', error: refusedBefore.error, replayed: true });
    // The fresh job sees the balance as the committed replay left it, and draws the first id.
    expect(out.outcomes[2]).toMatchObject({ status: 'delivering', result: { new_balance: '5000' }, replayed: false });
    expect(out.recorded.map((o) => o.jobId)).toEqual([fresh.id]);
    expect(out.ledger.map((r) => [r.jobId, r.id])).toEqual([[fresh.id, '1001']]);
  });

  it('treats a failed row as final too', () => {
    const failed: JobRow = {
      ...sale(jobId(1), A, 1n),
      status: 'failed',
      error: { error: 'x', code: 'internal_error' },
    };
    const out = decide(refs(failed.id), lockedState({ jobs: [failed], sellers: [seller(A, 10n)] }), KEY);
    expect(out.outcomes[0]).toMatchObject({ status: 'failed', replayed: true });
    expect(out.recorded).toEqual([]);
    expect(out.balances).toEqual([]);
  });

  it('decides a processing row (a batch that never committed) afresh', () => {
    const retried: JobRow = { ...sale(jobId(1), A, 1_000n), status: 'processing' };
    const out = decide(refs(retried.id), lockedState({ jobs: [retried], sellers: [seller(A, 1_000n)] }), KEY);
    expect(out.outcomes[0]).toMatchObject({ status: 'delivering', replayed: false });
    expect(out.ledger).toHaveLength(1);
  });

  it('ignores a ref whose partition is not the row’s, and a ref naming no row: nothing decided, nothing recorded', () => {
    const job = sale(jobId(1), A, 1_000n);
    const out = decide(
      [
        { id: job.id, partition: PARTITION + 1 },
        { id: jobId(2), partition: PARTITION },
      ],
      lockedState({ jobs: [job], sellers: [seller(A, 5_000n)] }),
      KEY,
    );
    for (const [i, id] of [job.id, jobId(2)].entries()) {
      expect(out.outcomes[i]).toEqual({
        jobId: id,
        status: 'failed',
        result: null,
        error: { error: 'The message names no job of its partition; nothing was applied', code: 'unknown_job' },
        replayed: false,
        ignored: true,
      });
    }
    expect(out.recorded).toEqual([]);
    expect(out.ledger).toEqual([]);
    expect(out.balances).toEqual([]);
  });

  it('decides a job named twice once: the second time is a replay of the first', () => {
    const job = sale(jobId(1), A, 4_000n);
    const out = decide(refs(job.id, job.id), lockedState({ jobs: [job], sellers: [seller(A, 5_000n)] }), KEY);
    expect(out.outcomes).toHaveLength(2);
    expect(out.outcomes[0]).toMatchObject({ status: 'delivering', replayed: false, result: { new_balance: '1000' } });
    expect(out.outcomes[1]).toEqual({ ...out.outcomes[0], replayed: true });
    expect(out.recorded).toEqual([out.outcomes[0]]);
    expect(out.ledger).toHaveLength(1);
    expect(out.balances).toMatchObject([{ balance: 1_000n }]);
  });

  it('decides a refused job named twice once as well', () => {
    const job = sale(jobId(1), A, 9_000n);
    const out = decide(refs(job.id, job.id), lockedState({ jobs: [job], sellers: [seller(A, 5_000n)] }), KEY);
    expect(out.outcomes.map((o) => [o.status, o.replayed])).toEqual([
      ['rejected', false],
      ['rejected', true],
    ]);
    expect(out.recorded).toHaveLength(1);
  });

  it('does not let a wrong-partition copy count as the first decision, nor replay a right one', () => {
    const job = sale(jobId(1), A, 1_000n);
    const state = () => lockedState({ jobs: [job], sellers: [seller(A, 5_000n)] });
    const wrongFirst = decide([{ id: job.id, partition: PARTITION + 1 }, ...refs(job.id)], state(), KEY);
    expect(wrongFirst.outcomes.map((o) => [o.status, o.replayed, o.ignored ?? false])).toEqual([
      ['failed', false, true],
      ['delivering', false, false],
    ]);
    expect(wrongFirst.ledger).toHaveLength(1);
    const wrongSecond = decide([...refs(job.id), { id: job.id, partition: PARTITION + 1 }], state(), KEY);
    expect(wrongSecond.outcomes.map((o) => [o.status, o.replayed, o.ignored ?? false])).toEqual([
      ['delivering', false, false],
      ['failed', false, true],
    ]);
    expect(wrongSecond.recorded).toHaveLength(1);
    expect(wrongSecond.ledger).toHaveLength(1);
  });
});

describe('decide: credit requests', () => {
  const A = sellerId(1);
  const B = sellerId(2);
  const pending = (id: string, seller: string, amount: bigint): CreditRequestState => ({
    id,
    sellerId: seller,
    amount,
    firstApprovedBy: null,
    status: 'pending',
  });

  it('approves into the balance, and a later sale of the batch sees it', () => {
    const jobs = [approval(jobId(1), A, requestId(1), 'approve'), sale(jobId(2), A, 8_000n)];
    const out = decide(
      refs(jobId(1), jobId(2)),
      lockedState({ jobs, sellers: [seller(A, 1_000n)], requests: [pending(requestId(1), A, 7_000n)] }),
      KEY,
    );
    expect(out.outcomes[0]).toMatchObject({
      type: 'credit_approval',
      status: 'succeeded',
      result: {
        transaction_id: '1001',
        credit_request_id: requestId(1),
        seller_id: A,
        amount: '7000',
        status: 'approved',
        new_balance: '8000',
      },
    });
    expect(out.outcomes[1]).toMatchObject({ status: 'delivering', result: { new_balance: '0' } });
    expect(out.ledger[0]).toMatchObject({
      id: '1001',
      type: 'credit_increase',
      amount: 7_000n,
      balanceAfter: 8_000n,
      creditRequestId: requestId(1),
      phoneNumber: null,
      description: `Credit request ${requestId(1)} approved by admin`,
    });
    expect(out.ledger[1]?.hmac).toBe(
      sealRow(KEY, chained(out.ledger[1] as Decided['ledger'][number]), out.ledger[0]?.hmac as string),
    );
    expect(out.processed).toEqual([{ id: requestId(1), status: 'approved', processedBy: 'admin' }]);
  });

  it('rejects without a ledger row or a balance change, and records the request as rejected', () => {
    const job = approval(jobId(1), A, requestId(1), 'reject');
    const out = decide(
      refs(job.id),
      lockedState({ jobs: [job], sellers: [seller(A, 1_000n)], requests: [pending(requestId(1), A, 7_000n)] }),
      KEY,
    );
    expect(out.outcomes[0]?.result).toEqual({
      credit_request_id: requestId(1),
      seller_id: A,
      amount: '7000',
      status: 'rejected',
      new_balance: '1000',
    });
    expect(out.ledger).toEqual([]);
    expect(out.balances).toEqual([]);
    expect(out.processed).toEqual([{ id: requestId(1), status: 'rejected', processedBy: 'admin' }]);
  });

  it('refuses a second processing of one request in the same batch as already processed', () => {
    const jobs = [approval(jobId(1), A, requestId(1), 'approve'), approval(jobId(2), A, requestId(1), 'reject')];
    const out = decide(
      refs(jobId(1), jobId(2)),
      lockedState({ jobs, sellers: [seller(A, 0n)], requests: [pending(requestId(1), A, 7_000n)] }),
      KEY,
    );
    expect(out.outcomes[1]).toMatchObject({
      status: 'rejected',
      error: { code: 'already_processed', status: 'approved' },
      replayed: false,
    });
    expect(out.ledger).toHaveLength(1);
    expect(out.processed).toHaveLength(1);
    expect(out.balances).toMatchObject([{ balance: 7_000n }]);
  });

  it("refuses a request that is missing or another seller's as not found", () => {
    const jobs = [approval(jobId(1), A, requestId(1), 'approve'), approval(jobId(2), A, requestId(2), 'approve')];
    const out = decide(
      refs(jobId(1), jobId(2)),
      lockedState({ jobs, sellers: [seller(A, 0n), seller(B, 0n)], requests: [pending(requestId(2), B, 7_000n)] }),
      KEY,
    );
    for (const o of out.outcomes) {
      expect(o).toMatchObject({ status: 'rejected', error: { code: 'credit_request_not_found' } });
    }
    expect(out.ledger).toEqual([]);
    expect(out.processed).toEqual([]);
  });
});

describe('decide: a debited sale back on its partition for its refund', () => {
  const A = sellerId(1);
  const debited = (id: string, amount: bigint): JobRow => ({
    ...sale(id, A, amount),
    status: 'delivering',
    result: { transaction_id: '900', new_balance: '1000' },
  });
  const delivery = (jobIdOf: string, status: string, extra: Partial<DeliveryRow> = {}): DeliveryRow => ({
    job_id: jobIdOf,
    status,
    provider: 'simulator',
    provider_reason: 'number_not_supported',
    attempts: 1,
    sale_transaction_id: 900n,
    resolution: null,
    ...extra,
  });

  it('writes one charge_refund row that gives the sale back whole, in the chain, and ends the job rejected', () => {
    const job = debited(jobId(1), 4_000n);
    const out = decide(
      refs(job.id),
      lockedState({
        jobs: [job],
        sellers: [seller(A, 1_000n, { head: 'aa'.repeat(32) })],
        deliveries: [delivery(job.id, 'refund_due')],
      }),
      KEY,
    );
    expect(out.ledger).toHaveLength(1);
    expect(out.ledger[0]).toMatchObject({
      id: '1001',
      type: 'charge_refund',
      amount: 4_000n,
      balanceAfter: 5_000n,
      refundOf: '900',
      jobId: job.id,
      phoneNumber: '09121234567',
    });
    expect(out.ledger[0]?.hmac).toBe(
      sealRow(KEY, chained(out.ledger[0] as Decided['ledger'][number]), 'aa'.repeat(32)),
    );
    expect(out.outcomes[0]).toMatchObject({
      status: 'rejected',
      replayed: false,
      error: {
        code: 'delivery_failed',
        provider: 'simulator',
        provider_reason: 'number_not_supported',
        refund_transaction_id: '1001',
        attempts: 1,
      },
    });
    expect(out.refunded).toEqual([{ jobId: job.id, refundTransactionId: '1001' }]);
    expect(out.balances).toMatchObject([{ balance: 5_000n }]);
    expect(out.webhookEvents).toMatchObject([{ sellerId: A, type: 'charge_sale.rejected' }]);
  });

  it('says why an operator refunded when the provider gave no reason', () => {
    const job = debited(jobId(1), 4_000n);
    const out = decide(
      refs(job.id),
      lockedState({
        jobs: [job],
        sellers: [seller(A, 0n)],
        deliveries: [delivery(job.id, 'refund_due', { provider_reason: null, resolution: 'refund' })],
      }),
      KEY,
    );
    expect(out.outcomes[0]?.error).toMatchObject({ provider_reason: 'resolved_by_operator' });
  });

  it('changes nothing for a debited sale whose delivery is not refund_due (a redelivered debit message)', () => {
    for (const status of ['pending', 'unresolved', 'delivered', 'refunded', 'conflict']) {
      const job = debited(jobId(1), 4_000n);
      const out = decide(
        refs(job.id),
        lockedState({ jobs: [job], sellers: [seller(A, 1_000n)], deliveries: [delivery(job.id, status)] }),
        KEY,
      );
      expect(out.ledger).toEqual([]);
      expect(out.recorded).toEqual([]);
      expect(out.outcomes[0]).toMatchObject({ status: 'delivering', replayed: true });
    }
  });

  it('debits a new sale and hands its delivery over, without telling the webhook yet', () => {
    const out = decide(
      refs(jobId(2)),
      lockedState({ jobs: [sale(jobId(2), A, 500n)], sellers: [seller(A, 1_000n)] }),
      KEY,
    );
    expect(out.newDeliveries).toEqual([
      {
        jobId: jobId(2),
        sellerId: A,
        partition: PARTITION,
        saleTransactionId: '1001',
        phoneNumber: '09121234567',
        amount: 500n,
      },
    ]);
    expect(out.outcomes[0]?.delivery).toEqual(out.newDeliveries[0]);
    expect(out.webhookEvents).toEqual([]);
  });
});
