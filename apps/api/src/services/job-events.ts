import { isFinalJobStatus } from '@cs/db';
import type { RedisClient } from '@cs/queue';
import { type JobEvent, jobEventsChannel } from '@cs/queue';
import type { Logger } from 'pino';

type Listener = (event: JobEvent) => void;

/**
 * Job status changes, as workers publish them on one Redis channel. One subscription per API
 * process, fanned out here to whoever waits on a job (a `Prefer: wait` request, an event stream).
 */
export class JobEvents {
  private readonly listeners = new Map<string, Set<Listener>>();
  private readonly anyListeners: Listener[] = [];
  private waiters = 0;

  constructor(
    private readonly subscriber: RedisClient,
    private readonly prefix: string,
    private readonly logger: Logger,
  ) {}

  async start(): Promise<void> {
    const channel = jobEventsChannel(this.prefix);
    this.subscriber.on('message', (from: string, message: string) => {
      if (from !== channel) return;
      try {
        for (const event of JSON.parse(message) as JobEvent[]) {
          for (const listener of this.anyListeners) listener(event);
          for (const listener of this.listeners.get(event.job_id) ?? []) listener(event);
        }
      } catch (err) {
        this.logger.warn({ err }, 'malformed job event');
      }
    });
    await this.subscriber.subscribe(channel);
  }

  /** Calls `listener` on every change of every job, for the life of the process. */
  onAny(listener: Listener): void {
    this.anyListeners.push(listener);
  }

  /** Calls `listener` on each change of the job until the returned function is called. */
  subscribe(jobId: string, listener: Listener): () => void {
    let set = this.listeners.get(jobId);
    if (!set) {
      set = new Set();
      this.listeners.set(jobId, set);
    }
    set.add(listener);
    return () => {
      set.delete(listener);
      if (set.size === 0) this.listeners.delete(jobId);
    };
  }

  /** Waits begun with {@link waitForFinal} and not yet over. */
  get waiting(): number {
    return this.waiters;
  }

  /**
   * Resolves true when the job reaches a final status within `ms`, false otherwise or once
   * cancelled (which frees its subscription and timer at once).
   */
  waitForFinal(jobId: string, ms: number): { done: Promise<boolean>; cancel: () => void } {
    let cancel = () => {};
    this.waiters++;
    const done = new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => finish(false), ms);
      const unsubscribe = this.subscribe(jobId, (event) => {
        if (isFinalJobStatus(event.status)) finish(true);
      });
      let finished = false;
      const finish = (final: boolean) => {
        if (finished) return;
        finished = true;
        this.waiters--;
        clearTimeout(timer);
        unsubscribe();
        resolve(final);
      };
      cancel = () => finish(false);
    });
    return { done, cancel };
  }

  async close(): Promise<void> {
    await this.subscriber.quit().catch(() => {});
  }
}
