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
    ...(options.idleInTransactionTimeoutMs
      ? { connection: { idle_in_transaction_session_timeout: options.idleInTransactionTimeoutMs } }
      : {}),
    onnotice: () => {},
    // bigint (int8) as JS bigint: money never passes through a float.
    types: { bigint: postgres.BigInt },
  });
  const db = drizzle(client, { schema });
  return { db, client, close: () => client.end({ timeout: 5 }) };
}
