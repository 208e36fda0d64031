import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';

/**
 * A new signing secret, as Standard Webhooks writes one: `whsec_` and the base64 of 32 random
 * bytes. The HMAC key is the decoded base64 part; the whole string is what a receiver passes to
 * `new Webhook(secret)`.
 */
export const newWebhookSecret = () => `whsec_${randomBytes(32).toString('base64')}`;

const SEALED = 'sealed.v1.';
const IV_BYTES = 12;
const TAG_BYTES = 16;

/**
 * Signing secrets at rest. A secret must be read back to sign, so it cannot be kept as a hash the
 * way API keys are; it is stored sealed (AES-256-GCM) under a key derived from LEDGER_HMAC_KEY,
 * which the processes hold and the database does not. So a dump, a backup or a read-only leak of
 * the database yields no secret. Each sealed secret is bound to its seller (the seller id is the
 * cipher's associated data). A sealed value copied into another seller's row does not open, so
 * nobody with write access to the table can make the system sign one seller's events with
 * another seller's secret.
 */
export class WebhookSecrets {
  readonly #key: Buffer;

  /** `rootKey`: LEDGER_HMAC_KEY. The sealing key is derived from it, apart from the chain's own use of it. */
  constructor(rootKey: string) {
    this.#key = Buffer.from(hkdfSync('sha256', rootKey, 'charge-sales', 'webhook signing secrets v1', 32));
  }

  seal(secret: string, sellerId: string): string {
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', this.#key, iv);
    cipher.setAAD(Buffer.from(sellerId));
    const sealed = Buffer.concat([cipher.update(secret, 'utf8'), cipher.final()]);
    return SEALED + Buffer.concat([iv, cipher.getAuthTag(), sealed]).toString('base64url');
  }

  /** The secret sealed in `stored` for `sellerId`. Throws when it does not open (another key, another seller, a changed value). */
  open(stored: string, sellerId: string): string {
    if (!stored.startsWith(SEALED)) throw new Error('not a sealed webhook secret');
    const raw = Buffer.from(stored.slice(SEALED.length), 'base64url');
    if (raw.length <= IV_BYTES + TAG_BYTES) throw new Error('a sealed webhook secret too short to open');
    const decipher = createDecipheriv('aes-256-gcm', this.#key, raw.subarray(0, IV_BYTES));
    decipher.setAAD(Buffer.from(sellerId));
    decipher.setAuthTag(raw.subarray(IV_BYTES, IV_BYTES + TAG_BYTES));
    return Buffer.concat([decipher.update(raw.subarray(IV_BYTES + TAG_BYTES)), decipher.final()]).toString('utf8');
  }
}
