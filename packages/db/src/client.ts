import { drizzle } from 'drizzle-orm/postgres-js';
import postgres from 'postgres';
import * as schema from './schema/index.ts';

export type Database = ReturnType<typeof createDb>['db'];
/** A database handle or an open transaction: functions that take it let the caller choose the boundary. */
export type Tx = Parameters<Parameters<Database['transaction']>[0]>[0] | Database;

/**
 * Opens a pool; `close()` ends it. Money columns come back as bigint, never as floats.
 * `idleInTransactionTimeoutMs` makes PostgreSQL end a transaction left idle that long (a paused
 * process must not keep rows locked for as long as it sleeps).
 */
export function createDb(url: string, options: { max?: number; idleInTransactionTimeoutMs?: number } = {}) {
  const client = postgres(url, {
    max: options.max ?? 10,
    connect_timeout: 5,
    idle_timeout: 30,
    // After PostgreSQL restarts the driver waits longer before each reconnection attempt (up to
    // 20 s), and the API answered nothing and the partitions stood still for that long after it
    // was back. Callers pace their own retries; the driver should just try again soon.
    backoff: () => 0.5,
    connection: {
      // Statements are prepared once per connection, and PostgreSQL would then settle on a
      // generic plan made from the table sizes of that moment: made on a fresh, empty `jobs`
      // table, it scans the whole table for every job once the table has grown. Planning each
      // execution keeps the plans fit for the data; parsing once is what preparing saves.
      plan_cache_mode: 'force_custom_plan',
      ...(options.idleInTransactionTimeoutMs
        ? { idle_in_transaction_session_timeout: options.idleInTransactionTimeoutMs }
        : {}),
    },
    onnotice: () => {},
    // bigint (int8) as JS bigint: money never passes through a float.
    types: { bigint: postgres.BigInt },
  });
  const db = drizzle(client, { schema });
  return { db, client, close: () => client.end({ timeout: 5 }) };
}
