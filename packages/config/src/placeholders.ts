/**
 * Secrets that are written in the repository (docker-compose.yml, .env.example, the README) and
 * so are known to everyone. A production process refuses such an ADMIN_TOKEN and warns of such a
 * LEDGER_HMAC_KEY; a test reads those files and checks that every token they show is refused.
 */
const PLACEHOLDERS = new Set([
  'replace-with-a-random-token-of-32-or-more-characters',
  'replace-with-a-random-key-of-32-or-more-characters',
  'replace-with-a-random-session-secret-of-32-or-more-characters',
  'change-me-to-a-long-random-token',
]);

/** Words that only a placeholder would contain. */
const PLACEHOLDER_WORDS = /change[-_ ]?me|replace[-_ ]?(me|with)|placeholder|example|your[-_ ]?token/i;

export function isPlaceholderSecret(secret: string): boolean {
  return PLACEHOLDERS.has(secret) || PLACEHOLDER_WORDS.test(secret);
}
