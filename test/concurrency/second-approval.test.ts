import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  expectReconciled,
  expectUnbrokenChain,
  ledgerOf,
  readJobs,
  requestCredit,
  StatusTally,
  waitForJobsFinal,
} from '../support/concurrency.ts';
import { testSql } from '../support/db.ts';
import { balanceOf, createSeller, fundSeller, type TestSeller } from '../support/factories.ts';
import { Client } from '../support/http.ts';
import { ADMIN_TOKEN, System } from '../support/system.ts';

/**
 * Credit requests above CREDIT_SECOND_APPROVAL_ABOVE need two different operators, however many
 * approvals arrive at once and over however many worker processes: the same operator approving
 * again and again gets one first approval and never a credit; two operators racing credit the
 * request exactly once; a rejection racing them leaves exactly one final transition. Requests at
 * or below the threshold still credit on one approval.
 */

const THRESHOLD = 1_000_000;
const LARGE = 5_000_000;
const OPENING = 10_000n;

type Action = 'approve' | 'reject';
interface Operator {
  id: string;
  email: string;
  token: string;
}
interface Attempt {
  by: Operator;
  action: Action;
}
interface Outcome extends Attempt {
  /** 202: a job; 409: refused at once by the API. */
  status: number;
  code?: string;
  job?: {
    status: string;
    result: Record<string, string> | null;
    error: { code: string; first_approved_by?: string } | null;
  };
}

describe('second approval under concurrency, over two worker processes', () => {
  let system: System;
  let client: Client;
  const sql = testSql();
  const ops = {} as Record<'first' | 'second' | 'rejecter', Operator>;

  async function createOperator(name: string): Promise<Operator> {
    const email = `${name}-${randomUUID()}@ops.test`;
    const res = await client.post('/api/operators', { token: ADMIN_TOKEN, body: { email, name, role: 'approver' } });
    expect(res.status, JSON.stringify(res.body)).toBe(201);
    return { id: res.body.id, email, token: res.body.token };
  }

  /** A seller with an opening balance credited on one approval (it is below the threshold). */
  async function fundedSeller(name: string): Promise<TestSeller> {
    const seller = await createSeller(client, name);
    await fundSeller(client, seller, OPENING.toString());
    return seller;
  }

  /** Fires every attempt at once and returns what became of each, job outcomes included. */
  async function race(requestId: string, attempts: Attempt[]): Promise<Outcome[]> {
    // Connections opened beforehand, so the attempts leave together rather than one handshake apart.
    await Promise.all(attempts.map(() => client.get('/healthz')));
    const tally = new StatusTally();
    const answers = await Promise.all(
      attempts.map(async (attempt) => ({
        attempt,
        answer: tally.add(
          'POST /api/credit-requests/{id}/process',
          await client.post(`/api/credit-requests/${requestId}/process`, {
            token: attempt.by.token,
            body: { action: attempt.action },
          }),
        ),
      })),
    );
    expect(tally.serverErrors).toEqual([]);
    const ids = answers.filter((a) => a.answer.status === 202).map((a) => a.answer.body.job_id as string);
    await waitForJobsFinal(sql, ids);
    const jobs = await readJobs(client, ids);
    return answers.map(({ attempt, answer }) => {
      if (answer.status !== 202) {
        expect(answer.status, JSON.stringify(answer.body)).toBe(409);
        expect(answer.body.code).toBe('already_processed');
        return { ...attempt, status: answer.status, code: answer.body.code };
      }
      const job = jobs.get(answer.body.job_id);
      expect(job?.type).toBe('credit_approval');
      return { ...attempt, status: 202, job };
    });
  }

  async function requestRow(requestId: string) {
    const [row] = await sql`
      select status, processed_by, processed_at, first_approved_by, first_approved_at
      from credit_requests where id = ${requestId}`;
    return row as {
      status: string;
      processed_by: string | null;
      processed_at: Date | null;
      first_approved_by: string | null;
      first_approved_at: Date | null;
    };
  }

  async function creditsOf(requestId: string) {
    return sql`select id, amount from transactions where credit_request_id = ${requestId} and type = 'credit_increase'`;
  }

  async function auditActions(requestId: string) {
    const rows = await sql`
      select action, actor_id::text from audit_events where target_id = ${requestId} order by id`;
    return rows.map((r) => ({ action: String(r.action), actorId: r.actor_id as string | null }));
  }

  const succeeded = (outcomes: Outcome[], status?: string) =>
    outcomes.filter((o) => o.job?.status === 'succeeded' && (status === undefined || o.job.result?.status === status));

  /** Whatever is not one of the `winners` ended refused, with one of `codes`. */
  function expectOthersRefused(outcomes: Outcome[], winners: Outcome[], codes: string[]) {
    for (const outcome of outcomes) {
      if (winners.includes(outcome)) continue;
      // A job that lost is a business refusal (`rejected`), never a failure; a 409 was refused before queueing.
      if (outcome.job) expect(outcome.job.status, JSON.stringify(outcome)).toBe('rejected');
      expect(codes, JSON.stringify(outcome)).toContain(outcome.job ? outcome.job.error?.code : outcome.code);
    }
  }

  function summary(outcomes: Outcome[]): string {
    const counts = new Map<string, number>();
    for (const o of outcomes) {
      const key = o.job
        ? `${o.action}:${o.job.status}:${o.job.result?.status ?? o.job.error?.code}`
        : `${o.action}:409`;
      counts.set(key, (counts.get(key) ?? 0) + 1);
    }
    return [...counts].map(([key, n]) => `${key}×${n}`).join(' ');
  }

  beforeAll(async () => {
    system = await System.start({ workers: 2, env: { CREDIT_SECOND_APPROVAL_ABOVE: String(THRESHOLD) } });
    client = new Client(system.baseUrl);
    ops.first = await createOperator('first');
    ops.second = await createOperator('second');
    ops.rejecter = await createOperator('rejecter');
  });
  afterAll(async () => {
    await system?.stop();
    await sql.end();
  });

  it('20 approvals at once by the same operator: one first approval, the rest second_approver_required, nothing credited', async () => {
    const seller = await fundedSeller('Same operator');
    const requestId = await requestCredit(client, seller, LARGE);
    const outcomes = await race(
      requestId,
      Array.from({ length: 20 }, (): Attempt => ({ by: ops.first, action: 'approve' })),
    );
    console.log(`same operator ×20: ${summary(outcomes)}`);

    // The request stays open throughout, so the API queues every one.
    for (const o of outcomes) expect(o.status, JSON.stringify(o)).toBe(202);
    const firsts = succeeded(outcomes);
    expect(firsts, summary(outcomes)).toHaveLength(1);
    expect(firsts[0]?.job?.result).toMatchObject({ credit_request_id: requestId, status: 'awaiting_second_approval' });
    expectOthersRefused(outcomes, firsts, ['second_approver_required']);
    for (const o of outcomes.filter((x) => !firsts.includes(x))) {
      expect(o.job?.error?.first_approved_by).toBe(ops.first.email);
    }

    expect(await requestRow(requestId)).toMatchObject({
      status: 'awaiting_second_approval',
      processed_by: null,
      processed_at: null,
      first_approved_by: ops.first.email,
    });
    expect(await creditsOf(requestId)).toHaveLength(0);
    expect(await balanceOf(client, seller.id)).toBe(OPENING);
    expect(await auditActions(requestId)).toEqual([{ action: 'credit_request.approved', actorId: ops.first.id }]);

    // Another operator's approval still completes it, once.
    const done = await race(requestId, [{ by: ops.second, action: 'approve' }]);
    expect(done[0]?.job).toMatchObject({ status: 'succeeded', result: { status: 'approved' } });
    expect(await creditsOf(requestId)).toHaveLength(1);
    expect(await balanceOf(client, seller.id)).toBe(OPENING + BigInt(LARGE));
    await expectReconciled(client, seller.id, OPENING + BigInt(LARGE));
  });

  it('20 approvals at once by two operators (10 each): credited exactly once, first and second approver different', async () => {
    const seller = await fundedSeller('Two operators');
    const requestId = await requestCredit(client, seller, LARGE);
    const attempts = Array.from(
      { length: 20 },
      (_, i): Attempt => ({ by: i % 2 === 0 ? ops.first : ops.second, action: 'approve' }),
    );
    const outcomes = await race(requestId, attempts);
    console.log(`two operators ×10 each: ${summary(outcomes)}`);

    const firsts = succeeded(outcomes, 'awaiting_second_approval');
    const credited = succeeded(outcomes, 'approved');
    expect(firsts, summary(outcomes)).toHaveLength(1);
    expect(credited, summary(outcomes)).toHaveLength(1);
    expect(succeeded(outcomes), summary(outcomes)).toHaveLength(2);
    const [first, second] = [firsts[0] as Outcome, credited[0] as Outcome];
    expect(second.by.id).not.toBe(first.by.id);
    expectOthersRefused(outcomes, [first, second], ['second_approver_required', 'already_processed']);
    // Only the first approver can be told a second approver is needed.
    for (const o of outcomes.filter((x) => x.job?.error?.code === 'second_approver_required')) {
      expect(o.by.id).toBe(first.by.id);
    }

    const amount = BigInt(LARGE);
    expect(second.job?.result).toMatchObject({
      credit_request_id: requestId,
      amount: String(LARGE),
      new_balance: (OPENING + amount).toString(),
      transaction_id: expect.any(String),
    });
    const request = await requestRow(requestId);
    expect(request).toMatchObject({
      status: 'approved',
      processed_by: second.by.email,
      first_approved_by: first.by.email,
    });
    expect(request.processed_at).not.toBeNull();
    const credits = await creditsOf(requestId);
    expect(credits).toHaveLength(1);
    expect(credits[0]?.amount).toBe(amount);
    expect(await balanceOf(client, seller.id)).toBe(OPENING + amount);
    const ledger = await ledgerOf(sql, seller.id);
    expect(ledger.filter((r) => r.type === 'credit_increase')).toHaveLength(2);
    expect(expectUnbrokenChain(ledger)).toBe(OPENING + amount);
    await expectReconciled(client, seller.id, OPENING + amount);
    expect(await auditActions(requestId)).toEqual([
      { action: 'credit_request.approved', actorId: first.by.id },
      { action: 'credit_request.second_approval_given', actorId: second.by.id },
    ]);
  });

  it('rejections racing the approvals of two operators: exactly one final transition, credited at most once', async () => {
    const sellers = await Promise.all([0, 1, 2, 3].map((i) => fundedSeller(`Reject race ${i}`)));
    const requests = await Promise.all(sellers.map((s) => requestCredit(client, s, LARGE)));
    const results = await Promise.all(
      requests.map((requestId, r) =>
        race(
          requestId,
          // A different mix for each request: rejections early, late, or spread among the approvals.
          Array.from({ length: 20 }, (_, i): Attempt => {
            const rejects = [i < 3, i >= 17, i % 5 === 2, i % 7 === 6][r];
            return rejects
              ? { by: ops.rejecter, action: 'reject' }
              : { by: i % 2 ? ops.first : ops.second, action: 'approve' };
          }),
        ),
      ),
    );

    const endings: string[] = [];
    for (const [r, outcomes] of results.entries()) {
      const requestId = requests[r] as string;
      const seller = sellers[r] as TestSeller;
      const request = await requestRow(requestId);
      endings.push(`${request.status} (${summary(outcomes)})`);
      expect(['approved', 'rejected'], summary(outcomes)).toContain(request.status);

      const finals = [...succeeded(outcomes, 'approved'), ...succeeded(outcomes, 'rejected')];
      expect(finals, summary(outcomes)).toHaveLength(1);
      const final = finals[0] as Outcome;
      const firsts = succeeded(outcomes, 'awaiting_second_approval');
      expect(firsts.length, summary(outcomes)).toBeLessThanOrEqual(1);
      expect(succeeded(outcomes)).toHaveLength(finals.length + firsts.length);
      expectOthersRefused(outcomes, [final, ...firsts], ['second_approver_required', 'already_processed']);
      expect(request.processed_by).toBe(final.by.email);

      const credits = await creditsOf(requestId);
      const expected = request.status === 'approved' ? OPENING + BigInt(LARGE) : OPENING;
      if (request.status === 'approved') {
        expect(final.action).toBe('approve');
        expect(firsts).toHaveLength(1);
        expect(final.by.id).not.toBe(firsts[0]?.by.id);
        expect(credits).toHaveLength(1);
      } else {
        expect(final.action).toBe('reject');
        expect(credits).toHaveLength(0);
      }
      expect(await balanceOf(client, seller.id)).toBe(expected);
      expect(expectUnbrokenChain(await ledgerOf(sql, seller.id))).toBe(expected);
      await expectReconciled(client, seller.id, expected);
      const trail = (await auditActions(requestId)).map((a) => a.action);
      expect(trail).toEqual([
        ...(firsts.length ? ['credit_request.approved'] : []),
        request.status === 'approved' ? 'credit_request.second_approval_given' : 'credit_request.rejected',
      ]);
    }
    console.log(`reject races: ${endings.join('; ')}`);
  });

  it('at or below the threshold one approval credits, once, however many arrive at once', async () => {
    for (const amount of [THRESHOLD, THRESHOLD - 1, 1]) {
      const seller = await fundedSeller(`Small ${amount}`);
      const requestId = await requestCredit(client, seller, amount);
      const outcomes = await race(
        requestId,
        Array.from({ length: 20 }, (_, i): Attempt => ({ by: i % 2 ? ops.first : ops.second, action: 'approve' })),
      );
      const credited = succeeded(outcomes, 'approved');
      expect(credited, summary(outcomes)).toHaveLength(1);
      expect(succeeded(outcomes, 'awaiting_second_approval')).toHaveLength(0);
      expectOthersRefused(outcomes, credited, ['already_processed']);
      expect(await requestRow(requestId)).toMatchObject({
        status: 'approved',
        processed_by: credited[0]?.by.email,
        first_approved_by: null,
      });
      expect(await creditsOf(requestId)).toHaveLength(1);
      expect(await balanceOf(client, seller.id)).toBe(OPENING + BigInt(amount));
      await expectReconciled(client, seller.id, OPENING + BigInt(amount));
      expect((await auditActions(requestId)).map((a) => a.action)).toEqual(['credit_request.approved']);
    }
  });

  it('one rial above the threshold already needs a second operator', async () => {
    const seller = await fundedSeller('Just above');
    const requestId = await requestCredit(client, seller, THRESHOLD + 1);
    const [first] = await race(requestId, [{ by: ops.first, action: 'approve' }]);
    expect(first?.job).toMatchObject({ status: 'succeeded', result: { status: 'awaiting_second_approval' } });
    expect(await balanceOf(client, seller.id)).toBe(OPENING);
    const [again] = await race(requestId, [{ by: ops.first, action: 'approve' }]);
    expect(again?.job).toMatchObject({ status: 'rejected', error: { code: 'second_approver_required' } });
    const [second] = await race(requestId, [{ by: ops.second, action: 'approve' }]);
    expect(second?.job).toMatchObject({ status: 'succeeded', result: { status: 'approved' } });
    expect(await balanceOf(client, seller.id)).toBe(OPENING + BigInt(THRESHOLD + 1));
    const [late] = await race(requestId, [{ by: ops.rejecter, action: 'reject' }]);
    expect(late).toMatchObject({ status: 409, code: 'already_processed' });
  });
  describe('at most 10 open requests per seller, awaiting ones included', () => {
    const MAX_OPEN = 10;

    async function openCount(sellerId: string): Promise<number> {
      const [row] = await sql`
        select count(*)::int as n from credit_requests
        where seller_id = ${sellerId} and status in ('pending', 'awaiting_second_approval')`;
      return Number(row?.n);
    }

    it('the 11th is 409 too_many_pending, for the seller and for an admin; closing one makes room for one', async () => {
      const seller = await fundedSeller('Many open');
      const awaiting: string[] = [];
      for (let i = 0; i < 3; i++) {
        const id = await requestCredit(client, seller, LARGE);
        const [first] = await race(id, [{ by: ops.first, action: 'approve' }]);
        expect(first?.job?.result?.status).toBe('awaiting_second_approval');
        awaiting.push(id);
      }
      for (let i = 0; i < MAX_OPEN - 3; i++) await requestCredit(client, seller, 1000 + i);
      expect(await openCount(seller.id)).toBe(MAX_OPEN);

      for (const token of [seller.apiKey, ADMIN_TOKEN]) {
        const res = await client.post('/api/credit-requests', { token, body: { seller: seller.id, amount: 500 } });
        expect(res.status, JSON.stringify(res.body)).toBe(409);
        expect(res.body.code).toBe('too_many_pending');
      }
      expect(await openCount(seller.id)).toBe(MAX_OPEN);

      const [rejected] = await race(awaiting[0] as string, [{ by: ops.rejecter, action: 'reject' }]);
      expect(rejected?.job?.status).toBe('succeeded');
      expect(
        (await client.post('/api/credit-requests', { token: seller.apiKey, body: { seller: seller.id, amount: 500 } }))
          .status,
      ).toBe(201);
      const full = await client.post('/api/credit-requests', {
        token: seller.apiKey,
        body: { seller: seller.id, amount: 500 },
      });
      expect(full.status).toBe(409);
    });

    it('20 requests at once by one seller: exactly 10 accepted, the rest too_many_pending', async () => {
      const seller = await createSeller(client, 'Burst of requests');
      await Promise.all(Array.from({ length: 20 }, () => client.get('/healthz')));
      const answers = await Promise.all(
        Array.from({ length: 20 }, (_, i) =>
          client.post('/api/credit-requests', { token: seller.apiKey, body: { seller: seller.id, amount: 100 + i } }),
        ),
      );
      const accepted = answers.filter((a) => a.status === 201);
      const refused = answers.filter((a) => a.status !== 201);
      expect(accepted, answers.map((a) => a.status).join(' ')).toHaveLength(MAX_OPEN);
      for (const answer of refused) {
        expect(answer.status, JSON.stringify(answer.body)).toBe(409);
        expect(answer.body.code).toBe('too_many_pending');
      }
      expect(await openCount(seller.id)).toBe(MAX_OPEN);
    });
  });
});
