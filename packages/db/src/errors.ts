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

/** True when the error says PostgreSQL could not be reached, as opposed to a query it refused. */
export function isDatabaseUnavailable(error: unknown): boolean {
  const code = (error as { code?: unknown } | null)?.code;
  if (typeof code !== 'string') return false;
  return unavailableCodes.has(code) || code.startsWith('08');
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
