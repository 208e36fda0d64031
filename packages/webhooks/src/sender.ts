import type { Config } from '@cs/config';
import { arrayLiteral, type Database } from '@cs/db';
import type { Logger } from 'pino';
import type { AddressRules, Resolve } from './address.ts';
import { type PostOutcome, postWebhook } from './post.ts';
import { nextAttemptAt, type RetrySchedule } from './schedule.ts';
import type { WebhookSecrets } from './secret.ts';

/** The WEBHOOK_* settings, as the sender uses them. */
export interface WebhookSenderSettings extends AddressRules, RetrySchedule {
  /** A receiver that has not answered within this is retried. */
  timeoutMs: number;
  /** Posts in flight at once in this process. */
  concurrency: number;
  /** Posts in flight at once to one seller's receiver, in this process. */
  perReceiver: number;
  /** How often the sender looks for deliveries due. */
  pollMs: number;
}

/** The sender's settings from the processes' configuration. */
export function webhookSenderSettings(config: Config): WebhookSenderSettings {
  return {
    allowPrivate: config.WEBHOOK_ALLOW_PRIVATE,
    production: config.NODE_ENV === 'production',
    timeoutMs: config.WEBHOOK_TIMEOUT_MS,
    delaysMs: config.WEBHOOK_RETRY_DELAYS_MS,
    retryForMs: config.WEBHOOK_RETRY_FOR,
    concurrency: config.WEBHOOK_CONCURRENCY,
    perReceiver: config.WEBHOOK_PER_RECEIVER,
    pollMs: config.WEBHOOK_POLL_MS,
  };
}

export interface WebhookSenderDeps {
  /** Its own pool, apart from the one the sales' batches use: webhooks never wait for sales, nor sales for webhooks. */
  db: Database;
  logger: Logger;
  settings: WebhookSenderSettings;
  /** Opens the receivers' signing secrets, which the table holds sealed. */
  secrets: WebhookSecrets;
  /** How host names are resolved (tests give their own); the system's resolver otherwise. */
  resolve?: Resolve;
}

/** A delivery this process holds a claim on, with its receiver's current URL and secret. */
interface Claimed {
  id: string;
  sellerId: string;
  body: string;
  attempts: number;
  createdAt: Date;
  /** The lease as PostgreSQL wrote it (text, to the microsecond): this claim's token. */
  claimedUntil: string;
  url: string;
  /** Sealed, as the table holds it: opened just before the post. */
  sealedSecret: string;
}

/**
 * How long a claim lasts past the longest a post may take: a process that dies with a post in
 * flight leaves the delivery to another process after this (the receiver may then see it twice,
 * which at-least-once allows: the webhook-id is the same).
 */
const CLAIM_MARGIN_MS = 30_000;
/** Rows one claim looks at, at most, to fill its free slots. */
const MAX_SCAN = 500;

/**
 * Posts the webhook outbox (`webhook_deliveries`), in the worker processes. Deliveries are
 * claimed from PostgreSQL with `FOR UPDATE SKIP LOCKED` and a `claimed_until` lease, so that
 * however many processes run a sender, one delivery is never posted by two at the same time.
 *
 * At most `concurrency` posts are in flight in a process, and at most `perReceiver` to one
 * seller's receiver: a claim leaves out the sellers already at their limit, so a slow or dead
 * receiver holds its own slots and nobody else's, and other receivers' events keep going out.
 * Each attempt is recorded in `webhook_attempts` together with the delivery's new state, in one
 * transaction: delivered on a 2xx, else tried again on the schedule, and `failed` once its retry
 * window is over.
 */
export class WebhookSender {
  private readonly db: Database;
  private readonly logger: Logger;
  private readonly settings: WebhookSenderSettings;
  private readonly resolve: Resolve | undefined;
  private readonly secrets: WebhookSecrets;
  private running = false;
  private timer: NodeJS.Timeout | undefined;
  /** The claim in progress, if any; a wake() during it asks for another round. */
  private claiming: Promise<void> | undefined;
  private claimAgain = false;
  private readonly inFlight = new Set<Promise<void>>();
  private readonly perSeller = new Map<string, number>();

  constructor(deps: WebhookSenderDeps) {
    this.db = deps.db;
    this.logger = deps.logger.child({ component: 'webhooks' });
    this.settings = deps.settings;
    this.resolve = deps.resolve;
    this.secrets = deps.secrets;
  }

  /** Starts polling for deliveries due. */
  start(): void {
    if (this.running) return;
    this.running = true;
    this.timer = setInterval(() => this.wake(), this.settings.pollMs);
    this.wake();
  }

  /** Looks for deliveries due at once (the worker calls it after committing events). */
  wake(): void {
    if (!this.running) return;
    if (this.claiming) {
      this.claimAgain = true;
      return;
    }
    this.claiming = this.fill().finally(() => {
      this.claiming = undefined;
    });
  }

  /**
   * Stops claiming, and lets the posts in flight finish and be recorded (each is bounded by the
   * timeout), waiting `waitMs` at most (a process's shutdown may allow less). Deliveries not yet
   * claimed stay pending for any process to claim; those still in flight when it returns are
   * posted again by another process once their claim expires.
   */
  async stop(waitMs = this.settings.timeoutMs + 5000): Promise<void> {
    this.running = false;
    clearInterval(this.timer);
    await this.claiming;
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<'late'>((resolve) => {
      timer = setTimeout(() => resolve('late'), waitMs);
    });
    const outcome = await Promise.race([Promise.allSettled([...this.inFlight]).then(() => 'done' as const), late]);
    clearTimeout(timer);
    if (outcome === 'late')
      this.logger.warn(
        { inFlight: this.inFlight.size },
        'webhook posts still in flight at shutdown; their claims will expire',
      );
  }

  /** How many posts are in flight in this process now. */
  get inFlightCount(): number {
    return this.inFlight.size;
  }

  /** Claims and launches deliveries until the slots are full or nothing more is due. */
  private async fill(): Promise<void> {
    try {
      do {
        this.claimAgain = false;
        while (this.running && this.inFlight.size < this.settings.concurrency) {
          const progress = await this.claim(this.settings.concurrency - this.inFlight.size);
          if (progress === 0) break;
        }
      } while (this.claimAgain && this.running);
    } catch (err) {
      this.logger.warn(
        { err: (err as Error).message },
        'claiming webhook deliveries failed; trying again at the next poll',
      );
    }
  }

  /**
   * One claim: locks due deliveries no other process holds (SKIP LOCKED), of sellers not at their
   * limit here, takes as many as the free slots allow (at most perReceiver per seller), sets their
   * lease, and launches them. A delivery whose webhook was removed is closed as failed instead.
   * Returns how many deliveries it took or closed: 0 when nothing is due for the free slots.
   */
  private async claim(free: number): Promise<number> {
    const { perReceiver, timeoutMs } = this.settings;
    const busy = [...this.perSeller].filter(([, n]) => n >= perReceiver).map(([id]) => id);
    const scan = Math.min(MAX_SCAN, free * perReceiver);
    const leaseMs = timeoutMs + CLAIM_MARGIN_MS;
    const { taken, removed } = await this.db.$client.begin(async (tx) => {
      const due = await tx<
        Array<{
          id: string;
          seller_id: string;
          payload: unknown;
          attempts: number;
          created_ms: number;
          url: string | null;
          secret: string | null;
          is_active: boolean | null;
        }>
      >`
        with due as (
          select id from webhook_deliveries
          where status = 'pending' and next_attempt_at <= now()
            and (claimed_until is null or claimed_until <= now())
            and seller_id <> all(${arrayLiteral(busy)}::uuid[])
          order by next_attempt_at
          limit ${scan}
          for update skip locked
        )
        select d.id, d.seller_id, d.payload, d.attempts, e.url, e.secret, e.is_active,
          extract(epoch from d.created_at)::float8 * 1000 as created_ms
        from webhook_deliveries d join due on due.id = d.id
        left join webhook_endpoints e on e.seller_id = d.seller_id
        order by d.next_attempt_at`;
      const slots = new Map<string, number>();
      const taken: Array<(typeof due)[number]> = [];
      const removed: string[] = [];
      for (const row of due) {
        if (!row.is_active) {
          removed.push(row.id);
          continue;
        }
        const used = (this.perSeller.get(row.seller_id) ?? 0) + (slots.get(row.seller_id) ?? 0);
        if (taken.length >= free || used >= perReceiver) continue;
        slots.set(row.seller_id, (slots.get(row.seller_id) ?? 0) + 1);
        taken.push(row);
      }
      if (removed.length > 0) {
        await tx`
          update webhook_deliveries set status = 'failed', last_error = 'webhook removed', claimed_until = null
          where id = any(${arrayLiteral(removed)}::text[])`;
      }
      // Times travel as text and epoch numbers: the pool is Drizzle's, which leaves timestamps unparsed.
      const leased =
        taken.length === 0
          ? []
          : await tx<Array<{ id: string; claimed_until: string }>>`
              update webhook_deliveries
              set claimed_until = now() + ${leaseMs} * interval '1 millisecond'
              where id = any(${arrayLiteral(taken.map((r) => r.id))}::text[])
              returning id, claimed_until::text as claimed_until`;
      const until = new Map(leased.map((r) => [r.id, r.claimed_until]));
      return {
        removed,
        taken: taken.map(
          (row): Claimed => ({
            id: row.id,
            sellerId: row.seller_id,
            // The stored body, the same text on every attempt.
            body: JSON.stringify(row.payload),
            attempts: row.attempts,
            createdAt: new Date(row.created_ms),
            claimedUntil: until.get(row.id) ?? '',
            url: row.url ?? '',
            sealedSecret: row.secret ?? '',
          }),
        ),
      };
    });
    if (removed.length > 0) this.logger.info({ deliveries: removed }, 'webhook removed: deliveries closed as failed');
    for (const delivery of taken) this.launch(delivery);
    return taken.length + removed.length;
  }

  private launch(delivery: Claimed): void {
    this.perSeller.set(delivery.sellerId, (this.perSeller.get(delivery.sellerId) ?? 0) + 1);
    const work = this.attempt(delivery).finally(() => {
      this.inFlight.delete(work);
      const left = (this.perSeller.get(delivery.sellerId) ?? 1) - 1;
      if (left > 0) this.perSeller.set(delivery.sellerId, left);
      else this.perSeller.delete(delivery.sellerId);
      // A slot is free: the next delivery due need not wait for the poll.
      this.wake();
    });
    this.inFlight.add(work);
  }

  private async attempt(delivery: Claimed): Promise<void> {
    const attemptedAt = new Date();
    const secret = this.openSecret(delivery);
    // A secret that does not open is not posted unsigned: the attempt fails, and is retried
    // (a rotation gives the seller a new secret that opens).
    const outcome =
      secret === null
        ? {
            statusCode: null,
            error: 'the signing secret does not open (LEDGER_HMAC_KEY changed?): rotate it',
            durationMs: 0,
          }
        : await postWebhook(
            { url: delivery.url, secret },
            { id: delivery.id, body: delivery.body },
            {
              rules: this.settings,
              timeoutMs: this.settings.timeoutMs,
              ...(this.resolve ? { resolve: this.resolve } : {}),
            },
          );
    try {
      await this.record(delivery, attemptedAt, outcome);
    } catch (err) {
      // Its claim expires and it is posted again: at least once.
      this.logger.warn(
        { err: (err as Error).message, delivery: delivery.id },
        'could not record a webhook attempt; it will be retried',
      );
    }
  }

  private openSecret(delivery: Claimed): string | null {
    try {
      return this.secrets.open(delivery.sealedSecret, delivery.sellerId);
    } catch (err) {
      this.logger.error(
        { err: (err as Error).message, seller: delivery.sellerId, delivery: delivery.id },
        'a webhook signing secret does not open',
      );
      return null;
    }
  }

  /** The attempt and the delivery's new state, in one transaction. */
  private async record(delivery: Claimed, attemptedAt: Date, outcome: PostOutcome): Promise<void> {
    const ok = outcome.statusCode !== null && outcome.statusCode >= 200 && outcome.statusCode < 300;
    const attempts = delivery.attempts + 1;
    const next = ok ? null : nextAttemptAt(this.settings, { attempts, createdAt: delivery.createdAt, now: new Date() });
    const status = ok ? 'delivered' : next === null ? 'failed' : 'pending';
    const error = ok ? null : (outcome.error ?? `HTTP ${outcome.statusCode}`);
    await this.db.$client.begin(async (tx) => {
      await tx`
        insert into webhook_attempts (delivery_id, attempted_at, status_code, error, duration_ms)
        values (${delivery.id}, ${attemptedAt.toISOString()}::timestamptz, ${outcome.statusCode}, ${outcome.error},
                ${outcome.durationMs})`;
      // A success counts whoever holds the claim now; a failure reschedules only under this
      // process's own claim (another process that took it over after the lease decides then).
      await tx`
        update webhook_deliveries set
          status = ${status},
          attempts = attempts + 1,
          last_status_code = ${outcome.statusCode},
          last_error = ${error},
          next_attempt_at = ${(next ?? attemptedAt).toISOString()}::timestamptz,
          delivered_at = case when ${ok} then now() end,
          claimed_until = null
        where id = ${delivery.id} and status = 'pending'
          and (${ok} or claimed_until = ${delivery.claimedUntil}::timestamptz)`;
    });
    const log = { delivery: delivery.id, seller: delivery.sellerId, attempts, status: outcome.statusCode };
    if (status === 'failed') this.logger.warn({ ...log, error }, 'webhook delivery failed: retry window over');
    else this.logger.debug({ ...log, error, status }, 'webhook attempt');
  }
}
