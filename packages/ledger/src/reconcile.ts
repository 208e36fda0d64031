import type { Database } from '@cs/db';
import { type ChainedRow, ChainVerifier } from './chain.ts';

export interface Reconciliation {
  sellerId: string;
  currentBalance: bigint;
  calculatedFromTransactions: bigint;
  totalTransactions: number;
  /** Ledger rows whose balance_after is not the previous row's plus their amount. */
  brokenChainRows: number;
  /** The hmac of the seller's last ledger row (null without rows). */
  chainHead: string | null;
  /** The id of the first row whose hmac does not verify, or where the chain stops short of its recorded head. */
  chainBrokenAt: string | null;
  isReconciled: boolean;
}

type TotalsRow = {
  seller_id: string;
  current_balance: bigint;
  ledger_head: string | null;
  calculated: bigint;
  total_transactions: bigint;
  broken_chain_rows: bigint;
};

type LedgerRow = {
  id: string;
  seller_id: string;
  type: string;
  amount: string;
  balance_after: string;
  job_id: string;
  credit_request_id: string | null;
  phone_number: string | null;
  description: string | null;
  created_us: string;
  refund_of: string | null;
  hmac: string | null;
};

/**
 * Checks that a balance equals the sum of its ledger, that every row's balance_after follows from
 * the one before it (one SQL pass), and that the seller's hash chain verifies with the ledger key
 * (one pass over the rows, in id order, streamed). Without `sellerId` it checks every seller.
 */
export async function reconcile(
  db: Database,
  { ledgerKey, sellerId }: { ledgerKey: string; sellerId?: string },
): Promise<Reconciliation[]> {
  const one = sellerId !== undefined;
  // One snapshot for both reads: a batch committing between them would otherwise show rows past
  // the head the first read saw, and an intact chain would be reported broken.
  return db.$client.begin('isolation level repeatable read read only', async (sql) => {
    const totals = await sql<TotalsRow[]>`
    with chain as (
      select seller_id, amount, balance_after,
             coalesce(lag(balance_after) over (partition by seller_id order by id), 0) + amount <> balance_after as broken
      from transactions
      ${one ? sql`where seller_id = ${sellerId}` : sql``}
    ), totals as (
      select seller_id, sum(amount) as calculated, count(*) as total_transactions,
             count(*) filter (where broken) as broken_chain_rows
      from chain group by seller_id
    )
    select s.id as seller_id, s.credit_balance as current_balance, s.ledger_head,
           coalesce(t.calculated, 0)::bigint as calculated,
           coalesce(t.total_transactions, 0)::bigint as total_transactions,
           coalesce(t.broken_chain_rows, 0)::bigint as broken_chain_rows
    from sellers s left join totals t on t.seller_id = s.id
    ${one ? sql`where s.id = ${sellerId}` : sql``}
    order by s.id`;

    const chains = new Map<string, ChainVerifier>();
    // Ordered by the table's columns: the output names id and seller_id are text, and '10' sorts after '1001'.
    await sql<LedgerRow[]>`
    select id::text, seller_id::text, type, amount::text, balance_after::text, job_id::text,
           credit_request_id::text, phone_number, description,
           (extract(epoch from created_at) * 1000000)::bigint::text as created_us, refund_of::text, hmac
    from transactions
    ${one ? sql`where seller_id = ${sellerId}` : sql``}
    order by transactions.seller_id, transactions.id`.cursor(2000, (rows) => {
      for (const row of rows) {
        let chain = chains.get(row.seller_id);
        if (!chain) {
          chain = new ChainVerifier(ledgerKey);
          chains.set(row.seller_id, chain);
        }
        chain.add(chainedRow(row), row.hmac);
      }
    });

    return totals.map((row) => {
      const currentBalance = BigInt(row.current_balance);
      const calculated = BigInt(row.calculated);
      const brokenChainRows = Number(row.broken_chain_rows);
      const chain = (chains.get(row.seller_id) ?? new ChainVerifier(ledgerKey)).result(row.ledger_head);
      return {
        sellerId: row.seller_id,
        currentBalance,
        calculatedFromTransactions: calculated,
        totalTransactions: Number(row.total_transactions),
        brokenChainRows,
        chainHead: chain.head,
        chainBrokenAt: chain.brokenAt,
        isReconciled: currentBalance === calculated && brokenChainRows === 0 && chain.intact,
      };
    });
  });
}

function chainedRow(row: LedgerRow): ChainedRow {
  return {
    id: row.id,
    sellerId: row.seller_id,
    type: row.type,
    amount: row.amount,
    balanceAfter: row.balance_after,
    jobId: row.job_id,
    creditRequestId: row.credit_request_id,
    phoneNumber: row.phone_number,
    description: row.description,
    createdAtMicros: row.created_us,
    refundOf: row.refund_of,
  };
}
