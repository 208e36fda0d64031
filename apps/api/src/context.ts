import type { Config } from '@cs/config';
import type { Database, OperatorRole } from '@cs/db';
import type { WebhookSecrets } from '@cs/webhooks';
import type { HttpBindings } from '@hono/node-server';
import type { Logger } from 'pino';
import type { AuthFailures } from './services/auth-failures.ts';
import type { EventStreamSlots } from './services/event-stream-slots.ts';
import type { JobEvents } from './services/job-events.ts';
import type { JobQueues } from './services/job-queues.ts';
import type { Metrics } from './services/metrics.ts';
import type { SaleRate } from './services/sale-rate.ts';
import type { SellerKeys } from './services/seller-keys.ts';
import type { JobSubmitter } from './services/submit-job.ts';

/**
 * An operator: a named one (its id and email), or the bootstrap admin of ADMIN_TOKEN (no id;
 * `name` is `bootstrap`). `name` is what a processed credit request records.
 */
export interface OperatorCaller {
  role: OperatorRole;
  operator: { id: string | null; email: string | null; name: string };
}

/** Who is calling, from the credentials: an operator, or one seller. */
export type Caller = OperatorCaller | { role: 'seller'; sellerId: string; isActive: boolean };

/** The services every handler may use, built once per process. */
export interface AppDeps {
  config: Config;
  db: Database;
  queues: JobQueues;
  submitter: JobSubmitter;
  sellerKeys: SellerKeys;
  jobEvents: JobEvents;
  /** The limits on abuse: failed authentications, sales per seller, open event streams. */
  authFailures: AuthFailures;
  saleRate: SaleRate;
  eventStreams: EventStreamSlots;
  logger: Logger;
  metrics: Metrics;
  /** Seals the webhooks' signing secrets for the table, and opens them to show once. */
  webhookSecrets: WebhookSecrets;
  /** Answers whether Redis is reachable, for /readyz. */
  pingRedis: () => Promise<void>;
}

export type AppEnv = {
  /** Node's own request and response, under @hono/node-server. */
  Bindings: HttpBindings;
  Variables: {
    deps: AppDeps;
    logger: Logger;
    requestId: string;
    caller: Caller;
  };
};
