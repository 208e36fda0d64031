import { randomUUID } from 'node:crypto';
import { newWebhookSecret, WebhookSecrets } from '@cs/webhooks';
import { describe, expect, it } from 'vitest';

/** The webhooks' signing secrets at rest: sealed for one seller under one key, and nothing else opens them. */
describe('webhook secrets at rest', () => {
  const key = 'a-ledger-key-of-at-least-32-characters-0000';
  const secrets = new WebhookSecrets(key);

  it('opens what it sealed for the same seller, and never shows the secret in the sealed text', () => {
    const seller = randomUUID();
    const secret = newWebhookSecret();
    const sealed = secrets.seal(secret, seller);
    expect(sealed).toMatch(/^sealed\.v1\.[A-Za-z0-9_-]+$/);
    expect(sealed).not.toContain(secret.slice(6));
    expect(secrets.open(sealed, seller)).toBe(secret);
    // A new nonce each time: sealing one secret twice gives two texts.
    expect(secrets.seal(secret, seller)).not.toBe(sealed);
  });

  it("does not open another seller's secret, under another key, changed, or unsealed", () => {
    const seller = randomUUID();
    const sealed = secrets.seal(newWebhookSecret(), seller);
    expect(() => secrets.open(sealed, randomUUID())).toThrow();
    expect(() => new WebhookSecrets(`${key}-rotated`).open(sealed, seller)).toThrow();
    const body = sealed.slice('sealed.v1.'.length);
    const flipped = `sealed.v1.${body.slice(0, -2)}${body.at(-2) === 'A' ? 'B' : 'A'}${body.at(-1)}`;
    expect(() => secrets.open(flipped, seller)).toThrow();
    expect(() => secrets.open('sealed.v1.AAAA', seller)).toThrow();
    expect(() => secrets.open(newWebhookSecret(), seller)).toThrow();
  });
});
