import type { Tx } from '@cs/db';
import { sql } from 'drizzle-orm';

export interface Reconciliation {
  sellerId: string;
  currentBalance: bigint;
  calculatedFromTransactions: bigint;
  totalTransactions: number;
  /** Ledger rows whose balance_after is not the previous row's plus their amount. */
  brokenChainRows: number;
  isReconciled: boolean;
}

type ReconcileRow = {
  seller_id: string;
  current_balance: bigint;
  calculated: bigint;
  total_transactions: bigint;
  broken_chain_rows: bigint;
};

/**
 * Checks that a balance equals the sum of its ledger and that every row's balance_after follows
 * from the one before it. One SQL pass; without `sellerId` it checks every seller.
 */
export async function reconcile(db: Tx, sellerId?: string): Promise<Reconciliation[]> {
  const rows = (await db.execute(sql`
    with chain as (
      select seller_id, amount, balance_after,
             coalesce(lag(balance_after) over (partition by seller_id order by id), 0) + amount <> balance_after as broken
      from transactions
      ${sellerId ? sql`where seller_id = ${sellerId}` : sql``}
    ), totals as (
      select seller_id, sum(amount) as calculated, count(*) as total_transactions,
             count(*) filter (where broken) as broken_chain_rows
      from chain group by seller_id
    )
    select s.id as seller_id, s.credit_balance as current_balance,
           coalesce(t.calculated, 0)::bigint as calculated,
           coalesce(t.total_transactions, 0)::bigint as total_transactions,
           coalesce(t.broken_chain_rows, 0)::bigint as broken_chain_rows
    from sellers s left join totals t on t.seller_id = s.id
    ${sellerId ? sql`where s.id = ${sellerId}` : sql``}
    order by s.id`)) as unknown as ReconcileRow[];
  return rows.map((row) => {
    const currentBalance = BigInt(row.current_balance);
    const calculated = BigInt(row.calculated);
    const brokenChainRows = Number(row.broken_chain_rows);
    return {
      sellerId: row.seller_id,
      currentBalance,
      calculatedFromTransactions: calculated,
      totalTransactions: Number(row.total_transactions),
      brokenChainRows,
      isReconciled: currentBalance === calculated && brokenChainRows === 0,
    };
  });
}
