import type { OpenAPIHono } from '@hono/zod-openapi';
import { type Context, Hono } from 'hono';
import { createMiddleware } from 'hono/factory';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import type { AppDeps, AppEnv } from '../context.ts';
import { handleError, notFound } from '../errors.ts';
import { type AdminEnv, wantsHtml } from './context.ts';
import { registerOperatorPages } from './pages.tsx';
import { QUEUES_PATH, queueDashboard, readOnlyDashboard } from './queue-dashboard.ts';
import { adminGate, csrfGuard, formBodyLimit, registerSessionRoutes, sameOriginOnly } from './session.ts';
import { errorPage } from './views.tsx';

/**
 * Our pages load nothing from anywhere and run no script; bull-board's page needs its own
 * scripts, so it only gets the headers that do not restrict content.
 */
const pageHeaders = createMiddleware(async (c, next) => {
  await next();
  c.header('X-Frame-Options', 'DENY');
  c.header('X-Content-Type-Options', 'nosniff');
  c.header('Referrer-Policy', 'same-origin');
  if (!c.req.path.startsWith(`${QUEUES_PATH}/static/`)) c.header('Cache-Control', 'no-store');
  if (!c.req.path.startsWith(QUEUES_PATH)) {
    c.header(
      'Content-Security-Policy',
      "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    );
  }
});

/** Errors as the API gives them, or as a page for a browser. */
async function renderError(error: Error, c: Context<AdminEnv>) {
  const response = await handleError(error, c as unknown as Context<AppEnv>);
  if (!wantsHtml(c)) return response;
  const body = (await response.json()) as { error?: string };
  const status = response.status as ContentfulStatusCode;
  return c.html(errorPage({ status, message: body.error ?? 'Request refused' }), status);
}

/**
 * `/admin`: the operator pages and `/admin/queues`, the queue dashboard. Both sit behind one
 * gate: the admin bearer token, or the session cookie from `/admin/login`.
 */
export function registerAdminRoutes(app: OpenAPIHono<AppEnv>, deps: AppDeps) {
  const admin = new Hono<AdminEnv>();
  admin.onError(renderError);
  // Middleware first: Hono runs handlers in the order they were registered.
  admin.use('*', pageHeaders, sameOriginOnly, formBodyLimit, adminGate, csrfGuard);
  admin.use('/queues/*', readOnlyDashboard);
  registerSessionRoutes(admin);
  admin.route('/queues', queueDashboard(deps));
  registerOperatorPages(admin);
  admin.all('*', () => {
    throw notFound('Page');
  });
  app.route('/admin', admin);
}
