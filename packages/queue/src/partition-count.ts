import { type Database, openJobCondition } from '@cs/db';
import { partitionOf } from './partitions.ts';

// The condition of the partial index of open jobs, so that the planner uses that index.
const openJobsBySeller = `select distinct seller_id, partition from jobs where ${openJobCondition}`;

/**
 * The sellers with open jobs recorded under a partition other than the one `partitions` gives
 * them. A seller's jobs stay in order because they all wait in one partition; a process started
 * with another PARTITIONS while such jobs are open would queue the seller's next jobs in a second
 * partition, consumed beside the first. So the count may change only once every job is final
 * (README: "Changing the partition count").
 */
export async function sellersUnderAnotherPartitionCount(db: Database, partitions: number): Promise<number> {
  const rows = await db.$client.unsafe<{ seller_id: string; partition: number }[]>(openJobsBySeller);
  return rows.filter((row) => partitionOf(row.seller_id, partitions) !== row.partition).length;
}

/** Exits with one line when open jobs were recorded under another partition count. */
export async function requireSamePartitionCount(db: Database, partitions: number, who: string): Promise<void> {
  const misplaced = await sellersUnderAnotherPartitionCount(db, partitions);
  if (misplaced === 0) return;
  console.error(
    `${who}: PARTITIONS is ${partitions}, but ${misplaced} seller(s) have open jobs queued under another partition count; ` +
      'run with the previous PARTITIONS until every job is final (README: "Changing the partition count")',
  );
  process.exit(1);
}
