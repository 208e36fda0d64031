import { z } from 'zod';

/**
 * The JSON top-up protocol of `PROVIDER=http`, shared by the adapter (which reads answers) and the
 * simulator's server (which reads requests), so the two cannot drift apart:
 * - `POST /v1/topups` `{reference, phone_number, amount}` → 200 `{reference, status: delivered |
 *   pending | declined, provider_reference, reason}`
 * - `GET /v1/topups/{reference}` → 200 `{reference, status: delivered | pending | failed,
 *   provider_reference, reason}`, or 404 `{status: "not_found"}`
 * and `Authorization: Bearer <key>` on every call. Amounts are strings of digits (rials), never
 * JSON numbers, which would lose digits past 2^53.
 */
export const topUpRequest = z.object({
  reference: z.string().min(1).max(200),
  phone_number: z.string().min(1).max(32),
  amount: z.string().regex(/^[1-9][0-9]{0,30}$/),
});
export type TopUpRequest = z.infer<typeof topUpRequest>;

// A provider that leaves out a null field still answers clearly, so missing and null are alike.
const providerReference = z.string().min(1).nullish();
const reason = z.string().nullish();

export const sendResponse = z.object({
  reference: z.string(),
  status: z.enum(['delivered', 'pending', 'declined']),
  provider_reference: providerReference,
  reason,
});
export type SendResponse = z.infer<typeof sendResponse>;

export const statusResponse = z.object({
  reference: z.string(),
  status: z.enum(['delivered', 'pending', 'failed']),
  provider_reference: providerReference,
  reason,
});
export type StatusResponse = z.infer<typeof statusResponse>;

export const notFoundResponse = z.object({ status: z.literal('not_found') });

export const topUpsPath = '/v1/topups';
