import { OpenAPIHono } from '@hono/zod-openapi';
import { requestId } from 'hono/request-id';
import { registerAdminRoutes } from './admin/index.ts';
import type { AppDeps, AppEnv } from './context.ts';
import { ApiError, handleError } from './errors.ts';
import { authenticate, bearerToken, sameSecret } from './middleware/auth.ts';
import { jsonBody } from './middleware/json-body.ts';
import { registerAuditRoutes } from './routes/audit.ts';
import { registerChargeSaleRoutes } from './routes/charge-sales.ts';
import { registerCreditRequestRoutes } from './routes/credit-requests.ts';
import { registerDeliveryRoutes } from './routes/deliveries.ts';
import { openApiInfo, registerDocsRoutes } from './routes/docs.ts';
import { registerHealthRoutes } from './routes/health.ts';
import { registerJobStreamRoutes } from './routes/job-stream.ts';
import { registerJobRoutes } from './routes/jobs.ts';
import { registerOperatorRoutes } from './routes/operators.ts';
import { registerOverviewRoutes } from './routes/overview.ts';
import { registerPhoneNumberRoutes } from './routes/phone-numbers.ts';
import { registerSellerRoutes } from './routes/sellers.ts';
import { registerTransactionRoutes } from './routes/transactions.ts';
import { registerWebhookRoutes } from './routes/webhooks.ts';

/** Turns a zod failure into the contract's 400, naming each offending field. */
function validationHook(result: { success: boolean; error?: unknown; target?: string }) {
  if (result.success) return;
  const issues =
    (result.error as { issues?: Array<{ path: PropertyKey[]; message: string; code?: string; keys?: string[] }> })
      .issues ?? [];
  // No prototype: a field named `__proto__` must be named, not set the object's prototype.
  const fields: Record<string, string> = Object.create(null);
  for (const issue of issues) {
    if (issue.code === 'unrecognized_keys' && issue.keys) {
      for (const key of issue.keys) fields[key] = 'is not a field of this request';
      continue;
    }
    const name = issue.path.map(String).join('.') || (result.target === 'json' ? 'body' : String(result.target));
    fields[name] ??= issue.message;
  }
  throw new ApiError('validation_error', `Invalid request: ${Object.keys(fields).join(', ')}`, { fields });
}

/** Builds the whole HTTP app around its services; `index.ts` only serves it. */
export function createApp(deps: AppDeps) {
  const app = new OpenAPIHono<AppEnv>({ strict: false, defaultHook: validationHook });
  app.onError(handleError);
  app.notFound((c) => c.json({ error: 'No such route', code: 'not_found' }, 404));

  app.use('*', requestId({ headerName: 'X-Request-Id' }), deps.metrics.middleware, async (c, next) => {
    c.set('deps', deps);
    c.set('logger', deps.logger.child({ requestId: c.var.requestId }));
    await next();
  });
  registerHealthRoutes(app);
  app.get('/metrics', async (c) => {
    const token = deps.config.METRICS_TOKEN;
    if (token && !sameSecret(bearerToken(c.req.header('authorization')) ?? '', token)) {
      throw new ApiError('unauthorized', 'GET /metrics needs the METRICS_TOKEN bearer token');
    }
    return c.text(await deps.metrics.registry.metrics(), 200, { 'Content-Type': deps.metrics.registry.contentType });
  });

  app.use('/api/*', authenticate, jsonBody);
  registerSellerRoutes(app);
  registerCreditRequestRoutes(app);
  registerChargeSaleRoutes(app);
  registerJobRoutes(app);
  registerJobStreamRoutes(app);
  registerTransactionRoutes(app);
  registerPhoneNumberRoutes(app);
  registerOverviewRoutes(app);
  registerOperatorRoutes(app);
  registerAuditRoutes(app);
  registerDeliveryRoutes(app);
  registerWebhookRoutes(app);
  registerAdminRoutes(app, deps);

  app.openAPIRegistry.registerComponent('securitySchemes', 'bearer', { type: 'http', scheme: 'bearer' });
  app.doc31('/openapi.json', openApiInfo);
  registerDocsRoutes(app);
  return app;
}
