import { createDb } from '@cs/db';
import { afterAll, describe, expect, inject, it } from 'vitest';

describe('the database client of the API and the workers', () => {
  const { db, close } = createDb(inject('databaseUrl'), { max: 2, idleInTransactionTimeoutMs: 1234 });
  afterAll(() => close());

  it('plans every execution of its prepared statements, and ends transactions left idle', async () => {
    // A generic plan made while `jobs` is empty scans the whole table for every job once it has
    // grown (seen in the bench: 28,000 sequential scans in a 20 s run).
    const [plan] = await db.$client`show plan_cache_mode`;
    expect(plan?.plan_cache_mode).toBe('force_custom_plan');
    const [idle] = await db.$client`show idle_in_transaction_session_timeout`;
    expect(idle?.idle_in_transaction_session_timeout).toBe('1234ms');
  });
});
