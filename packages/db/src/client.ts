import { drizzle } from 'drizzle-orm/postgres-js';
import postgres, { type Sql, type TransactionSql } from 'postgres';
import * as schema from './schema/index.ts';

export type Database = ReturnType<typeof createDb>['db'];
/** A database handle or an open transaction: functions that take it let the caller choose the boundary. */
export type Tx = Parameters<Parameters<Database['transaction']>[0]>[0] | Database;

export interface DbOptions {
  max?: number;
  /**
   * Makes PostgreSQL end a transaction of this pool left idle that long (a paused process must
   * not keep rows locked for as long as it sleeps). Set per transaction, never per session.
   */
  idleInTransactionTimeoutMs?: number;
  /**
   * Named prepared statements, each parsed once per connection (the default). `false` sends every
   * statement unnamed, as PgBouncer's transaction pooling before 1.21 requires (DATABASE_PREPARE).
   */
  prepare?: boolean;
}

/**
 * Opens a pool; `close()` ends it. Money columns come back as bigint, never as floats.
 *
 * Nothing is set per session, neither by startup parameter nor by `SET`: behind a pooler in
 * transaction mode a session is not ours (server connections pass from one client to the next
 * between transactions, and PgBouncer refuses startup parameters it does not know). Each setting
 * lives where it holds in every mode:
 * - `plan_cache_mode = force_custom_plan` is the application role's default in the application's
 *   database, set by the migration (`grantApplicationRole`). Statements are prepared once per
 *   connection, and PostgreSQL would otherwise settle on a generic plan made from the table sizes
 *   of that moment: made on a fresh, empty `jobs` table, it scans the whole table for every job
 *   once the table has grown. Planning each execution keeps the plans fit for the data; parsing
 *   once is what preparing saves.
 * - `idle_in_transaction_session_timeout` is set with `SET LOCAL` as the first statement of every
 *   transaction this pool begins (see `settingEachTransaction`).
 */
export function createDb(url: string, options: DbOptions = {}) {
  const client = postgres(url, {
    max: options.max ?? 10,
    prepare: options.prepare ?? true,
    connect_timeout: 5,
    idle_timeout: 30,
    // After PostgreSQL restarts the driver waits longer before each reconnection attempt (up to
    // 20 s), and the API answered nothing and the partitions stood still for that long after it
    // was back. Callers pace their own retries; the driver should just try again soon.
    backoff: () => 0.5,
    onnotice: () => {},
    // bigint (int8) as JS bigint: money never passes through a float.
    types: { bigint: postgres.BigInt },
  });
  if (options.idleInTransactionTimeoutMs) {
    const ms = options.idleInTransactionTimeoutMs;
    if (!Number.isSafeInteger(ms) || ms < 0) throw new Error(`idleInTransactionTimeoutMs: not a whole number: ${ms}`);
    settingEachTransaction(client, `set local idle_in_transaction_session_timeout = ${ms}`);
  }
  const db = drizzle(client, { schema });
  return { db, client, close: () => client.end({ timeout: 5 }) };
}

/**
 * Makes every transaction begun on the pool (`client.begin`, and so Drizzle's `transaction` and
 * the worker's batch transaction in `applyJobs`) run `statement` first. It is a simple query with
 * no parameters, sent in the same round trip as the transaction's first statements (queries of a
 * transaction are pipelined in the order they are made), and `SET LOCAL` ends with the transaction,
 * so the next transaction on that server connection, whichever client it serves, never inherits it.
 */
function settingEachTransaction<T extends Record<string, unknown>>(client: Sql<T>, statement: string): void {
  const begin = client.begin.bind(client) as (...args: unknown[]) => Promise<unknown>;
  const beginWithSetting = (...args: unknown[]) => {
    const callback = args.pop() as (tx: TransactionSql<T>) => unknown;
    return begin(...args, async (tx: TransactionSql<T>) => {
      const setting = tx.unsafe(statement).execute();
      const work = (async () => {
        const result = callback(tx);
        return Array.isArray(result) ? Promise.all(result) : result;
      })();
      const [, result] = await Promise.all([setting, work]);
      return result;
    });
  };
  client.begin = beginWithSetting as Sql<T>['begin'];
}
