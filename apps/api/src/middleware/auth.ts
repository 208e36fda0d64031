import { createHash, timingSafeEqual } from 'node:crypto';
import { createMiddleware } from 'hono/factory';
import type { AppEnv, Caller } from '../context.ts';
import { ApiError, forbidden } from '../errors.ts';

/** Api keys are stored as their SHA-256: a stolen table gives no usable key. */
export const hashApiKey = (key: string) => createHash('sha256').update(key).digest('hex');

/** Compares two secrets in constant time, whatever their lengths. */
export function sameSecret(a: string, b: string): boolean {
  const left = createHash('sha256').update(a).digest();
  const right = createHash('sha256').update(b).digest();
  return timingSafeEqual(left, right);
}

/** Reads the token: the admin's, or a seller's api key. Anything else is 401. */
export async function identify(deps: AppEnv['Variables']['deps'], token: string | undefined): Promise<Caller | null> {
  if (!token) return null;
  if (sameSecret(token, deps.config.ADMIN_TOKEN)) return { role: 'admin', name: 'admin' };
  const owner = await deps.sellerKeys.owner(hashApiKey(token));
  return owner ? { role: 'seller', sellerId: owner.sellerId, isActive: owner.isActive } : null;
}

export function bearerToken(header: string | undefined): string | undefined {
  const match = /^Bearer\s+(\S+)\s*$/i.exec(header ?? '');
  return match?.[1];
}

export const authenticate = createMiddleware<AppEnv>(async (c, next) => {
  const token = bearerToken(c.req.header('authorization'));
  const caller = await c.var.deps.authFailures.guard(c, token, () => identify(c.var.deps, token));
  if (!caller) throw new ApiError('unauthorized', 'A valid bearer token is required');
  c.set('caller', caller);
  await next();
});

export function requireAdmin(caller: Caller): void {
  if (caller.role !== 'admin') throw forbidden('Only the operator may do this');
}

/** The admin reaches every seller; a seller only itself. */
export function requireSellerAccess(caller: Caller, sellerId: string): void {
  if (caller.role === 'seller' && caller.sellerId !== sellerId)
    throw forbidden("You may not touch another seller's data");
}

/** Who processed a credit request, as recorded in it. */
export function callerName(caller: Caller): string {
  return caller.role === 'admin' ? caller.name : `seller:${caller.sellerId}`;
}
