import {
  creditRequestStatuses,
  deliveryResolutions,
  deliveryStatuses,
  jobStatuses,
  jobTypes,
  transactionTypes,
} from '@cs/db';
import { MAX_AMOUNT, normalisePhone, parseAmount } from '@cs/ledger';
import { z } from '@hono/zod-openapi';
import { ApiError } from './errors.ts';

/** Validation shared by every route, and documented in the OpenAPI document from the same schemas. */

export const amountSchema = z
  // The members' metadata documents what a client may send; validation is the transform's alone,
  // so every refusal names the field with the one message below.
  .union([
    z.number().openapi({ type: 'integer', minimum: 1, maximum: Number(MAX_AMOUNT), example: 50000 }),
    z.string().openapi({ pattern: '^[1-9][0-9]*$', maxLength: String(MAX_AMOUNT).length, example: '50000' }),
  ])
  .transform((value, ctx) => {
    const amount = parseAmount(value);
    if (amount === null) {
      ctx.addIssue({
        code: 'custom',
        message: `must be a whole number of rials from 1 to ${MAX_AMOUNT}, as a JSON integer or a string of digits`,
      });
      return z.NEVER;
    }
    return amount;
  })
  .openapi('Amount', {
    description:
      'Integer rials from 1 to 10^12, as a JSON integer (`50000`) or a string of digits (`"50000"`). ' +
      'A fraction, an exponent, a negative number, zero or more than 10^12 is refused (400).',
  });

/** An amount in an answer: always a string of digits, never a JSON number. */
export const moneySchema = z.string().openapi({ pattern: '^[0-9]+$', example: '50000', description: 'Integer rials' });
/** A ledger amount: debits are negative. */
export const signedMoneySchema = z
  .string()
  .openapi({ pattern: '^-?[0-9]+$', example: '-50000', description: 'Integer rials; negative for a debit' });
export const phoneSchema = z
  .string()
  .transform((value, ctx) => {
    const phone = normalisePhone(value);
    if (phone === null) {
      ctx.addIssue({
        code: 'custom',
        message: 'must be an Iranian mobile number: 09 and 9 more digits (or +989…, 989…)',
      });
      return z.NEVER;
    }
    return phone;
  })
  .openapi({ type: 'string', example: '09121234567' });

const uuidPattern = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
/** True for a well-formed id; a malformed one matches nothing, so routes answer 404 for it. */
export const isUuid = (value: string) => uuidPattern.test(value);

/** An id in a query: lower-cased, as ids are stored, so that a caller's own id in capitals is still theirs. */
export const idSchema = z
  .string()
  .regex(uuidPattern, 'must be an id')
  .transform((id) => id.toLowerCase())
  .openapi({ format: 'uuid' });
export const pathId = z.object({ id: z.string().openapi({ param: { name: 'id', in: 'path' }, format: 'uuid' }) });

export const paginationQuery = {
  limit: z
    .string()
    .regex(/^[0-9]{1,4}$/, 'must be a whole number from 1 to 500')
    .transform(Number)
    .refine((n) => n >= 1 && n <= 500, 'must be a whole number from 1 to 500')
    .optional()
    // A query parameter arrives as text and is validated as such; a client sends it as an integer.
    .openapi({
      type: 'integer',
      pattern: undefined,
      minimum: 1,
      maximum: 500,
      default: 50,
      example: 50,
      description: 'Items per page, 1 to 500',
    }),
  cursor: z.string().max(200).optional().openapi({ description: 'The next_cursor of the previous page' }),
};

export const uuid = (description?: string) =>
  z.string().openapi({ format: 'uuid', ...(description ? { description } : {}) });
export const timestamp = z.string().openapi({ format: 'date-time' });
const nullableTimestamp = z.string().nullable().openapi({ format: 'date-time' });

export const errorSchema = z
  .object({
    error: z.string().openapi({ description: 'A message for a person' }),
    code: z.string().openapi({
      description:
        'What went wrong, for a program: validation_error, invalid_json, malformed_request, invalid_webhook_url, ' +
        'unauthorized, forbidden, seller_inactive, not_found, webhook_not_found, duplicate_email, already_processed, ' +
        'too_many_pending, not_failed, payload_too_large, ' +
        'unsupported_media_type, idempotency_key_reused, rate_limited, service_unavailable, overloaded, internal_error',
      example: 'validation_error',
    }),
    fields: z
      .record(z.string(), z.string())
      .optional()
      .openapi({ description: 'With validation_error: each offending field and what is wrong with it' }),
  })
  .catchall(z.unknown())
  .openapi('Error', { description: 'Every error answer; some codes carry further details' });

export const sellerSchema = z
  .object({
    id: uuid(),
    name: z.string(),
    email: z.string().openapi({ format: 'email' }),
    phone: z.string().openapi({ example: '09121234567' }),
    credit_balance: moneySchema,
    is_active: z.boolean(),
    created_at: timestamp,
  })
  .openapi('Seller');

export const creditRequestSchema = z
  .object({
    id: uuid(),
    seller: uuid('The seller id'),
    amount: moneySchema,
    status: z.enum(creditRequestStatuses),
    requested_at: timestamp,
    processed_at: nullableTimestamp,
    processed_by: z.string().nullable(),
  })
  .openapi('CreditRequest');

export const transactionSchema = z
  .object({
    id: z.string().openapi({ description: 'Grows in the order rows were applied' }),
    seller_id: uuid(),
    type: z.enum(transactionTypes),
    amount: signedMoneySchema,
    balance_after: moneySchema,
    credit_request_id: z.string().nullable().openapi({ format: 'uuid' }),
    phone_number: z.string().nullable(),
    description: z.string().nullable(),
    created_at: timestamp,
  })
  .openapi('Transaction');

export const phoneNumberSchema = z
  .object({
    number: z.string().openapi({ example: '09121234567' }),
    total_charged: moneySchema,
    charge_count: z.number().openapi({ type: 'integer' }),
    created_at: timestamp,
  })
  .openapi('PhoneNumber');

/** A sale's top-up, from the debit to its end (API.md "Delivery of a top-up"). */
export const deliverySchema = z
  .object({
    id: z.string().openapi({ description: "The sale's job id, also the reference the provider is sent" }),
    seller_id: z.string(),
    phone_number: z.string(),
    amount: z.string().openapi({ example: '50000' }),
    provider: z.string(),
    status: z.enum(deliveryStatuses),
    attempts: z.number().int().openapi({ description: 'Calls made to the provider, sends and status queries' }),
    provider_reference: z.string().nullable(),
    provider_reason: z.string().nullable(),
    last_error: z.string().nullable(),
    debited_at: z.string(),
    delivered_at: z.string().nullable(),
    gave_up_at: z.string().nullable(),
    next_attempt_at: z
      .string()
      .nullable()
      .openapi({ description: 'When the provider is next asked; null once it is not' }),
    resolution: z.enum(deliveryResolutions).nullable(),
    resolved_by: z.string().nullable(),
    resolved_at: z.string().nullable(),
    refund_transaction_id: z.string().nullable(),
    conflict_at: z.string().nullable(),
  })
  .openapi('Delivery');

export const jobSchema = z
  .object({
    job_id: uuid(),
    type: z.enum(jobTypes),
    seller_id: uuid(),
    status: z.enum(jobStatuses),
    submitted_at: timestamp,
    finished_at: nullableTimestamp,
    result: z.record(z.string(), z.unknown()).nullable().openapi({
      description:
        'When succeeded; a sale: {transaction_id, seller_id, phone_number, amount, new_balance} (amounts as strings)',
    }),
    error: z
      .record(z.string(), z.unknown())
      .nullable()
      .openapi({ description: 'When rejected or failed: {error, code, ...details}' }),
  })
  .openapi('Job');

export const jobAcceptedSchema = z
  .object({
    job_id: uuid(),
    status: z
      .enum(jobStatuses)
      .openapi({ description: '`queued` for a new job; an idempotent replay shows the job as it is now' }),
    status_url: z.string().openapi({ example: '/api/jobs/0190f5a2-7c3e-7b1a-9d2e-5f4a3b2c1d0e' }),
  })
  .openapi('JobAccepted');

export const listOf = <T extends z.ZodType>(item: T) =>
  z.object({
    items: z.array(item),
    next_cursor: z.string().nullable().openapi({ description: 'Pass as ?cursor= for the next page; null on the last' }),
  });

/** Named once: two routes answer with it. */
export const transactionListSchema = listOf(transactionSchema).openapi('TransactionList');

export const jsonBody = <T extends z.ZodType>(schema: T) => ({
  required: true,
  content: { 'application/json': { schema } },
});

export const json = <T extends z.ZodType>(schema: T, description: string) => ({
  content: { 'application/json': { schema } },
  description,
});

const retryAfter = {
  'Retry-After': {
    description: 'Seconds after which the request may be sent again, when known',
    schema: { type: 'integer' as const, minimum: 0 },
  },
};

/** A 429 answer: `rate_limited`, with `Retry-After`. */
export function tooManyRequests(description: string) {
  return {
    ...json(errorSchema, description),
    headers: {
      'Retry-After': {
        description: 'Whole seconds, at least 1, after which the request may be sent again',
        schema: { type: 'integer' as const, minimum: 1 },
        required: true,
      },
    },
  };
}

/** Every error status the API answers with, each in the contract's error shape. */
const errorAnswers = {
  400: json(
    errorSchema,
    'Invalid request (validation_error, invalid_json, malformed_request); `fields` names the offending ones',
  ),
  401: json(errorSchema, 'No token, or a wrong one (unauthorized)'),
  403: json(errorSchema, 'Not yours, or not allowed to this caller (forbidden)'),
  404: json(errorSchema, 'No such resource (not_found); a malformed id matches nothing'),
  409: json(errorSchema, 'Conflict'),
  413: json(errorSchema, 'The body is larger than 64 KiB (payload_too_large)'),
  415: json(errorSchema, 'The body is not JSON (unsupported_media_type)'),
  422: json(errorSchema, 'Idempotency-Key reused with another request (idempotency_key_reused)'),
  429: tooManyRequests(
    'Too many failed authentications from this address (rate_limited): every request from it is refused for a while; nothing was done',
  ),
  500: json(errorSchema, 'Internal error (internal_error); nothing was done'),
  503: {
    ...json(
      errorSchema,
      'PostgreSQL or Redis unavailable (service_unavailable), or the API saturated (overloaded); nothing was done',
    ),
    headers: retryAfter,
  },
};
type ErrorStatus = keyof typeof errorAnswers;

/**
 * The error answers of one operation: those given, plus the ones every `/api` route may give
 * (401: who are you; 429: an address in backoff after failed authentications; 500; 503).
 * Statuses of a body (400, 413, 415) come with `withBody`.
 */
export function errorResponses<S extends ErrorStatus>(...statuses: S[]) {
  const all = [...statuses, 401, 429, 500, 503] as ErrorStatus[];
  return Object.fromEntries(all.sort((a, b) => a - b).map((status) => [status, errorAnswers[status]])) as Pick<
    typeof errorAnswers,
    S | 401 | 429 | 500 | 503
  >;
}

/** The error statuses of any request with a JSON body: invalid, too large, or not JSON. */
export const withBody = [400, 413, 415] as const;

export const bearer = [{ bearer: [] }];

/**
 * Headers of the job routes. They are documented as OpenAPI parameters and read one by one: a
 * header validator would read them all, which makes @hono/node-server build a web `Headers`
 * object per request, a sixth of the API's CPU for a sale.
 */
export const preferHeader = {
  name: 'prefer',
  in: 'header' as const,
  required: false,
  schema: { type: 'string' as const, example: 'wait=5' },
  description: 'Wait up to N ≤ 30 s for the result',
};
export const idempotencyKeyHeader = {
  name: 'idempotency-key',
  in: 'header' as const,
  required: false,
  schema: { type: 'string' as const, minLength: 1, maxLength: 255 },
  description: 'Replays of one key return one job',
};
const idempotencyKeySchema = z.string().min(1).max(255).optional();

/** The Idempotency-Key header, if any; 400 naming it when it is empty or longer than 255. */
export function idempotencyKeyOf(header: string | undefined): string | undefined {
  const parsed = idempotencyKeySchema.safeParse(header);
  if (parsed.success) return parsed.data;
  const message = parsed.error.issues[0]?.message ?? 'is invalid';
  throw new ApiError('validation_error', 'Invalid request: idempotency-key', {
    fields: { 'idempotency-key': message },
  });
}
