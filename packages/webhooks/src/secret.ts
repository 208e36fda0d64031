import { randomBytes } from 'node:crypto';

/**
 * A new signing secret, as Standard Webhooks writes one: `whsec_` and the base64 of 32 random
 * bytes. The HMAC key is the decoded base64 part; the whole string is what a receiver passes to
 * `new Webhook(secret)`.
 */
export const newWebhookSecret = () => `whsec_${randomBytes(32).toString('base64')}`;
