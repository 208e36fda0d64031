import { Queue } from 'bullmq';
import { type Delivery, defaultJobOptions, deliveryName } from './contract.ts';
import { partitionQueueName } from './partitions.ts';
import type { RedisClient } from './redis.ts';

/**
 * The BullMQ queue of a partition, opened the same way by everyone who uses it: the API that adds
 * messages, the worker that consumes them, the requeue that puts lost ones back.
 */
export function openPartitionQueue(
  connection: RedisClient,
  prefix: string,
  partition: number,
  onError: (err: Error) => void,
): Queue {
  const queue = new Queue(partitionQueueName(partition), { connection, prefix, defaultJobOptions });
  queue.on('error', onError);
  return queue;
}

/**
 * Adds messages naming recorded jobs, oldest first, each under its id: adding one twice leaves
 * one message, so a retry or a second requeue never doubles a delivery.
 */
export async function deliver(queue: Queue, messages: ReadonlyArray<{ id: string; jobIds: string[] }>) {
  if (messages.length === 1) {
    const [message] = messages as [{ id: string; jobIds: string[] }];
    const data: Delivery = { ids: message.jobIds };
    await queue.add(deliveryName, data, { ...defaultJobOptions, jobId: message.id });
    return;
  }
  await queue.addBulk(
    messages.map((m) => {
      const data: Delivery = { ids: m.jobIds };
      return { name: deliveryName, data, opts: { ...defaultJobOptions, jobId: m.id } };
    }),
  );
}
