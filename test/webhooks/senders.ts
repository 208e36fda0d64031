import { createLogger } from '@cs/config';
import { createDb } from '@cs/db';
import { WebhookSecrets, WebhookSender, type WebhookSenderSettings } from '@cs/webhooks';
import { inject } from 'vitest';
import { LEDGER_HMAC_KEY } from '../support/system.ts';

/** The WEBHOOK_* settings of the test systems, as environment and as the sender takes them. */
export const WEBHOOK_ENV = {
  WEBHOOK_ALLOW_PRIVATE: '1',
  WEBHOOK_TIMEOUT_MS: '300',
  WEBHOOK_RETRY_DELAYS_MS: '100,200,300',
  WEBHOOK_RETRY_FOR: '3s',
  WEBHOOK_CONCURRENCY: '4',
  WEBHOOK_PER_RECEIVER: '2',
  WEBHOOK_POLL_MS: '50',
};

export const TEST_SENDER_SETTINGS: WebhookSenderSettings = {
  allowPrivate: true,
  production: false,
  timeoutMs: 300,
  delaysMs: [100, 200, 300],
  retryForMs: 3000,
  concurrency: 4,
  perReceiver: 2,
  pollMs: 50,
};

/**
 * Senders in the test process, each with a pool of its own as a worker process has: for the tests
 * of the loop itself (several senders at once), beside or instead of the workers' own.
 */
export function startSenders(count: number, settings: WebhookSenderSettings = TEST_SENDER_SETTINGS) {
  const senders = Array.from({ length: count }, () => {
    const { db, close } = createDb(inject('databaseUrl'), { max: 2 });
    const sender = new WebhookSender({
      db,
      logger: createLogger('webhooks-test', 'warn'),
      settings,
      // The test systems' key, which their API processes seal the secrets with.
      secrets: new WebhookSecrets(LEDGER_HMAC_KEY),
    });
    sender.start();
    return { sender, close };
  });
  return {
    senders: senders.map((s) => s.sender),
    async stop() {
      await Promise.all(senders.map((s) => s.sender.stop()));
      await Promise.all(senders.map((s) => s.close()));
    },
  };
}
