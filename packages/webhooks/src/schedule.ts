/** When a delivery is tried again, and when it is given up: pure, so the tests can walk it. */
export interface RetrySchedule {
  /** Waits between attempts in milliseconds: the first after the first failure; the last one repeats. */
  delaysMs: readonly number[];
  /** A delivery is retried for this long after it was created, then it is `failed`. */
  retryForMs: number;
}

/**
 * After a failed attempt: the time of the next one, or null when it would fall outside the
 * delivery's window (created_at + retryFor), and the delivery is failed. `attempts` counts the
 * attempt just made.
 */
export function nextAttemptAt(
  schedule: RetrySchedule,
  { attempts, createdAt, now }: { attempts: number; createdAt: Date; now: Date },
): Date | null {
  const { delaysMs } = schedule;
  const delay = delaysMs[Math.min(Math.max(attempts, 1), delaysMs.length) - 1] ?? 0;
  const next = new Date(now.getTime() + delay);
  return next.getTime() > createdAt.getTime() + schedule.retryForMs ? null : next;
}
