import { partitionOf } from '@cs/queue';
import postgres from 'postgres';
import { uuidv7 } from 'uuidv7';

/**
 * A plain postgres.js pool, int8 as bigint. Not `createDb(...).client`: Drizzle takes over that
 * client's date and json serialisers, so raw queries through it could not bind a Date or json.
 */
export function connect(url: string, max: number) {
  return postgres(url, { max, onnotice: () => {}, types: { bigint: postgres.BigInt } });
}
export type Sql = ReturnType<typeof connect>;

/** The row is final when written, so no worker ever reads its partition; it only has to be valid. */
const PARTITIONS = 16;

export interface DirectSale {
  sellerId: string;
  phoneNumber: string;
  amount: bigint;
  /** Tags the job row so the bench can find the rows a phase wrote. */
  requestId: string;
  /** When the request arrived: the job's submitted_at, as the product's API sets it. */
  receivedAt: Date;
}

export type DirectSaleResult =
  | { ok: true; jobId: string; transactionId: bigint; newBalance: bigint }
  | { ok: false; code: 'seller_not_found' | 'insufficient_balance' };

/**
 * One sale in one transaction, the classic synchronous way: lock the seller row, check, write.
 * It writes what the product writes per sale (balance, a final jobs row, the ledger row, the phone
 * totals) into the same tables, so the references pay for the same constraints, indexes and
 * append-only trigger, and the ledger stays one consistent history that `reconcile` can check.
 *
 * The writes after the lock are pipelined on the connection: this is meant as what PostgreSQL and
 * postgres.js can do per locked row, not a straw man.
 */
export async function sellInOneTransaction(sql: Sql, sale: DirectSale): Promise<DirectSaleResult> {
  return sql.begin(async (tx) => {
    const [seller] = await tx<{ credit_balance: bigint }[]>`
      select credit_balance from sellers where id = ${sale.sellerId} for update`;
    if (!seller) return { ok: false, code: 'seller_not_found' } as const;
    const newBalance = seller.credit_balance - sale.amount;
    if (newBalance < 0n) return { ok: false, code: 'insufficient_balance' } as const;

    const jobId = uuidv7();
    const amount = sale.amount.toString();
    const payload = {
      type: 'charge_sale',
      jobId,
      sellerId: sale.sellerId,
      phoneNumber: sale.phoneNumber,
      amount,
      requestId: sale.requestId,
    };
    const result = {
      seller_id: sale.sellerId,
      phone_number: sale.phoneNumber,
      amount,
      new_balance: newBalance.toString(),
    };
    // The jobs row first: the ledger row's job_id references it.
    const [, , [ledgerRow]] = await Promise.all([
      tx`update sellers set credit_balance = ${newBalance.toString()}::bigint where id = ${sale.sellerId}`,
      tx`insert into jobs (id, type, seller_id, partition, queue_job_id, status, payload, request_id, result,
                           submitted_at, started_at, finished_at)
         values (${jobId}, 'charge_sale', ${sale.sellerId}, ${partitionOf(sale.sellerId, PARTITIONS)}, ${jobId}, 'succeeded',
                 ${tx.json(payload)}, ${sale.requestId}, ${tx.json(result)},
                 ${sale.receivedAt}, now(), clock_timestamp())`,
      tx<
        { id: bigint }[]
      >`insert into transactions (seller_id, type, amount, balance_after, job_id, phone_number, description)
         values (${sale.sellerId}, 'charge_sale', ${`-${amount}`}::bigint, ${newBalance.toString()}::bigint, ${jobId},
                 ${sale.phoneNumber}, ${`Charge of ${amount} rials to ${sale.phoneNumber}`})
         returning id`,
      tx`insert into phone_numbers (number, total_charged, charge_count) values (${sale.phoneNumber}, ${amount}::bigint, 1)
         on conflict (number) do update set
           total_charged = phone_numbers.total_charged + excluded.total_charged,
           charge_count = phone_numbers.charge_count + 1`,
    ]);
    if (!ledgerRow) throw new Error('ledger insert returned nothing');
    return { ok: true, jobId, transactionId: ledgerRow.id, newBalance } as const;
  });
}
