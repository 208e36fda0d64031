import type { OpenAPIHono } from '@hono/zod-openapi';
import { type Context, Hono } from 'hono';
import { createMiddleware } from 'hono/factory';
import { type SecureHeadersVariables, secureHeaders } from 'hono/secure-headers';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import type { AppDeps, AppEnv } from '../context.ts';
import { handleError, notFound } from '../errors.ts';
import { type AdminEnv, wantsHtml } from './context.ts';
import { auditPage } from './pages/audit.tsx';
import { creditRequestsPage, processRequestsForm } from './pages/credit-requests.tsx';
import { deliveriesPage, resolveDeliveryForm } from './pages/deliveries.tsx';
import { ErrorPage } from './pages/error.tsx';
import { loginPage, signIn, signOut, signOutEverywhere } from './pages/login.tsx';
import { overviewPage } from './pages/overview.tsx';
import { phoneNumbersPage } from './pages/phone-numbers.tsx';
import { sellerPage, setActiveForm } from './pages/seller.tsx';
import { sellersPage } from './pages/sellers.tsx';
import { QUEUES_PATH, queueDashboard, readOnlyDashboard } from './queue-dashboard.ts';
import { adminGate, csrfGuard, formBodyLimit, sameSiteOnly } from './session.ts';

const headers = {
  xFrameOptions: 'DENY',
  referrerPolicy: 'same-origin',
  // HSTS is left to whatever terminates TLS: it binds the whole host, which one path of it should not decide.
  strictTransportSecurity: false,
} as const;

/** Our pages load nothing from anywhere and run no script: their only style is inline. */
const pageHeaders = secureHeaders({
  ...headers,
  contentSecurityPolicy: {
    defaultSrc: ["'none'"],
    styleSrc: ["'unsafe-inline'"],
    imgSrc: ["'self'"],
    formAction: ["'self'"],
    frameAncestors: ["'none'"],
    baseUri: ["'none'"],
  },
});

/**
 * bull-board is a script application: its own scripts and styles (under `<base href>`), inline
 * styles, its API, and the Google fonts its page links to. Nothing else, and no inline script.
 */
const dashboardHeaders = secureHeaders({
  ...headers,
  contentSecurityPolicy: {
    defaultSrc: ["'self'"],
    scriptSrc: ["'self'"],
    styleSrc: ["'self'", "'unsafe-inline'", 'https://fonts.googleapis.com'],
    fontSrc: ["'self'", 'https://fonts.gstatic.com'],
    imgSrc: ["'self'", 'data:'],
    objectSrc: ["'none'"],
    formAction: ["'self'"],
    frameAncestors: ["'none'"],
    baseUri: ["'self'"],
  },
});

const isDashboard = (c: Context) => c.req.path === QUEUES_PATH || c.req.path.startsWith(`${QUEUES_PATH}/`);

/** Pages show balances and carry CSRF tokens: no cache keeps them. The dashboard's assets may be kept. */
const securityHeaders = createMiddleware<{ Variables: SecureHeadersVariables }>(async (c, next) => {
  await (isDashboard(c) ? dashboardHeaders : pageHeaders)(c, next);
  if (!c.req.path.startsWith(`${QUEUES_PATH}/static/`)) c.header('Cache-Control', 'no-store');
});

/** Errors as the API gives them, or as a page for a browser. */
async function renderError(error: Error, c: Context<AdminEnv>) {
  const response = await handleError(error, c as unknown as Context<AppEnv>);
  if (!wantsHtml(c)) return response;
  const body = (await response.json()) as { error?: string };
  const status = response.status as ContentfulStatusCode;
  return c.html(ErrorPage({ status, message: body.error ?? 'Request refused' }), status);
}

/**
 * `/admin`: the operator pages and `/admin/queues`, the queue dashboard. Both sit behind one
 * gate: the admin bearer token, or the session cookie from `/admin/login`.
 */
export function registerAdminRoutes(app: OpenAPIHono<AppEnv>, deps: AppDeps) {
  const admin = new Hono<AdminEnv>();
  admin.onError(renderError);
  // Middleware first: Hono runs handlers in the order they were registered.
  admin.use('*', securityHeaders, sameSiteOnly, formBodyLimit, adminGate, csrfGuard);
  admin.use('/queues/*', readOnlyDashboard);

  admin.get('/login', loginPage);
  admin.post('/login', signIn);
  admin.post('/logout', signOut);
  admin.post('/sessions/revoke', signOutEverywhere);
  admin.route('/queues', queueDashboard(deps));
  admin.get('/', overviewPage);
  admin.get('/credit-requests', creditRequestsPage);
  admin.post('/credit-requests/process', processRequestsForm);
  admin.get('/deliveries', deliveriesPage);
  admin.post('/deliveries/:id/resolve', resolveDeliveryForm);
  admin.get('/sellers', sellersPage);
  admin.get('/sellers/:id', sellerPage);
  admin.post('/sellers/:id/active', setActiveForm);
  admin.get('/phone-numbers', phoneNumbersPage);
  admin.get('/audit', auditPage);

  admin.all('*', () => {
    throw notFound('Page');
  });
  app.route('/admin', admin);
}
