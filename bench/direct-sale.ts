import { CHAIN_START, sealRow } from '@cs/ledger';
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
 * It writes what the product writes per sale (balance and chain head, a final jobs row with the
 * sale's facts in their columns, the ledger row sealed into the seller's hash chain, the phone
 * totals) into the same tables, so the references pay for the same constraints, indexes, hmac
 * and append-only trigger, and the ledger stays one consistent history that `reconcile` can
 * check with the same `ledgerKey` as the product's.
 *
 * The row is sealed as the product's worker seals it (see applyJobs in @cs/ledger): the ledger id
 * is drawn after the seller lock, so a seller's rows get ids in the order its chain links them,
 * and created_at is set from the JS clock, so the hmac covers the very microseconds stored
 * (a Date has ms precision: micros = ms × 1000).
 *
 * The lock and the id go out together, and the writes after them too, pipelined on the
 * connection: this is meant as what PostgreSQL and postgres.js can do per locked row, not a straw
 * man.
 */
export async function sellInOneTransaction(sql: Sql, sale: DirectSale, ledgerKey: string): Promise<DirectSaleResult> {
  return sql.begin(async (tx) => {
    // Statements sent together run in the order sent: nextval runs once the seller row is locked.
    const [[seller], [drawn]] = await Promise.all([
      tx<{ credit_balance: bigint; ledger_head: string | null }[]>`
        select credit_balance, ledger_head from sellers where id = ${sale.sellerId} for update`,
      tx<{ id: bigint }[]>`select nextval('transactions_id_seq') as id`,
    ]);
    if (!seller) return { ok: false, code: 'seller_not_found' } as const;
    if (!drawn) throw new Error('nextval returned nothing');
    const newBalance = seller.credit_balance - sale.amount;
    if (newBalance < 0n) return { ok: false, code: 'insufficient_balance' } as const;

    const jobId = uuidv7();
    const transactionId = drawn.id;
    const amount = sale.amount.toString();
    const createdAt = new Date();
    const description = `Charge of ${amount} rials to ${sale.phoneNumber}`;
    const hmac = sealRow(
      ledgerKey,
      {
        id: transactionId.toString(),
        sellerId: sale.sellerId,
        type: 'charge_sale',
        amount: `-${amount}`,
        balanceAfter: newBalance.toString(),
        jobId,
        creditRequestId: null,
        phoneNumber: sale.phoneNumber,
        description,
        createdAtMicros: (BigInt(createdAt.getTime()) * 1000n).toString(),
        refundOf: null,
      },
      seller.ledger_head ?? CHAIN_START,
    );
    const result = {
      transaction_id: transactionId.toString(),
      seller_id: sale.sellerId,
      phone_number: sale.phoneNumber,
      amount,
      new_balance: newBalance.toString(),
    };
    // The jobs row first: the ledger row's job_id references it.
    await Promise.all([
      tx`update sellers set credit_balance = ${newBalance.toString()}::bigint, ledger_head = ${hmac}
         where id = ${sale.sellerId}`,
      tx`insert into jobs (id, type, seller_id, partition, queue_job_id, status, amount, phone_number, request_id,
                           result, submitted_at, started_at, applied_at, finished_at)
         values (${jobId}, 'charge_sale', ${sale.sellerId}, ${partitionOf(sale.sellerId, PARTITIONS)}, ${jobId}, 'succeeded',
                 ${amount}::bigint, ${sale.phoneNumber}, ${sale.requestId}, ${tx.json(result)},
                 ${sale.receivedAt}, now(), clock_timestamp(), clock_timestamp())`,
      tx`insert into transactions (id, seller_id, type, amount, balance_after, job_id, phone_number, description,
                                   created_at, hmac)
         overriding system value
         values (${transactionId.toString()}::bigint, ${sale.sellerId}, 'charge_sale', ${`-${amount}`}::bigint,
                 ${newBalance.toString()}::bigint, ${jobId}, ${sale.phoneNumber}, ${description}, ${createdAt}, ${hmac})`,
      tx`insert into phone_numbers (number, total_charged, charge_count) values (${sale.phoneNumber}, ${amount}::bigint, 1)
         on conflict (number) do update set
           total_charged = phone_numbers.total_charged + excluded.total_charged,
           charge_count = phone_numbers.charge_count + 1`,
    ]);
    return { ok: true, jobId, transactionId, newBalance } as const;
  });
}
