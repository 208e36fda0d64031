import { creditRequestStatuses, jobStatuses, jobTypes, transactionTypes } from '@cs/db';
import { MAX_AMOUNT, normalisePhone, parseAmount } from '@cs/ledger';
import { z } from '@hono/zod-openapi';
import { ApiError } from './errors.ts';

/** Validation shared by every route, and documented in the OpenAPI document from the same schemas. */

export const amountSchema = z
  .union([z.number(), z.string()])
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
  .openapi({ type: 'string', pattern: '^[0-9]+$', example: '50000', description: 'Integer rials, 1 to 10^12' });

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
    .openapi({ example: '50' }),
  cursor: z.string().max(200).optional().openapi({ description: 'The next_cursor of the previous page' }),
};

export const errorSchema = z.object({ error: z.string(), code: z.string() }).catchall(z.unknown()).openapi('Error');

export const sellerSchema = z
  .object({
    id: z.string(),
    name: z.string(),
    email: z.string(),
    phone: z.string(),
    credit_balance: z.string(),
    is_active: z.boolean(),
    created_at: z.string(),
  })
  .openapi('Seller');

export const creditRequestSchema = z
  .object({
    id: z.string(),
    seller: z.string(),
    amount: z.string(),
    status: z.enum(creditRequestStatuses),
    requested_at: z.string(),
    processed_at: z.string().nullable(),
    processed_by: z.string().nullable(),
  })
  .openapi('CreditRequest');

export const transactionSchema = z
  .object({
    id: z.string(),
    seller_id: z.string(),
    type: z.enum(transactionTypes),
    amount: z.string(),
    balance_after: z.string(),
    credit_request_id: z.string().nullable(),
    phone_number: z.string().nullable(),
    description: z.string().nullable(),
    created_at: z.string(),
  })
  .openapi('Transaction');

export const phoneNumberSchema = z
  .object({ number: z.string(), total_charged: z.string(), charge_count: z.number(), created_at: z.string() })
  .openapi('PhoneNumber');

export const jobSchema = z
  .object({
    job_id: z.string(),
    type: z.enum(jobTypes),
    seller_id: z.string(),
    status: z.enum(jobStatuses),
    submitted_at: z.string(),
    finished_at: z.string().nullable(),
    result: z.record(z.string(), z.unknown()).nullable(),
    error: z.record(z.string(), z.unknown()).nullable(),
  })
  .openapi('Job');

export const jobAcceptedSchema = z
  .object({
    job_id: z.string(),
    status: z
      .enum(jobStatuses)
      .openapi({ description: '`queued` for a new job; an idempotent replay shows the job as it is now' }),
    status_url: z.string(),
  })
  .openapi('JobAccepted');

export const listOf = <T extends z.ZodType>(item: T) =>
  z.object({ items: z.array(item), next_cursor: z.string().nullable() });

export const jsonBody = <T extends z.ZodType>(schema: T) => ({
  required: true,
  content: { 'application/json': { schema } },
});

export const json = <T extends z.ZodType>(schema: T, description: string) => ({
  content: { 'application/json': { schema } },
  description,
});

/** The error answers every authenticated route may give. */
export const errorResponses = {
  400: json(errorSchema, 'Invalid request; the offending fields are named'),
  401: json(errorSchema, 'No token, or a wrong one'),
  403: json(errorSchema, 'Not yours, or admin only'),
  404: json(errorSchema, 'No such resource'),
  503: json(
    errorSchema,
    'PostgreSQL or Redis unavailable (service_unavailable), or the API saturated (overloaded); Retry-After when known',
  ),
};

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
