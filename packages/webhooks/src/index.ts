/**
 * Webhooks: where a seller's events may be posted (`address.ts`), the secrets they are signed
 * with (`secret.ts`), when a failed one is tried again (`schedule.ts`), one signed post
 * (`post.ts`), and the worker's loop that posts the outbox (`sender.ts`).
 */
export {
  type AddressProblem,
  type AddressRules,
  checkWebhookUrl,
  checkWebhookUrlShape,
  guardedLookup,
  isPublicAddress,
  MAX_WEBHOOK_URL_LENGTH,
  type Resolve,
  resolveAll,
  WebhookAddressError,
} from './address.ts';
export { type PostOutcome, postWebhook, signatureHeaders } from './post.ts';
export { nextAttemptAt, type RetrySchedule } from './schedule.ts';
export { newWebhookSecret, WebhookSecrets } from './secret.ts';
export { WebhookSender, type WebhookSenderDeps, type WebhookSenderSettings, webhookSenderSettings } from './sender.ts';
