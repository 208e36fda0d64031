import { randomBytes } from 'node:crypto';
import type { Context } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { deleteCookie, getSignedCookie, setSignedCookie } from 'hono/cookie';
import { csrf } from 'hono/csrf';
import { createMiddleware } from 'hono/factory';
import { HTTPException } from 'hono/http-exception';
import { ApiError, forbidden } from '../errors.ts';
import { bearerToken, identify, sameSecret } from '../middleware/auth.ts';
import { MAX_BODY_BYTES } from '../middleware/json-body.ts';
import { type AdminEnv, type AdminSession, Form, wantsHtml } from './context.ts';

const SESSION_COOKIE = 'cs_admin_session';
const LOGIN_COOKIE = 'cs_admin_login';
const SESSION_TTL_MS = 8 * 60 * 60 * 1000;
const LOGIN_FORM_TTL_SECONDS = 60 * 60;
/** The hidden field that carries the CSRF token in every form. */
export const CSRF_FIELD = '_csrf';

/*
 * Both cookies are signed (HMAC-SHA256) with the admin token: there is no other secret to
 * configure, and rotating the token signs every operator out. Each holds a random token that
 * the page's forms carry too, so a POST must show the token of a cookie only we could have
 * signed. The two values have shapes of their own, so one cookie's value is no use as the other.
 */
const newToken = () => randomBytes(18).toString('base64url');
const sessionValue = /^([A-Za-z0-9_-]{24})\.(\d{13,15})$/;

/** Https as the browser saw it; a TLS-terminating proxy says so in X-Forwarded-Proto. */
function isHttps(c: Context): boolean {
  const forwarded = c.req.header('x-forwarded-proto')?.split(',')[0]?.trim().toLowerCase();
  return new URL(c.req.url).protocol === 'https:' || forwarded === 'https';
}

export function cookieOptions(c: Context, path: string, maxAgeSeconds: number) {
  return { path, httpOnly: true, sameSite: 'Strict', secure: isHttps(c), maxAge: maxAgeSeconds } as const;
}

/** `<token>.<expires at, ms>`, signed: stateless, so any API process can check it. */
export async function startSession(c: Context<AdminEnv>): Promise<void> {
  deleteCookie(c, LOGIN_COOKIE, { path: '/admin/login' }); // the sign-in form has served
  const value = `${newToken()}.${Date.now() + SESSION_TTL_MS}`;
  const options = cookieOptions(c, '/admin', SESSION_TTL_MS / 1000);
  await setSignedCookie(c, SESSION_COOKIE, value, c.var.deps.config.ADMIN_TOKEN, options);
}

export async function readSession(c: Context<AdminEnv>): Promise<AdminSession | null> {
  const value = await getSignedCookie(c, c.var.deps.config.ADMIN_TOKEN, SESSION_COOKIE);
  const [, csrfToken, expires] = sessionValue.exec(value || '') ?? [];
  if (!csrfToken || !expires) return null;
  // The cookie's Max-Age is only advice to the browser; the signed expiry is what holds.
  return Number(expires) > Date.now() ? { csrfToken } : null;
}

export function endSession(c: Context<AdminEnv>): void {
  deleteCookie(c, SESSION_COOKIE, { path: '/admin', secure: isHttps(c) });
}

/**
 * The sign-in form's token, bound to a cookie set with it, so only a form this browser loaded
 * from us can sign it in (no login CSRF).
 */
export async function issueLoginToken(c: Context<AdminEnv>): Promise<string> {
  const token = newToken();
  const options = cookieOptions(c, '/admin/login', LOGIN_FORM_TTL_SECONDS);
  await setSignedCookie(c, LOGIN_COOKIE, token, c.var.deps.config.ADMIN_TOKEN, options);
  return token;
}

export async function isLoginTokenValid(c: Context<AdminEnv>, form: Form): Promise<boolean> {
  const token = await getSignedCookie(c, c.var.deps.config.ADMIN_TOKEN, LOGIN_COOKIE);
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
 * Lets in the admin bearer token or a valid session cookie. Without either a browser is sent to
 * sign in, and an API client gets 401; a seller's key gets 403, as on the API.
 */
export const adminGate = createMiddleware<AdminEnv>(async (c, next) => {
  if (isLoginPath(c.req.path)) return next();
  const authorization = c.req.header('authorization');
  if (authorization !== undefined) {
    const token = bearerToken(authorization);
    const caller = await c.var.deps.authFailures.guard(c, token, () => identify(c.var.deps, token));
    if (caller?.role === 'admin') {
      c.set('caller', caller);
      c.set('session', null);
      return next();
    }
    if (caller) throw forbidden('Only the operator may open the operator pages');
  } else {
    const session = await readSession(c);
    if (session) {
      c.set('caller', { role: 'admin', name: 'admin' });
      c.set('session', session);
      return next();
    }
  }
  if (wantsHtml(c)) {
    const url = new URL(c.req.url);
    const back = isSafeMethod(c.req.method) ? `?next=${encodeURIComponent(url.pathname + url.search)}` : '';
    return c.redirect(`/admin/login${back}`, 302);
  }
  throw new ApiError('unauthorized', 'Sign in at /admin/login, or send the admin bearer token');
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
