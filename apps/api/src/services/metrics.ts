import { webhookDeliveryStatuses } from '@cs/db';
import { reconcile } from '@cs/ledger';
import { createMiddleware } from 'hono/factory';
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from 'prom-client';
import type { AppDeps, AppEnv } from '../context.ts';
import type { EventStreamSlots } from './event-stream-slots.ts';
import type { JobEvents } from './job-events.ts';

/** How often the background reconciliation of every seller runs: it reads the whole ledger. */
const RECONCILE_EVERY_MS = 60_000;
/** Its first run, soon after the process starts. */
const FIRST_RECONCILE_MS = 5_000;
/**
 * Prometheus metrics of the deployment as this API process sees it. Job outcomes and latencies
 * come from the workers' job events, which every API process receives: scrape one API process
 * for them (or take max, not sum, across processes).
 */
export class Metrics {
  readonly registry = new Registry();
  private readonly http = new Histogram({
    name: 'http_request_duration_seconds',
    help: 'HTTP requests by method, route and status',
    labelNames: ['method', 'route', 'status'],
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
    registers: [this.registry],
  });
  private readonly jobs = new Counter({
    name: 'jobs_finished_total',
    help: 'Jobs that reached a final status, by type and outcome',
    labelNames: ['type', 'outcome'],
    registers: [this.registry],
  });
  private readonly latency = new Histogram({
    name: 'job_latency_seconds',
    help: 'Time from a job being queued to its outcome being committed',
    labelNames: ['type'],
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [this.registry],
  });
  private readonly unreconciled = new Gauge({
    name: 'sellers_unreconciled',
    help: 'Sellers whose balance, balance_after chain or hash chain does not verify, at the last reconciliation (alert when above 0)',
    registers: [this.registry],
  });
  private readonly reconciledAt = new Gauge({
    name: 'sellers_reconciled_timestamp_seconds',
    help: 'When the last background reconciliation of every seller finished (alert when it grows old)',
    registers: [this.registry],
  });
  private readonly deliveryOutcomes = new Counter({
    name: 'delivery_outcomes_total',
    help: "Top-ups settled or stuck, by provider and outcome (delivered, refund_due, unresolved, conflict), as the workers' delivery stage reports them",
    labelNames: ['provider', 'outcome'],
    registers: [this.registry],
  });
  private readonly deliveryLatency = new Histogram({
    name: 'delivery_latency_seconds',
    help: 'Time from a sale being debited to its top-up reaching that outcome, by provider and outcome',
    labelNames: ['provider', 'outcome'],
    // From the simulator's 50 ms to DELIVERY_GIVE_UP_AFTER's default of a day.
    buckets: [0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800, 3600, 6 * 3600, 24 * 3600, 48 * 3600],
    registers: [this.registry],
  });
  private reconcileTimer: NodeJS.Timeout | undefined;

  constructor(
    private readonly deps: Pick<AppDeps, 'db' | 'queues' | 'logger'> & { ledgerKey: string },
    jobEvents: JobEvents,
    eventStreams: EventStreamSlots,
  ) {
    collectDefaultMetrics({ register: this.registry });
    new Gauge({
      name: 'job_waiters',
      help: 'Requests of this process waiting for a job to finish (Prefer: wait, the operator pages)',
      registers: [this.registry],
      collect() {
        this.set(jobEvents.waiting);
      },
    });
    new Gauge({
      name: 'event_streams_open',
      help: 'Job event streams open on this process',
      registers: [this.registry],
      collect() {
        this.set(eventStreams.open);
      },
    });
    jobEvents.onAny((event) => {
      if (event.status !== 'succeeded' && event.status !== 'rejected' && event.status !== 'failed') return;
      const type = event.type ?? 'unknown';
      this.jobs.inc({ type, outcome: event.status });
      if (event.latency_ms !== undefined) this.latency.observe({ type }, event.latency_ms / 1000);
    });
    jobEvents.onAny((event) => {
      const delivery = event.delivery;
      if (!delivery) return;
      const labels = { provider: delivery.provider, outcome: delivery.outcome };
      this.deliveryOutcomes.inc(labels);
      this.deliveryLatency.observe(labels, Math.max(0, delivery.latency_ms) / 1000);
    });
    const db = deps.db;
    /** A count read at scrape; on an error the gauge keeps its last value and the scrape goes on. */
    const countOf = async (what: string, query: () => Promise<Array<{ count: number }>>): Promise<number | null> => {
      try {
        const [row] = await query();
        return row?.count ?? 0;
      } catch (err) {
        deps.logger.warn({ err }, `${what} unavailable for the metrics`);
        return null;
      }
    };
    // Counted from PostgreSQL at each scrape: the record, which a restart or a second API process
    // agrees on. The statuses are written in the SQL, not sent as parameters: only then may a
    // prepared statement's plan use the partial index deliveries_attention_idx (unresolved,
    // conflict, refund_due), a short range of it, and never read the delivered ones.
    new Gauge({
      name: 'deliveries_unresolved',
      help: 'Deliveries the provider has not known for DELIVERY_GIVE_UP_AFTER, waiting for an operator (see /admin/deliveries)',
      registers: [this.registry],
      async collect() {
        const count = await countOf(
          'unresolved deliveries',
          () => db.$client`select count(*)::int as count from deliveries where status = 'unresolved'`,
        );
        if (count !== null) this.set(count);
      },
    });
    new Gauge({
      name: 'deliveries_in_conflict',
      help: "Deliveries whose provider's late answer contradicts the operator's resolution (alert when above 0; see /admin/deliveries?status=conflict)",
      registers: [this.registry],
      async collect() {
        const count = await countOf(
          'deliveries in conflict',
          () => db.$client`select count(*)::int as count from deliveries where status = 'conflict'`,
        );
        if (count !== null) this.set(count);
      },
    });
    new Gauge({
      name: 'webhook_deliveries',
      help: 'Webhook deliveries created in the last 48 hours, by status (pending, delivered, failed), counted at scrape',
      labelNames: ['status'],
      registers: [this.registry],
      async collect() {
        // Only recent ones: webhook_deliveries has no index on status, so counting all of it would
        // read the whole table, which grows with every event. Ids are `msg_` and a UUIDv7 in hex,
        // whose first 12 digits are the creation's milliseconds: the window is a range of the
        // primary key. 48 hours is twice the default retry window (WEBHOOK_RETRY_FOR), so a delivery
        // that failed at the end of its window is still counted for a day.
        try {
          const rows = await db.$client<Array<{ status: string; count: number }>>`
            select status, count(*)::int as count from webhook_deliveries
            where id >= 'msg_' || lpad(to_hex((extract(epoch from now() - interval '48 hours') * 1000)::bigint), 12, '0')
            group by status`;
          for (const status of webhookDeliveryStatuses)
            this.set({ status }, rows.find((r) => r.status === status)?.count ?? 0);
        } catch (err) {
          deps.logger.warn({ err }, 'webhook delivery counts unavailable for the metrics');
        }
      },
    });
    const queues = deps.queues;
    new Gauge({
      name: 'queue_messages',
      help: 'Messages in each partition queue, by state (a message carries the jobs of a partition accepted together)',
      labelNames: ['partition', 'state'],
      registers: [this.registry],
      async collect() {
        await Promise.all(
          Array.from({ length: queues.partitions }, async (_, partition) => {
            const counts = await queues.queue(partition).getJobCounts('wait', 'active', 'delayed');
            for (const [state, count] of Object.entries(counts))
              this.set({ partition: String(partition), state }, count);
          }),
        ).catch((err: unknown) => deps.logger.warn({ err }, 'queue depth unavailable'));
      },
    });
    this.scheduleReconcile(FIRST_RECONCILE_MS);
  }

  /**
   * The whole-ledger reconciliation runs in the background, one at a time, the next one a minute
   * after the last ended; a scrape only reads its last result. A scrape never starts one: scrapes
   * (or anyone reaching /metrics) cannot make the API read the whole ledger again and again.
   */
  private scheduleReconcile(delayMs: number): void {
    this.reconcileTimer = setTimeout(async () => {
      try {
        const checks = await reconcile(this.deps.db, { ledgerKey: this.deps.ledgerKey });
        this.unreconciled.set(checks.filter((c) => !c.isReconciled).length);
        this.reconciledAt.set(Date.now() / 1000);
      } catch (err) {
        this.deps.logger.warn({ err }, 'reconciliation for metrics failed');
      }
      this.scheduleReconcile(RECONCILE_EVERY_MS);
    }, delayMs);
    this.reconcileTimer.unref();
  }

  stop(): void {
    clearTimeout(this.reconcileTimer);
  }

  /** Times every request, labelled by its route pattern (not its path, which would explode labels). */
  readonly middleware = createMiddleware<AppEnv>(async (c, next) => {
    const end = this.http.startTimer();
    try {
      await next();
    } finally {
      end({ method: c.req.method, route: c.req.routePath, status: String(c.res.status) });
    }
  });
}
