/**
 * A seller always lands on the same partition: FNV-1a over its id, modulo the partition count.
 * The hash is part of the on-disk contract (jobs.partition), so it must never change.
 */
export function partitionOf(sellerId: string, partitions: number): number {
  let hash = 0x811c9dc5;
  for (let i = 0; i < sellerId.length; i++) {
    hash ^= sellerId.charCodeAt(i);
    hash = Math.imul(hash, 0x01000193) >>> 0;
  }
  return hash % partitions;
}

/**
 * The BullMQ queue of a partition. The braces are a Redis Cluster hash tag: every key of one
 * queue lands in one slot, as BullMQ's Lua scripts require, while partitions spread over slots.
 */
export function partitionQueueName(partition: number): string {
  return `partition-${partitionHashTag(partition)}`;
}

/**
 * A partition's Redis Cluster hash tag. Every key that concerns one partition carries it, so all
 * of them live on the master that serves its queue: when a master fails over, only its own
 * partitions wait, whatever else a request touches.
 */
export function partitionHashTag(partition: number): string {
  return `{p${String(partition).padStart(3, '0')}}`;
}

/** The key a worker process holds while it alone consumes a partition. */
export function partitionLeaseKey(prefix: string, partition: number): string {
  return `${prefix}:lease:${partitionHashTag(partition)}`;
}

/** The Pub/Sub channel on which workers announce job status changes to API processes. */
export function jobEventsChannel(prefix: string): string {
  return `${prefix}:job-events`;
}
