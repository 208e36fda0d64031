import type { HttpBindings } from '@hono/node-server';

/**
 * The address a request came from, as the socket saw it: what the audit trail records. A header
 * such as X-Forwarded-For is anyone's to write, so it is not taken on trust.
 */
export function clientAddress(c: { env: unknown }): string | null {
  return (c.env as Partial<HttpBindings> | undefined)?.incoming?.socket?.remoteAddress ?? null;
}
