import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import type { Context, Hono } from 'hono';
import { bodyLimit } from 'hono/body-limit';
import { deleteCookie, getCookie, setCookie } from 'hono/cookie';
import { createMiddleware } from 'hono/factory';
import { ApiError, forbidden } from '../errors.ts';
import { bearerToken, identify } from '../middleware/auth.ts';
import { MAX_BODY_BYTES } from '../middleware/json-body.ts';
import { type AdminEnv, type AdminSession, Form, wantsHtml } from './context.ts';
import { loginPage } from './views.tsx';

const SESSION_COOKIE = 'cs_admin_session';
const LOGIN_COOKIE = 'cs_admin_login';
export const SESSION_TTL_MS = 8 * 60 * 60 * 1000;
const LOGIN_FORM_TTL_SECONDS = 60 * 60;
/** The hidden field that carries the CSRF token in every form. */
export const CSRF_FIELD = '_csrf';

/**
 * Keyed from the admin token rather than a secret of its own: there is no other secret to
 * configure, and rotating the token signs every operator out.
 */
function signingKey(adminToken: string): Buffer {
  return createHmac('sha256', adminToken).update('charge-sales/admin-session/v1').digest();
}

/** The purpose is part of what is signed, so a signature made for one use is worthless for another. */
function sign(adminToken: string, purpose: string, data: string): string {
  return createHmac('sha256', signingKey(adminToken)).update(`${purpose}\n${data}`).digest('base64url');
}

function sameText(a: string, b: string): boolean {
  const left = Buffer.from(a);
  const right = Buffer.from(b);
  return left.length === right.length && timingSafeEqual(left, right);
}

/** `<id>.<expires at, ms>.<HMAC>`: stateless, so any API process can check it. */
export function createSessionValue(adminToken: string, now = Date.now()): string {
  const body = `${randomBytes(18).toString('base64url')}.${now + SESSION_TTL_MS}`;
  return `${body}.${sign(adminToken, 'session', body)}`;
}

export function readSessionValue(adminToken: string, value: string | undefined, now = Date.now()): AdminSession | null {
  const match = /^([A-Za-z0-9_-]{24})\.(\d{13,15})\.([A-Za-z0-9_-]{43})$/.exec(value ?? '');
  const [, id, expires, mac] = match ?? [];
  if (!id || !expires || !mac) return null;
  if (!sameText(mac, sign(adminToken, 'session', `${id}.${expires}`))) return null;
  // The cookie's Max-Age is only advice to the browser; the signed expiry is what holds.
  const expiresAt = Number(expires);
  if (expiresAt <= now) return null;
  return { id, expiresAt, csrfToken: sign(adminToken, 'csrf', id) };
}

/** Https as the browser saw it; a TLS-terminating proxy says so in X-Forwarded-Proto. */
function isHttps(c: Context): boolean {
  const forwarded = c.req.header('x-forwarded-proto')?.split(',')[0]?.trim().toLowerCase();
  return new URL(c.req.url).protocol === 'https:' || forwarded === 'https';
}

const isLoginPath = (path: string) => /^\/admin\/login\/?$/.test(path);

/** Where to go after signing in: a page of ours only, so the login link cannot send anyone elsewhere. */
export function safeNext(next: string | undefined): string {
  if (!next || !/^[\x21-\x7e]+$/.test(next) || next.includes('\\')) return '/admin';
  if (!/^\/admin(?:[/?#]|$)/.test(next) || /^\/admin\/login(?:[/?#]|$)/.test(next)) return '/admin';
  return next;
}

function fromThisHost(origin: string, c: Context): boolean {
  let host: string;
  try {
    host = new URL(origin).host;
  } catch {
    return false; // `Origin: null`: a sandboxed or opaque origin is never ours
  }
  // A cross-site form cannot set X-Forwarded-Host, so trusting it here opens nothing.
  return host === c.req.header('host') || host === c.req.header('x-forwarded-host');
}

const isSafeMethod = (method: string) => method === 'GET' || method === 'HEAD';

/**
 * Refuses any state-changing request that a browser says comes from another site. Browsers send
 * Origin (and Sec-Fetch-Site) on every POST, so a forged cross-site form is stopped here even
 * before its CSRF token is looked at.
 */
export const sameOriginOnly = createMiddleware<AdminEnv>(async (c, next) => {
  if (isSafeMethod(c.req.method)) return next();
  const site = c.req.header('sec-fetch-site');
  const origin = c.req.header('origin');
  if (
    (site !== undefined && site !== 'same-origin' && site !== 'none') ||
    (origin !== undefined && !fromThisHost(origin, c))
  ) {
    throw forbidden('Requests from another site are refused');
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
  const deps = c.var.deps;
  const authorization = c.req.header('authorization');
  if (authorization !== undefined) {
    const caller = await identify(deps, bearerToken(authorization));
    if (caller?.role === 'admin') {
      c.set('caller', caller);
      c.set('session', null);
      return next();
    }
    if (caller) throw forbidden('Only the operator may open the operator pages');
  } else {
    const session = readSessionValue(deps.config.ADMIN_TOKEN, getCookie(c, SESSION_COOKIE));
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
  if (!sameText(form.one(CSRF_FIELD) ?? '', session.csrfToken)) {
    throw forbidden('This form has expired or did not come from the operator pages; reload the page and try again');
  }
  await next();
});

export function cookieOptions(c: Context, path: string, maxAgeSeconds: number) {
  return { path, httpOnly: true, sameSite: 'Strict', secure: isHttps(c), maxAge: maxAgeSeconds } as const;
}

/**
 * The sign-in form carries a token bound to a cookie set with it, so only a form this browser
 * loaded from us can sign it in (no login CSRF).
 */
function renderLogin(c: Context<AdminEnv>, status: 200 | 401 | 403, next: string, error?: string) {
  const nonce = randomBytes(18).toString('base64url');
  setCookie(c, LOGIN_COOKIE, nonce, cookieOptions(c, '/admin/login', LOGIN_FORM_TTL_SECONDS));
  const csrf = sign(c.var.deps.config.ADMIN_TOKEN, 'login', nonce);
  return c.html(loginPage({ csrf, next, error }), status);
}

/** `GET/POST /admin/login` and `POST /admin/logout`. */
export function registerSessionRoutes(admin: Hono<AdminEnv>) {
  admin.get('/login', (c) => {
    const next = safeNext(c.req.query('next'));
    if (readSessionValue(c.var.deps.config.ADMIN_TOKEN, getCookie(c, SESSION_COOKIE))) return c.redirect(next, 303);
    return renderLogin(c, 200, next);
  });

  admin.post('/login', async (c) => {
    const adminToken = c.var.deps.config.ADMIN_TOKEN;
    const form = await Form.read(c);
    const next = safeNext(form.one('next'));
    const nonce = getCookie(c, LOGIN_COOKIE);
    if (!nonce || !sameText(form.one(CSRF_FIELD) ?? '', sign(adminToken, 'login', nonce))) {
      return renderLogin(c, 403, next, 'The sign-in form had expired. Please enter the token again.');
    }
    const caller = await identify(c.var.deps, form.one('token')?.trim());
    if (caller?.role !== 'admin') {
      c.var.logger.warn('operator sign-in refused: wrong token');
      return renderLogin(c, 401, next, 'That is not the admin token.');
    }
    deleteCookie(c, LOGIN_COOKIE, { path: '/admin/login' });
    setCookie(c, SESSION_COOKIE, createSessionValue(adminToken), cookieOptions(c, '/admin', SESSION_TTL_MS / 1000));
    c.var.logger.info('operator signed in');
    return c.redirect(next, 303);
  });

  admin.post('/logout', (c) => {
    deleteCookie(c, SESSION_COOKIE, { path: '/admin', secure: isHttps(c) });
    return c.redirect('/admin/login', 303);
  });
}
