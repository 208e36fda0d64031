import { isRetryableDatabaseError } from '@cs/db';
import type { RefusalOf } from '@cs/ledger';
import type { Context } from 'hono';
import { HTTPException } from 'hono/http-exception';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import type { AppEnv } from './context.ts';

/** Every error code the API answers with, and its one HTTP status. */
const statusOf = {
  validation_error: 400,
  invalid_json: 400,
  malformed_request: 400,
  invalid_webhook_url: 400,
  unauthorized: 401,
  forbidden: 403,
  seller_inactive: 403,
  not_found: 404,
  webhook_not_found: 404,
  duplicate_email: 409,
  already_processed: 409,
  already_resolved: 409,
  delivery_pending: 409,
  too_many_pending: 409,
  not_failed: 409,
  payload_too_large: 413,
  unsupported_media_type: 415,
  headers_too_large: 431,
  idempotency_key_reused: 422,
  rate_limited: 429,
  service_unavailable: 503,
  overloaded: 503,
  internal_error: 500,
} as const satisfies Record<string, ContentfulStatusCode>;

export type ErrorCode = keyof typeof statusOf;

/** The one error type of the API: a code from the closed set above, a message, and details. */
export class ApiError extends Error {
  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly details: Record<string, unknown> = {},
    /** Seconds after which the client may try again, sent as `Retry-After`. */
    readonly retryAfterSeconds?: number,
  ) {
    super(message);
  }

  get status(): ContentfulStatusCode {
    return statusOf[this.code];
  }
}

export const notFound = (what: string) => new ApiError('not_found', `${what} not found`);

/** A refusal the API can give at once, in the same words and code the worker would record. */
export function refused(refusal: RefusalOf<'seller_inactive' | 'already_processed'>): ApiError {
  const { error, code, ...details } = refusal;
  return new ApiError(code, error, details);
}
export const forbidden = (message = 'You may not do this') => new ApiError('forbidden', message);

/** 429 `rate_limited`; `Retry-After` is the wait in whole seconds, rounded up, and at least 1. */
export function rateLimited(message: string, retryAfterMs: number): ApiError {
  return new ApiError('rate_limited', message, {}, Math.max(1, Math.ceil(retryAfterMs / 1000)));
}

/**
 * The code of an error raised by Hono or a library (the body limit, the media type gate) rather
 * than by us, so that a 4xx never reads as an internal error.
 */
const codeOfLibraryStatus: Partial<Record<number, ErrorCode>> = {
  400: 'validation_error',
  401: 'unauthorized',
  403: 'forbidden',
  404: 'not_found',
  413: 'payload_too_large',
  415: 'unsupported_media_type',
  503: 'service_unavailable',
};

function isRedisUnavailable(error: unknown): boolean {
  const message = (error as Error | null)?.message ?? '';
  return (
    /Stream isn't writeable|enableOfflineQueue|Connection is closed|ECONNREFUSED|Reached the max retries/i.test(
      message,
    ) || (error as { name?: string } | null)?.name === 'MaxRetriesPerRequestError'
  );
}

/** The single error handler: our errors as they are, Hono's by their status, the rest logged as 500. */
export function handleError(error: Error, c: Context<AppEnv>) {
  if (error instanceof ApiError) {
    if (error.retryAfterSeconds !== undefined) c.header('Retry-After', String(error.retryAfterSeconds));
    return c.json({ error: error.message, code: error.code, ...error.details }, error.status);
  }
  if (error instanceof HTTPException) {
    const status = error.status as ContentfulStatusCode;
    return c.json(
      {
        error: error.message || 'Request refused',
        code: codeOfLibraryStatus[status] ?? (status < 500 ? 'validation_error' : 'internal_error'),
      },
      status,
    );
  }
  // PostgreSQL or Redis down, or a deadlock that rolled the statement back: nothing was done,
  // and the same request may simply be sent again.
  if (isRetryableDatabaseError(error) || isRedisUnavailable(error)) {
    c.var.logger?.warn({ err: error.message }, 'dependency unavailable');
    return c.json(
      { error: 'A service the API depends on is unavailable; retry later', code: 'service_unavailable' },
      503,
    );
  }
  c.var.logger?.error({ err: error }, 'unhandled error');
  return c.json({ error: 'Internal error', code: 'internal_error' }, 500);
}
