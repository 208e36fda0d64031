import { setTimeout as sleep } from 'node:timers/promises';
import type { Database } from '@cs/db';
import { type Provider, ProviderBreaker, type SendAnswer, type StatusAnswer } from '@cs/delivery';
import {
  claimDueDeliveries,
  type Delivered,
  type DeliveryTask,
  markRefundDue,
  type NewDelivery,
  recordDeliveries,
  recordLateAnswer,
  releaseDeliveries,
  scheduleNextAsk,
  settleDelivered,
  stopWatching,
  sweepLapsedHolds,
} from '@cs/ledger';
import { Batcher, type DeliveryOutcome, type JobEvent } from '@cs/queue';
import type { Logger } from 'pino';

/** How long a settlement waits for others to join its statement. */
const SETTLE_GATHER_MS = 10;
/**
 * Holds one statement sweeps (each names a batch's sales), and statements one poll may run while
 * each finds as many: under load a batch of a few sales commits every few milliseconds, and the
 * sweep must keep up with the holds that run out.
 */
const SWEEP_LIMIT = 200;
const SWEEP_ROUNDS = 10;

export interface DeliverySettings {
  concurrency: number;
  retryFirstMs: number;
  retryMaxMs: number;
  giveUpAfterMs: number;
  /** How long after an operator's resolution the provider is still asked. */
  watchAfterResolutionMs: number;
  leaseMs: number;
  pollMs: number;
  /** Unclear answers in a row after which calls to the provider pause (see ProviderBreaker). */
  breakerFailures: number;
  /** How long they pause before one call probes the provider again. */
  breakerCooldownMs: number;
}

export interface DeliveryDeps {
  db: Database;
  provider: Provider;
  logger: Logger;
  settings: DeliverySettings;
  /** Tells API processes of the jobs' changes (waiting clients, event streams, metrics). */
  publish: (events: JobEvent[]) => void;
  /** Puts a sale's job back on its seller's partition queue, to write its refund. */
  queueRefund: (jobId: string, partition: number) => Promise<void>;
  /** Called after a commit that may have written webhook events. */
  onEvents?: () => void;
}

/**
 * Delivers debited sales' top-ups, outside the partitions' serial path: a slow provider holds up
 * only this stage's own slots (DELIVERY_CONCURRENCY per process), never a seller's next sale.
 *
 * PostgreSQL is the stage's only memory. The process that debited a sale holds its delivery and
 * sends it at once (`take`); the batch's hold (`delivery_holds`) is what survives it. A sale
 * delivered at the first answer is settled without a `deliveries` row; any other answer writes its
 * row before the next question is asked. Deliveries with a row are found by polling for those
 * due, whose lease ran out (their holder died) or whose next question is due; a hold that ran out
 * is swept into rows by the same poll. A process that dies loses at most the calls in flight, and
 * whoever takes a delivery over asks the provider about the reference before it sends again (the
 * send may have gone out): the reference is the job id, and the provider never delivers one
 * reference twice.
 *
 * Only a definite refusal refunds. A timeout or an unclear answer is asked about again, with
 * backoff, until the provider knows; past DELIVERY_GIVE_UP_AFTER the delivery is `unresolved`
 * for an operator, and still asked.
 *
 * A provider that stops answering altogether (an outage) opens the stage's breaker: calls pause,
 * the deliveries this process holds are let go, due (recorded, if they were not), and only one delivery at a
 * time is taken up as a probe until the provider answers again. Thousands of deliveries waiting
 * out an outage then cost neither the provider nor PostgreSQL (nor the partitions sharing it) a
 * call or a write each per retry.
 */
/** A delivery held here, not started yet. Fresh: just debited here, never sent. Probe: the one call a pause lets through. */
interface Held {
  task: DeliveryTask;
  fresh: boolean;
  probe: boolean;
}

export class DeliveryStage {
  private inFlight = 0;
  private readonly waiting: Held[] = [];
  private timer: NodeJS.Timeout | undefined;
  private polling = false;
  private stopped = false;
  private idle: (() => void) | undefined;
  private readonly settler: Batcher<Delivered, boolean>;
  readonly breaker: ProviderBreaker;

  constructor(private readonly deps: DeliveryDeps) {
    this.breaker = new ProviderBreaker({
      failures: deps.settings.breakerFailures,
      cooldownMs: deps.settings.breakerCooldownMs,
      onChange: (change) => {
        if (change.open)
          deps.logger.warn(
            { unclearInARow: change.unclearInARow, lastError: change.detail, provider: deps.provider.name },
            'the provider is not answering: calls paused, one probe at a time',
          );
        else deps.logger.info({ provider: deps.provider.name }, 'the provider answers again: calls resumed');
      },
    });
    // Deliveries that end together are written together: under load one statement settles many.
    // Each waits up to SETTLE_GATHER_MS for others to join, so settlements come as a few dozen a
    // statement rather than a few (each statement is planned and committed on its own).
    this.settler = new Batcher(
      async (items) => {
        await sleep(SETTLE_GATHER_MS);
        const settled = await settleDelivered(deps.db, items);
        const now = Date.now();
        deps.publish(
          settled.map((s) => ({
            job_id: s.jobId,
            status: 'succeeded',
            type: 'charge_sale',
            delivery: { provider: s.provider, outcome: 'delivered', latency_ms: now - s.debitedAt.getTime() },
          })),
        );
        if (settled.length > 0) deps.onEvents?.();
        const done = new Set(settled.map((s) => s.jobId));
        return items.map((i) => done.has(i.jobId));
      },
      { maxBatch: 500, maxInFlight: 1 },
    );
  }

  start(): void {
    this.timer = setInterval(() => void this.poll(), this.deps.settings.pollMs);
  }

  /** The deliveries this process just debited and holds: sent at once, without a poll. */
  take(deliveries: readonly NewDelivery[], provider: string): void {
    const debitedAt = new Date();
    const tasks = deliveries.map((d) => ({
      jobId: d.jobId,
      phoneNumber: d.phoneNumber,
      amount: d.amount,
      provider,
      resolution: null,
      resolvedAt: null,
      attempts: 0,
      debitedAt,
      recorded: false,
    }));
    if (!this.breaker.closed) {
      // Paused: due at once for whoever finds the provider answering first.
      void this.letGo(tasks);
      return;
    }
    for (const task of tasks) this.enqueue(task, true, false);
  }

  /** Stops polling; waits for the questions in flight (each bounded by the provider timeout). */
  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    // Held but not started: let go, so another process takes them without waiting for the lease.
    await this.letGo(this.waiting.splice(0).map((w) => w.task));
    if (this.inFlight > 0) await new Promise<void>((resolve) => (this.idle = resolve));
  }

  private async poll(): Promise<void> {
    if (this.polling || this.stopped) return;
    this.polling = true;
    try {
      // Whatever this process has room for: the holds that ran out become rows all the same.
      await this.sweep();
      await this.claim();
    } finally {
      this.polling = false;
    }
  }

  /** Takes up the deliveries due that this process has room for. */
  private async claim(): Promise<void> {
    const room = this.deps.settings.concurrency - this.inFlight - this.waiting.length;
    if (this.stopped || room <= 0) return;
    // Paused: one delivery at a time, once each cooldown, is the probe.
    const probe = !this.breaker.closed;
    if (probe && !this.breaker.tryProbe()) return;
    try {
      const due = await claimDueDeliveries(this.deps.db, probe ? 1 : room, this.deps.settings.leaseMs);
      if (probe && due.length === 0) this.breaker.cancelProbe();
      for (const task of due) this.enqueue(task, false, probe);
    } catch (err) {
      if (probe) this.breaker.cancelProbe();
      this.deps.logger.warn({ err: (err as Error).message }, 'could not look for deliveries due');
    }
  }

  /** Holds that ran out become rows, due: claimed by the poll, here or in another process. */
  private async sweep(): Promise<void> {
    try {
      for (let round = 0; round < SWEEP_ROUNDS; round++) {
        const { holds } = await sweepLapsedHolds(this.deps.db, SWEEP_LIMIT);
        if (holds < SWEEP_LIMIT) return;
      }
    } catch (err) {
      this.deps.logger.warn({ err: (err as Error).message }, 'could not sweep the holds that ran out');
    }
  }

  private enqueue(task: DeliveryTask, fresh: boolean, probe: boolean): void {
    if (this.stopped) return;
    this.waiting.push({ task, fresh, probe });
    this.pump();
  }

  private pump(): void {
    const paused: DeliveryTask[] = [];
    while (this.inFlight < this.deps.settings.concurrency && this.waiting.length > 0) {
      const next = this.waiting.shift() as Held;
      if (!this.breaker.closed && !next.probe) {
        paused.push(next.task);
        continue;
      }
      this.inFlight++;
      void this.work(next.task, next.fresh)
        .catch((err: unknown) => this.failed(next.task, err))
        .finally(() => {
          this.inFlight--;
          if (this.inFlight === 0 && this.waiting.length === 0) this.idle?.();
          this.pump();
        });
    }
    void this.letGo(paused);
  }

  /**
   * Deliveries held here and not started, let go at once (paused, or shutting down): due for
   * anyone. Those without a row get one; the others' leases end.
   */
  private async letGo(tasks: DeliveryTask[]): Promise<void> {
    if (tasks.length === 0) return;
    const recorded = tasks.filter((t) => t.recorded).map((t) => t.jobId);
    await Promise.all([this.record(tasks, null), releaseDeliveries(this.deps.db, recorded)]).catch((err: Error) => {
      this.deps.logger.warn({ err: err.message }, 'could not let go of deliveries; their leases will run out');
    });
  }

  /**
   * Writes the rows of those of `tasks` that have none (sales debited here, not yet delivered):
   * held here for `heldForMs` while this process goes on asking, or due for anyone (null).
   */
  private async record(tasks: DeliveryTask[], heldForMs: number | null): Promise<void> {
    const fresh = tasks.filter((t) => !t.recorded);
    if (fresh.length === 0) return;
    await recordDeliveries(
      this.deps.db,
      fresh.map((t) => t.jobId),
      fresh[0]?.provider ?? this.deps.provider.name,
      heldForMs,
    );
    for (const task of fresh) task.recorded = true;
  }

  /**
   * One round with the provider for one delivery. Fresh (just debited here): send. Otherwise ask
   * about the reference first, and send only if the provider never got it.
   */
  private async work(task: DeliveryTask, fresh: boolean): Promise<void> {
    const { provider } = this.deps;
    // Every call counts, sends and status questions alike.
    let attempts = task.attempts + 1;
    if (task.resolution !== null) {
      await this.lateAnswer(task, await this.heard(provider.status(task.jobId)), attempts);
      return;
    }
    let answer = await this.heard<SendAnswer | StatusAnswer>(
      fresh ? provider.send(topUpOf(task)) : provider.status(task.jobId),
    );
    if (answer.kind === 'not_found') {
      attempts++;
      answer = await this.heard<SendAnswer | StatusAnswer>(provider.send(topUpOf(task)));
    }
    if (answer.kind === 'delivered') {
      await this.settler.submit({
        jobId: task.jobId,
        provider: task.provider,
        providerReference: answer.providerReference,
        attempts,
      });
      return;
    }
    // Anything but "delivered" is remembered in a row of its own before it is acted on.
    await this.record([task], this.deps.settings.leaseMs);
    switch (answer.kind) {
      case 'declined':
      case 'failed':
        await this.refund(task, answer.reason, attempts);
        return;
      default:
        await this.askLater(task, attempts, answer.kind === 'unclear' ? answer.detail : answer.kind);
    }
  }

  /** Every answer of the provider goes through here, so the breaker hears each one. */
  private async heard<A extends SendAnswer | StatusAnswer>(call: Promise<A>): Promise<A> {
    const answer = await call;
    this.breaker.record(answer.kind === 'unclear' ? answer : { kind: answer.kind });
    return answer;
  }

  /**
   * A step that failed on our side (PostgreSQL unavailable, a conflict): asked about again soon,
   * status first. If even that cannot be written, the lease runs out and it is taken up then.
   */
  private async failed(task: DeliveryTask, err: unknown): Promise<void> {
    this.deps.logger.warn({ err: (err as Error).message, jobId: task.jobId }, 'delivery step failed; asking again');
    await this.record([task], this.deps.settings.leaseMs).catch(() => {});
    await scheduleNextAsk(this.deps.db, task.jobId, {
      attempts: task.attempts,
      nextAttemptAt: new Date(Date.now() + this.deps.settings.retryFirstMs),
      lastError: (err as Error).message,
      giveUp: false,
    }).catch(() => {});
  }

  private async refund(task: DeliveryTask, reason: string, attempts: number): Promise<void> {
    const marked = await markRefundDue(this.deps.db, task.jobId, { reason, attempts });
    if (!marked) return;
    this.report(task, 'refund_due');
    // If this fails, the partition's requeue finds the refund waiting and queues it.
    await this.deps.queueRefund(task.jobId, marked.partition);
  }

  private async askLater(task: DeliveryTask, attempts: number, why: string): Promise<void> {
    const { retryFirstMs, retryMaxMs, giveUpAfterMs } = this.deps.settings;
    // Doubling from the first wait: 1 s, 2 s, 4 s… up to the longest (attempts count every call).
    const delay = Math.min(retryFirstMs * 2 ** Math.min(Math.max(attempts - 1, 0), 30), retryMaxMs);
    const giveUp = Date.now() - task.debitedAt.getTime() >= giveUpAfterMs;
    const gaveUpNow = await scheduleNextAsk(this.deps.db, task.jobId, {
      attempts,
      nextAttemptAt: new Date(Date.now() + delay),
      lastError: why,
      giveUp,
    });
    if (gaveUpNow) {
      this.deps.logger.warn({ jobId: task.jobId, attempts }, 'delivery unresolved: waiting for an operator');
      this.report(task, 'unresolved');
    }
  }

  /**
   * After an operator's resolution the provider is still asked, for DELIVERY_WATCH_AFTER_RESOLUTION;
   * a contradiction is a conflict. A provider that never knows is not asked for ever.
   */
  private async lateAnswer(task: DeliveryTask, answer: StatusAnswer, attempts: number): Promise<void> {
    // "Never received" is as definite as "failed": nothing was delivered (a contradiction of
    // "delivered", a confirmation of "refund").
    if (answer.kind === 'delivered' || answer.kind === 'failed' || answer.kind === 'not_found') {
      const conflict = await recordLateAnswer(this.deps.db, task.jobId, {
        delivered: answer.kind === 'delivered',
        providerReference: answer.kind === 'delivered' ? answer.providerReference : null,
        attempts,
      });
      if (conflict) {
        this.deps.logger.error(
          { jobId: task.jobId, resolution: task.resolution, provider: answer.kind },
          "the provider's answer contradicts the operator's resolution",
        );
        this.report(task, 'conflict');
      }
      return;
    }
    const resolvedFor = Date.now() - (task.resolvedAt?.getTime() ?? Date.now());
    if (resolvedFor >= this.deps.settings.watchAfterResolutionMs) {
      await stopWatching(this.deps.db, task.jobId, attempts);
      this.deps.logger.info(
        { jobId: task.jobId, resolution: task.resolution },
        'no answer from the provider since the resolution: no longer asked',
      );
      return;
    }
    await scheduleNextAsk(this.deps.db, task.jobId, {
      attempts,
      nextAttemptAt: new Date(Date.now() + this.deps.settings.retryMaxMs),
      lastError: answer.kind === 'unclear' ? answer.detail : answer.kind,
      giveUp: false,
    });
  }

  private report(task: DeliveryTask, outcome: DeliveryOutcome): void {
    this.deps.publish([
      {
        job_id: task.jobId,
        status: 'delivering',
        type: 'charge_sale',
        delivery: { provider: task.provider, outcome, latency_ms: Date.now() - task.debitedAt.getTime() },
      },
    ]);
  }
}

function topUpOf(task: DeliveryTask) {
  return { reference: task.jobId, phoneNumber: task.phoneNumber, amount: task.amount };
}
