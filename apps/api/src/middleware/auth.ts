import { createHash, timingSafeEqual } from 'node:crypto';
import { type Actor, operators } from '@cs/db';
import { BOOTSTRAP_NAME } from '@cs/ledger';
import { eq } from 'drizzle-orm';
import { createMiddleware } from 'hono/factory';
import type { AppEnv, Caller, OperatorCaller } from '../context.ts';
import { ApiError, forbidden } from '../errors.ts';

/** Api keys and operator tokens are stored as their SHA-256: a stolen table gives no usable token. */
export const hashApiKey = (key: string) => createHash('sha256').update(key).digest('hex');

/** Operator tokens carry a prefix of their own, so a token is looked up where it can belong. */
export const OPERATOR_TOKEN_PREFIX = 'op_';

/** Compares two secrets in constant time, whatever their lengths. */
export function sameSecret(a: string, b: string): boolean {
  const left = createHash('sha256').update(a).digest();
  const right = createHash('sha256').update(b).digest();
  return timingSafeEqual(left, right);
}

/** The bootstrap admin: whoever holds ADMIN_TOKEN. */
export const BOOTSTRAP: OperatorCaller = { role: 'admin', operator: { id: null, email: null, name: BOOTSTRAP_NAME } };

/**
 * Reads the token: ADMIN_TOKEN (the bootstrap admin), an active operator's token, or a seller's
 * api key. Anything else is 401. An operator's token is looked up on every request, so a rotated
 * token, a changed role or a deactivation holds at once in every API process.
 */
export async function identify(deps: AppEnv['Variables']['deps'], token: string | undefined): Promise<Caller | null> {
  if (!token) return null;
  if (sameSecret(token, deps.config.ADMIN_TOKEN)) return BOOTSTRAP;
  if (token.startsWith(OPERATOR_TOKEN_PREFIX)) return operatorByToken(deps, hashApiKey(token));
  const owner = await deps.sellerKeys.owner(hashApiKey(token));
  return owner ? { role: 'seller', sellerId: owner.sellerId, isActive: owner.isActive } : null;
}

export async function operatorById(deps: AppEnv['Variables']['deps'], id: string): Promise<OperatorCaller | null> {
  const [row] = await deps.db.select().from(operators).where(eq(operators.id, id)).limit(1);
  return row?.isActive ? { role: row.role, operator: { id: row.id, email: row.email, name: row.email } } : null;
}

async function operatorByToken(deps: AppEnv['Variables']['deps'], tokenHash: string): Promise<OperatorCaller | null> {
  const [row] = await deps.db.select().from(operators).where(eq(operators.tokenHash, tokenHash)).limit(1);
  return row?.isActive ? { role: row.role, operator: { id: row.id, email: row.email, name: row.email } } : null;
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

export const isOperator = (caller: Caller): caller is OperatorCaller => caller.role !== 'seller';

/** Managing sellers and operators, reading the audit trail: admins only. */
export function requireAdmin(caller: Caller): void {
  if (caller.role !== 'admin') throw forbidden('Only an admin may do this');
}

/** Processing credit requests: approvers and admins. */
export function requireApprover(caller: Caller): asserts caller is OperatorCaller {
  if (caller.role !== 'admin' && caller.role !== 'approver')
    throw forbidden('Only an approver or an admin may do this');
}

/** What every operator reads (sellers, the ledger, phone numbers, the overview): any operator role. */
export function requireOperator(caller: Caller): asserts caller is OperatorCaller {
  if (!isOperator(caller)) throw forbidden('Only an operator may do this');
}

/** Reading a seller's data: any operator, or the seller itself. */
export function requireSellerAccess(caller: Caller, sellerId: string): void {
  if (caller.role === 'seller' && caller.sellerId !== sellerId)
    throw forbidden("You may not touch another seller's data");
}

/** Acting for a seller (a sale, a credit request, a new key): an admin, or the seller itself. */
export function requireSellerAction(caller: Caller, sellerId: string): void {
  requireSellerAccess(caller, sellerId);
  if (caller.role === 'viewer' || caller.role === 'approver')
    throw forbidden('Only an admin or the seller may do this');
}

/** Who acted, for the audit trail: from the credentials, never from a request's body. */
export function actorOf(caller: Caller): Actor {
  if (caller.role === 'seller') return { type: 'seller', id: caller.sellerId, email: null };
  if (caller.operator.id === null) return { type: 'bootstrap', id: null, email: null };
  return { type: 'operator', id: caller.operator.id, email: caller.operator.email };
}

/** Who is processing a credit request, as its job records it: for the request and the audit row. */
export interface ApprovalBy {
  /** The operator's email, or `bootstrap`. */
  processedBy: string;
  actorId: string | null;
  actorIp: string | null;
}

export function approvalBy(caller: OperatorCaller, ip: string | null): ApprovalBy {
  return { processedBy: caller.operator.name, actorId: caller.operator.id, actorIp: ip };
}

/** One name per caller, whoever it is: what per-caller limits count by. */
export function callerKey(caller: Caller): string {
  return caller.role === 'seller' ? `seller:${caller.sellerId}` : `operator:${caller.operator.id ?? BOOTSTRAP_NAME}`;
}
