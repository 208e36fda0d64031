import { setTimeout as sleep } from 'node:timers/promises';
import { createDb } from '@cs/db';

/**
 * Whether this process reaches PostgreSQL, found out on a connection of its own: `select 1` every
 * `everyMs`, each given `timeoutMs` to answer. A probe that does not answer in time counts as a
 * failure and its connection is dropped: a network cut leaves a socket that would hold every later
 * probe up until TCP gives up on it, which can take many minutes. Out of reach means probes that
 * failed, one after another, not merely time without an answer: a process that was paused (SIGSTOP,
 * swapped out) has not heard from PostgreSQL for as long as it slept, and must not read that as a cut.
 */
export class DatabaseProbe {
  private client = this.open();
  private lastAnsweredAt = Date.now();
  private failures = 0;
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;

  constructor(
    private readonly url: string,
    private readonly options: { everyMs: number; timeoutMs: number },
  ) {}

  start(): void {
    const run = async () => {
      const client = this.client;
      const answered = await Promise.race([
        client`select 1`.then(
          () => true,
          () => false,
        ),
        sleep(this.options.timeoutMs).then(() => false),
      ]);
      if (answered) {
        this.lastAnsweredAt = Date.now();
        this.failures = 0;
      } else {
        this.failures++;
        this.client = this.open();
        void client.end({ timeout: 0 }).catch(() => {});
      }
      if (!this.stopped) this.timer = setTimeout(run, this.options.everyMs);
    };
    void run();
  }

  /** When PostgreSQL last answered a probe (Date.now clock): at most about `everyMs` ago while it does. */
  get answeredAt(): number {
    return this.lastAnsweredAt;
  }

  /** True after two probes in a row went unanswered. */
  get outOfReach(): boolean {
    return this.failures >= 2;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearTimeout(this.timer);
    await this.client.end({ timeout: 1 }).catch(() => {});
  }

  private open() {
    return createDb(this.url, { max: 1, prepare: false }).client;
  }
}
