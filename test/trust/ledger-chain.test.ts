import { randomInt } from 'node:crypto';
import { type ChainedRow, sealRow } from '@cs/ledger';
import type postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isolatedDatabase, testSql } from '../support/db.ts';
import { createSeller, fundSeller, type TestSeller } from '../support/factories.ts';
import { Client } from '../support/http.ts';
import { runReconcile } from '../support/reconcile.ts';
import { LEDGER_HMAC_KEY, System } from '../support/system.ts';
import { reconcileOf } from './support.ts';

/** A ledger row as the owner reads it, with created_at at PostgreSQL's precision, as the chain covers it. */
interface LedgerRow {
  id: string;
  seller_id: string;
  type: string;
  amount: bigint;
  balance_after: bigint;
  job_id: string;
  credit_request_id: string | null;
  phone_number: string | null;
  description: string | null;
  created_us: string;
  refund_of: string | null;
  hmac: string | null;
}

const chained = (row: LedgerRow): ChainedRow => ({
  id: row.id,
  sellerId: row.seller_id,
  type: row.type,
  amount: row.amount.toString(),
  balanceAfter: row.balance_after.toString(),
  jobId: row.job_id,
  creditRequestId: row.credit_request_id,
  phoneNumber: row.phone_number,
  description: row.description,
  createdAtMicros: row.created_us,
  refundOf: row.refund_of,
});

const randomPhone = () => `0912${String(randomInt(0, 10_000_000)).padStart(7, '0')}`;

describe('a rewritten history is detected', () => {
  let database: Awaited<ReturnType<typeof isolatedDatabase>>;
  let system: System;
  let client: Client;
  let sql: postgres.Sql<{ bigint: bigint }>;

  beforeAll(async () => {
    // A database of its own: the ledgers this file rewrites must not show in other files'
    // checks over every seller (`npm run reconcile`, `sellers_unreconciled`).
    database = await isolatedDatabase('trust_chain');
    system = await System.start({ workers: 1, databaseUrl: database.applicationUrl });
    client = new Client(system.baseUrl);
    sql = testSql(database.ownerUrl);
  });
  afterAll(async () => {
    await system?.stop();
    await sql?.end({ timeout: 5 });
    await database?.drop();
  });

  // Ordered by the table's id: the output column id is text, and '10' sorts before '9'.
  const ledgerOf = (sellerId: string) =>
    sql<LedgerRow[]>`
      select id::text, seller_id::text, type, amount, balance_after, job_id::text, credit_request_id::text,
             phone_number, description, (extract(epoch from created_at) * 1000000)::bigint::text as created_us, refund_of::text, hmac
      from transactions where seller_id = ${sellerId} order by transactions.id`;

  const headOf = async (sellerId: string) => {
    const [row] = await sql<[{ credit_balance: bigint; ledger_head: string | null }]>`
      select credit_balance, ledger_head from sellers where id = ${sellerId}`;
    return row;
  };

  /** What reconciliation checked before the chain: the sum, and each balance_after from the one before. */
  const sumsAndBalances = async (sellerId: string) => {
    const [row] = await sql<[{ balance: bigint; sum: bigint; broken: number }]>`
      select s.credit_balance as balance,
             (select coalesce(sum(amount), 0)::bigint from transactions t where t.seller_id = s.id) as sum,
             (select count(*)::int from (
                select coalesce(lag(balance_after) over (order by id), 0) + amount <> balance_after as broken
                from transactions t where t.seller_id = s.id) c where broken) as broken
      from sellers s where s.id = ${sellerId}`;
    return row;
  };

  /** A funded seller with `sales` sales of 5,000 to one phone, each applied before the next. */
  const sellerWithSales = async (sales: number): Promise<{ seller: TestSeller; phone: string }> => {
    const seller = await createSeller(client);
    await fundSeller(client, seller, 100_000);
    const phone = randomPhone();
    for (let i = 0; i < sales; i++) {
      const res = await client.post('/api/charge-sales', {
        token: seller.apiKey,
        headers: { prefer: 'wait=20' },
        body: { seller_id: seller.id, phone_number: phone, amount: 5_000 },
      });
      expect(res.status, JSON.stringify(res.body)).toBe(200);
      expect(res.body.status).toBe('succeeded');
    }
    expect(await ledgerOf(seller.id)).toHaveLength(sales + 1);
    return { seller, phone };
  };

  /**
   * Someone who can write the tables (their owner) rewrites the ledger, the append-only trigger
   * disabled for the edit. All in one transaction, and the trigger enabled again whatever happens.
   */
  const rewriteAsOwner = async (edit: (tx: postgres.TransactionSql<{ bigint: bigint }>) => Promise<void>) => {
    try {
      await sql.begin(async (tx) => {
        await tx`alter table transactions disable trigger transactions_no_update_or_delete`;
        await edit(tx);
        await tx`alter table transactions enable trigger transactions_no_update_or_delete`;
      });
    } finally {
      await sql`alter table transactions enable trigger transactions_no_update_or_delete`;
    }
    const [trigger] = await sql<[{ enabled: string }]>`
      select tgenabled as enabled from pg_trigger where tgname = 'transactions_no_update_or_delete'`;
    expect(trigger.enabled).toBe('O');
  };

  /** The line `npm run reconcile` prints for a seller that does not reconcile. */
  const unreconciledLine = (stdout: string, sellerId: string) =>
    stdout.split('\n').find((line) => line.includes(`UNRECONCILED seller ${sellerId}:`));

  it('an intact ledger verifies: the head is the last row’s hmac, and npm run reconcile exits 0', async () => {
    const { seller } = await sellerWithSales(4);
    const ledger = await ledgerOf(seller.id);
    const last = ledger.at(-1) as LedgerRow;
    const check = await reconcileOf(client, seller.id);
    expect(check).toEqual({
      seller_id: seller.id,
      current_balance: '80000',
      calculated_from_transactions: '80000',
      is_reconciled: true,
      difference: '0',
      total_transactions: 5,
      chain_head: last.hmac,
      chain_broken_at: null,
    });
    expect((await headOf(seller.id)).ledger_head).toBe(last.hmac);

    // Each row is sealed with the ledger key over its columns and the previous row's hmac: the
    // chain recomputed from the rows gives exactly the stored hmacs, and another key gives none.
    let previous = '';
    let guessed = '';
    for (const row of ledger) {
      expect(row.hmac).toMatch(/^[0-9a-f]{64}$/);
      expect(sealRow(LEDGER_HMAC_KEY, chained(row), previous)).toBe(row.hmac);
      guessed = sealRow('another-key-of-32-characters-or-more', chained(row), guessed);
      expect(guessed).not.toBe(row.hmac);
      previous = row.hmac as string;
    }
    expect(new Set(ledger.map((r) => r.hmac)).size).toBe(ledger.length);

    const run = await runReconcile(system.env, ['--heads']);
    expect(run.stdout, run.stderr).toContain('all sellers reconcile');
    expect(run.stdout).toContain(`head ${seller.id} ${last.hmac} (5 rows)`);
    expect(run.status).toBe(0);
  });

  it('moving 1,000 rials from one sale to the next, sums and balances kept, is found at the first row changed', async () => {
    const { seller, phone } = await sellerWithSales(4);
    const ledger = await ledgerOf(seller.id);
    // Rows: funding 100000, then sales leaving 95000, 90000, 85000, 80000. X is the second sale.
    const x = ledger[2] as LedgerRow;
    const next = ledger[3] as LedgerRow;
    expect([x.amount, x.balance_after, next.amount, next.balance_after]).toEqual([-5000n, 90_000n, -5000n, 85_000n]);
    const before = await reconcileOf(client, seller.id);
    expect(before.is_reconciled).toBe(true);

    // Even the owner meets the append-only trigger while it is on.
    await expect(sql`update transactions set amount = -6000 where id = ${x.id}`).rejects.toThrow(/append-only/);

    await rewriteAsOwner(async (tx) => {
      await tx`update transactions set amount = -6000, balance_after = 89000,
                 description = ${`Charge of 6000 rials to ${phone}`} where id = ${x.id}`;
      await tx`update transactions set amount = -4000, description = ${`Charge of 4000 rials to ${phone}`}
               where id = ${next.id}`;
    });
    // Everything the ledger checked before its chain still adds up.
    expect(await sumsAndBalances(seller.id)).toEqual({ balance: 80_000n, sum: 80_000n, broken: 0 });
    expect((await ledgerOf(seller.id)).map((r) => r.balance_after)).toEqual([
      100_000n,
      95_000n,
      89_000n,
      85_000n,
      80_000n,
    ]);

    const check = await reconcileOf(client, seller.id);
    expect(check).toMatchObject({
      current_balance: '80000',
      calculated_from_transactions: '80000',
      difference: '0',
      total_transactions: 5,
      is_reconciled: false,
      chain_broken_at: x.id,
    });
    const run = await runReconcile(system.env);
    expect(run.status, run.stdout + run.stderr).toBe(1);
    expect(unreconciledLine(run.stdout, seller.id)).toMatch(
      new RegExp(`difference 0, .*hash chain broken at row ${x.id}$`),
    );
  });

  it('changing only the phone number of a sale is found at that row', async () => {
    const { seller } = await sellerWithSales(3);
    const ledger = await ledgerOf(seller.id);
    const x = ledger[2] as LedgerRow;
    expect((await reconcileOf(client, seller.id)).is_reconciled).toBe(true);

    await rewriteAsOwner(async (tx) => {
      await tx`update transactions set phone_number = ${randomPhone()} where id = ${x.id}`;
    });
    expect(await sumsAndBalances(seller.id)).toEqual({ balance: 85_000n, sum: 85_000n, broken: 0 });

    const check = await reconcileOf(client, seller.id);
    expect(check).toMatchObject({ difference: '0', is_reconciled: false, chain_broken_at: x.id });
    // The rows before it still verify: the break is reported where it is, not at the start.
    expect(x.id).not.toBe(ledger[0]?.id);
    const run = await runReconcile(system.env);
    expect(run.status, run.stdout + run.stderr).toBe(1);
    expect(unreconciledLine(run.stdout, seller.id)).toMatch(new RegExp(`hash chain broken at row ${x.id}$`));
  });

  it('cutting the last row off, with the balance set back to match, is found', async () => {
    const { seller } = await sellerWithSales(3);
    const ledger = await ledgerOf(seller.id);
    const last = ledger.at(-1) as LedgerRow;
    const kept = ledger.at(-2) as LedgerRow;
    const keptHead = (await reconcileOf(client, seller.id)).chain_head;
    expect(keptHead).toBe(last.hmac);

    await rewriteAsOwner(async (tx) => {
      // The sale's delivery names its ledger row: it goes too, as a tamperer would take it.
      await tx`delete from deliveries where sale_transaction_id = ${last.id}`;
      await tx`delete from transactions where id = ${last.id}`;
      await tx`update sellers set credit_balance = ${kept.balance_after} where id = ${seller.id}`;
    });
    expect(await sumsAndBalances(seller.id)).toEqual({ balance: 90_000n, sum: 90_000n, broken: 0 });

    const check = await reconcileOf(client, seller.id);
    expect(check).toMatchObject({
      current_balance: '90000',
      calculated_from_transactions: '90000',
      difference: '0',
      total_transactions: 3,
      is_reconciled: false,
      // The chain now ends short of the head the seller's row records: reported at the last row left.
      chain_head: kept.hmac,
      chain_broken_at: kept.id,
    });
    const run = await runReconcile(system.env);
    expect(run.status, run.stdout + run.stderr).toBe(1);
    expect(unreconciledLine(run.stdout, seller.id)).toMatch(/difference 0, /);

    // Rewinding the recorded head as well leaves nothing inside the database to compare with;
    // the head kept outside it (as `npm run reconcile --heads` prints) no longer matches.
    await rewriteAsOwner(async (tx) => {
      await tx`update sellers set ledger_head = ${kept.hmac} where id = ${seller.id}`;
    });
    const rewound = await reconcileOf(client, seller.id);
    expect(rewound.chain_head).toBe(kept.hmac);
    expect(rewound.chain_head).not.toBe(keptHead);
  });

  it('rows rewritten and resealed without the key are still found; only the key makes a chain verify', async () => {
    const { seller } = await sellerWithSales(3);
    const ledger = await ledgerOf(seller.id);
    const x = ledger[1] as LedgerRow;

    // Reseals the rows from X on with `key` after changing X's phone, and moves the head on too.
    const rewriteFromX = (key: string, phone: string) =>
      rewriteAsOwner(async (tx) => {
        let previous = (ledger[0] as LedgerRow).hmac as string;
        for (const row of ledger.slice(1)) {
          const edited = row.id === x.id ? { ...row, phone_number: phone } : row;
          const hmac = sealRow(key, chained(edited), previous);
          await tx`update transactions set phone_number = ${edited.phone_number}, hmac = ${hmac} where id = ${row.id}`;
          previous = hmac;
        }
        await tx`update sellers set ledger_head = ${previous} where id = ${seller.id}`;
      });

    const phone = randomPhone();
    await rewriteFromX('a-guessed-key-of-32-characters-or-more', phone);
    expect(await reconcileOf(client, seller.id)).toMatchObject({
      difference: '0',
      is_reconciled: false,
      chain_broken_at: x.id,
    });

    // The control: the same rewrite sealed with the real key verifies, so what found the one above
    // is the key it lacked, not a slip in how the test rewrote the rows.
    await rewriteFromX(LEDGER_HMAC_KEY, phone);
    expect(await reconcileOf(client, seller.id)).toMatchObject({ is_reconciled: true, chain_broken_at: null });
  });
});
