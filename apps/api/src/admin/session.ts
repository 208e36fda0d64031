import { createHash, randomBytes } from 'node:crypto';
import { auditEvents, auditRow, operatorSessions, operators } from '@cs/db';
import { and, eq, gt, isNull, sql } from 'drizzle-orm';
import type { Context } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { deleteCookie, getSignedCookie, setSignedCookie } from 'hono/cookie';
import { csrf } from 'hono/csrf';
import { createMiddleware } from 'hono/factory';
import { HTTPException } from 'hono/http-exception';
import type { OperatorCaller } from '../context.ts';
import { ApiError, forbidden } from '../errors.ts';
import { actorOf, BOOTSTRAP, bearerToken, identify, isOperator, sameSecret } from '../middleware/auth.ts';
import { MAX_BODY_BYTES } from '../middleware/json-body.ts';
import { clientAddress } from '../services/client-address.ts';
import { type AdminEnv, type AdminSession, Form, wantsHtml } from './context.ts';

const SESSION_COOKIE = 'cs_admin_session';
const LOGIN_COOKIE = 'cs_admin_login';
const LOGIN_FORM_TTL_SECONDS = 60 * 60;
/** The hidden field that carries the CSRF token in every form. */
export const CSRF_FIELD = '_csrf';
/**
 * A session's last request is written down at most this often (a page view need not be a write),
 * and always well within the idle limit, so a session in use never runs out.
 */
const TOUCH_EVERY_MS = 30_000;
const touchEvery = (idleMs: number) => Math.min(TOUCH_EVERY_MS, idleMs / 4);

/*
 * A session is a row in PostgreSQL (operator_sessions); its cookie holds only a random id, signed
 * with SESSION_SECRET, and the row is found by the id's SHA-256. Signing out, the idle limit, the
 * absolute limit and "sign out everywhere" end the row, so a replayed cookie lets no one in, in
 * any API process. Each session and the sign-in form carry a random token that their forms carry
 * too, so a POST must show the token of a cookie only we could have signed. The two values have
 * shapes of their own, so one cookie's value is no use as the other.
 */
const newToken = () => randomBytes(18).toString('base64url');
const sessionIdShape = /^[A-Za-z0-9_-]{32}$/;
const hashOf = (value: string) => createHash('sha256').update(value).digest('hex');

/** Https as the browser saw it; a TLS-terminating proxy says so in X-Forwarded-Proto. */
function isHttps(c: Context): boolean {
  const forwarded = c.req.header('x-forwarded-proto')?.split(',')[0]?.trim().toLowerCase();
  return new URL(c.req.url).protocol === 'https:' || forwarded === 'https';
}

export function cookieOptions(c: Context, path: string, maxAgeSeconds: number) {
  return { path, httpOnly: true, sameSite: 'Strict', secure: isHttps(c), maxAge: maxAgeSeconds } as const;
}

/** Starts a session for the operator (`null`: the bootstrap admin) and writes its sign-in to the audit trail. */
export async function startSession(c: Context<AdminEnv>, caller: OperatorCaller): Promise<void> {
  const { config, db } = c.var.deps;
  deleteCookie(c, LOGIN_COOKIE, { path: '/admin/login' }); // the sign-in form has served
  const id = randomBytes(24).toString('base64url');
  await db.transaction(async (tx) => {
    await tx.insert(operatorSessions).values({
      idHash: hashOf(id),
      operatorId: caller.operator.id,
      csrfToken: newToken(),
      expiresAt: new Date(Date.now() + config.SESSION_MAX_MS),
    });
    await tx.insert(auditEvents).values(
      auditRow({
        actor: actorOf(caller),
        action: 'session.signed_in',
        targetType: 'operator',
        targetId: caller.operator.id ?? 'bootstrap',
        ip: clientAddress(c),
      }),
    );
  });
  await setSignedCookie(
    c,
    SESSION_COOKIE,
    id,
    config.SESSION_SECRET,
    cookieOptions(c, '/admin', config.SESSION_MAX_MS / 1000),
  );
}

/**
 * The session the cookie names, if it is still open: not ended, within its absolute limit, used
 * within the idle limit, its operator still active. Using it moves its idle limit on.
 */
export async function readSession(c: Context<AdminEnv>): Promise<AdminSession | null> {
  const { config, db } = c.var.deps;
  const id = await getSignedCookie(c, config.SESSION_SECRET, SESSION_COOKIE);
  if (!id || !sessionIdShape.test(id)) return null;
  const idHash = hashOf(id);
  const [row] = await db
    .select({ session: operatorSessions, operator: operators })
    .from(operatorSessions)
    .leftJoin(operators, eq(operators.id, operatorSessions.operatorId))
    .where(
      and(
        eq(operatorSessions.idHash, idHash),
        isNull(operatorSessions.endedAt),
        gt(operatorSessions.expiresAt, sql`now()`),
        gt(operatorSessions.lastSeenAt, sql`now() - ${config.SESSION_IDLE_MS} * interval '1 millisecond'`),
      ),
    )
    .limit(1);
  if (!row) return null;
  const { session, operator } = row;
  let caller: OperatorCaller;
  if (session.operatorId === null) caller = BOOTSTRAP;
  else if (operator?.isActive)
    caller = { role: operator.role, operator: { id: operator.id, email: operator.email, name: operator.email } };
  else return null;
  if (Date.now() - session.lastSeenAt.getTime() > touchEvery(config.SESSION_IDLE_MS)) {
    await db.update(operatorSessions).set({ lastSeenAt: sql`now()` }).where(eq(operatorSessions.idHash, idHash));
  }
  return { csrfToken: session.csrfToken, idHash, caller };
}

/** Ends the session on the server (and drops its cookie); the sign-out is audited with it. */
export async function endSession(c: Context<AdminEnv>): Promise<void> {
  const session = c.var.session ?? (await readSession(c));
  deleteCookie(c, SESSION_COOKIE, { path: '/admin', secure: isHttps(c) });
  if (!session) return;
  await c.var.deps.db.transaction(async (tx) => {
    const ended = await tx
      .update(operatorSessions)
      .set({ endedAt: sql`now()` })
      .where(and(eq(operatorSessions.idHash, session.idHash), isNull(operatorSessions.endedAt)))
      .returning({ idHash: operatorSessions.idHash });
    if (ended.length === 0) return;
    await tx.insert(auditEvents).values(
      auditRow({
        actor: actorOf(session.caller),
        action: 'session.signed_out',
        targetType: 'operator',
        targetId: session.caller.operator.id ?? 'bootstrap',
        ip: clientAddress(c),
      }),
    );
  });
}

/** Ends every open session of the operator (`null` id: every bootstrap session), audited as one sign-out everywhere. */
export async function endEverySession(c: Context<AdminEnv>, caller: OperatorCaller): Promise<void> {
  deleteCookie(c, SESSION_COOKIE, { path: '/admin', secure: isHttps(c) });
  await c.var.deps.db.transaction(async (tx) => {
    const ended = await tx
      .update(operatorSessions)
      .set({ endedAt: sql`now()` })
      .where(
        and(
          caller.operator.id === null
            ? isNull(operatorSessions.operatorId)
            : eq(operatorSessions.operatorId, caller.operator.id),
          isNull(operatorSessions.endedAt),
        ),
      )
      .returning({ idHash: operatorSessions.idHash });
    await tx.insert(auditEvents).values(
      auditRow({
        actor: actorOf(caller),
        action: 'session.signed_out',
        targetType: 'operator',
        targetId: caller.operator.id ?? 'bootstrap',
        ip: clientAddress(c),
        details: { everywhere: true, sessions_ended: ended.length },
      }),
    );
  });
}

/**
 * The sign-in form's token, bound to a cookie set with it, so only a form this browser loaded
 * from us can sign it in (no login CSRF).
 */
export async function issueLoginToken(c: Context<AdminEnv>): Promise<string> {
  const token = newToken();
  const options = cookieOptions(c, '/admin/login', LOGIN_FORM_TTL_SECONDS);
  await setSignedCookie(c, LOGIN_COOKIE, token, c.var.deps.config.SESSION_SECRET, options);
  return token;
}

export async function isLoginTokenValid(c: Context<AdminEnv>, form: Form): Promise<boolean> {
  const token = await getSignedCookie(c, c.var.deps.config.SESSION_SECRET, LOGIN_COOKIE);
  return !!token && sameSecret(form.one(CSRF_FIELD) ?? '', token);
}

const isLoginPath = (path: string) => /^\/admin\/login\/?$/.test(path);
const isSafeMethod = (method: string) => method === 'GET' || method === 'HEAD';

/** Where to go after signing in: a page of ours only, so the login link cannot send anyone elsewhere. */
export function safeNext(next: string | undefined): string {
  if (!next || !/^[\x21-\x7e]+$/.test(next) || next.includes('\\')) return '/admin';
  if (!/^\/admin(?:[/?#]|$)/.test(next) || /^\/admin\/login(?:[/?#]|$)/.test(next)) return '/admin';
  return next;
}

/** The host the browser saw: behind a proxy, X-Forwarded-Host (which a cross-site form cannot set). */
function isThisHost(origin: string, c: Context): boolean {
  try {
    const host = new URL(origin).host;
    return host === c.req.header('host') || host === c.req.header('x-forwarded-host');
  } catch {
    return false; // `Origin: null`: a sandboxed or opaque origin is never ours
  }
}

/**
 * A form POST must come from our own pages: by the browser's Sec-Fetch-Site (`same-origin`),
 * or, from a browser too old to send that, by an Origin naming this host. A Sec-Fetch-Site
 * naming another site is refused even with our Origin.
 */
const fromThisSite = csrf({
  origin: (origin, c) => c.req.header('sec-fetch-site') === undefined && isThisHost(origin, c),
});

export const sameSiteOnly = createMiddleware<AdminEnv>(async (c, next) => {
  // A browser never attaches the bearer token by itself, so no other site can ride a request that has one.
  if (c.req.header('authorization') === undefined) {
    await fromThisSite(c, async () => {}).catch((error: unknown) => {
      throw error instanceof HTTPException ? forbidden('Requests from another site are refused') : error;
    });
  }
  await next();
});

export const formBodyLimit = bodyLimit({
  maxSize: MAX_BODY_BYTES,
  onError: () => {
    throw new ApiError('payload_too_large', `The body is larger than ${MAX_BODY_BYTES} bytes`);
  },
});

/**
 * Lets in an operator's bearer token or a valid session cookie. Without either a browser is sent
 * to sign in, and an API client gets 401; a seller's key gets 403, as on the API. What each page
 * or action allows is checked by its role.
 */
export const adminGate = createMiddleware<AdminEnv>(async (c, next) => {
  if (isLoginPath(c.req.path)) return next();
  const authorization = c.req.header('authorization');
  if (authorization !== undefined) {
    const token = bearerToken(authorization);
    const caller = await c.var.deps.authFailures.guard(c, token, () => identify(c.var.deps, token));
    if (caller && isOperator(caller)) {
      c.set('caller', caller);
      c.set('session', null);
      return next();
    }
    if (caller) throw forbidden('Only an operator may open the operator pages');
  } else {
    const session = await readSession(c);
    if (session) {
      c.set('caller', session.caller);
      c.set('session', session);
      return next();
    }
  }
  if (wantsHtml(c)) {
    const url = new URL(c.req.url);
    const back = isSafeMethod(c.req.method) ? `?next=${encodeURIComponent(url.pathname + url.search)}` : '';
    return c.redirect(`/admin/login${back}`, 302);
  }
  throw new ApiError('unauthorized', "Sign in at /admin/login, or send an operator's bearer token");
});

/**
 * Every POST of a cookie session must carry the session's CSRF token. Requests with the bearer
 * token need none: a browser never attaches that header by itself, so no other site can ride it.
 */
export const csrfGuard = createMiddleware<AdminEnv>(async (c, next) => {
  const session = c.var.session;
  if (!session || isSafeMethod(c.req.method) || isLoginPath(c.req.path)) return next();
  const form = await Form.read(c);
  if (!sameSecret(form.one(CSRF_FIELD) ?? '', session.csrfToken)) {
    throw forbidden('This form has expired or did not come from the operator pages; reload the page and try again');
  }
  await next();
});
