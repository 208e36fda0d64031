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
