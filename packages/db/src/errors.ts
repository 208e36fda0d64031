const unavailableCodes = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ENOTFOUND',
  'ETIMEDOUT',
  'EPIPE',
  'CONNECT_TIMEOUT',
  'CONNECTION_CLOSED',
  'CONNECTION_ENDED',
  'CONNECTION_DESTROYED',
  '57P01', // admin_shutdown
  '57P02', // crash_shutdown
  '57P03', // cannot_connect_now
  '53300', // too_many_connections
]);

/**
 * The driver's error code, looked for along the `cause` chain: Drizzle wraps the driver's error
 * (`DrizzleQueryError`, the original as its cause), and judged by the wrapper alone an outage
 * would read as a bad query.
 */
export function databaseErrorCode(error: unknown): string | undefined {
  for (
    let e = error, depth = 0;
    e && typeof e === 'object' && depth < 5;
    e = (e as { cause?: unknown }).cause, depth++
  ) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string') return code;
  }
  return undefined;
}

/** True when the error says PostgreSQL could not be reached, as opposed to a query it refused. */
export function isDatabaseUnavailable(error: unknown): boolean {
  const code = databaseErrorCode(error);
  if (code === undefined) return false;
  return unavailableCodes.has(code) || code.startsWith('08');
}

/**
 * True when trying again may succeed: PostgreSQL unreachable or restarting, a deadlock or a
 * serialization failure (the statement was rolled back), or a transaction PostgreSQL ended for
 * sitting idle (25P03). Nothing of the failed attempt was applied.
 */
export function isRetryableDatabaseError(error: unknown): boolean {
  const code = databaseErrorCode(error);
  return isDatabaseUnavailable(error) || code === '40001' || code === '40P01' || code === '25P03';
}

/** One line for an operator, instead of a stack trace. */
export function describeConnectionError(error: unknown, url: string): string {
  const where = safeUrl(url);
  if (isDatabaseUnavailable(error))
    return `PostgreSQL is unreachable at ${where} (${(error as { code: string }).code})`;
  return `${(error as Error)?.message ?? String(error)} (PostgreSQL at ${where})`;
}

function safeUrl(url: string): string {
  try {
    const u = new URL(url);
    u.password = '';
    return `${u.host}${u.pathname}`;
  } catch {
    return 'an invalid DATABASE_URL';
  }
}
