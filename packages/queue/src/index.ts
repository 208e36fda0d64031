export * from './batcher.ts';
export * from './contract.ts';
export * from './job-events.ts';
export * from './partition-count.ts';
export * from './partition-queue.ts';
export * from './partitions.ts';
export * from './redis.ts';
