import type { JobEvent } from './contract.ts';
import { jobEventsChannel } from './partitions.ts';
import type { RedisClient } from './redis.ts';

/**
 * Tells every API process of job changes (waiting clients, event streams, metrics). Best effort:
 * the record is PostgreSQL, and a listener that misses an event reads the job from it. Never
 * rejects; nothing is sent for no event.
 */
export async function publishJobEvents(
  redis: RedisClient,
  prefix: string,
  events: readonly JobEvent[],
  logger: { warn(details: object, message: string): void },
): Promise<void> {
  if (events.length === 0) return;
  try {
    await redis.publish(jobEventsChannel(prefix), JSON.stringify(events));
  } catch (err) {
    logger.warn({ err: (err as Error).message }, 'could not publish job events');
  }
}
