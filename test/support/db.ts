import { migrateDatabase } from '@cs/db';
import postgres from 'postgres';
import { inject } from 'vitest';

/**
 * Direct SQL on the test database as the tables' owner, for assertions and for attempts to bypass
 * the application; `inject('databaseUrl')` is the application role's URL.
 */
export function testSql(url = inject('ownerDatabaseUrl')) {
  return postgres(url, { max: 4, onnotice: () => {}, types: { bigint: postgres.BigInt } });
}

/**
 * A database of its own, migrated, with the application role's grants, beside the run's test
 * database. For files that leave ledgers rewritten by hand (or jobs that never finish), and for
 * files whose checks cover every seller or every job (`npm run reconcile`, `sellers_unreconciled`):
 * the shared database holds other files' deliberately inconsistent rows.
 */
export async function isolatedDatabase(name: string) {
  const owner = new URL(inject('ownerDatabaseUrl'));
  owner.pathname = `${owner.pathname}_${name}`;
  const application = new URL(inject('databaseUrl'));
  application.pathname = owner.pathname;
  await migrateDatabase(owner.toString(), { applicationUrl: application.toString() });
  return {
    /** The tables' owner: for reading and for going around the application. */
    ownerUrl: owner.toString(),
    /** What the API and workers connect with. */
    applicationUrl: application.toString(),
    async drop(): Promise<void> {
      const admin = testSql();
      try {
        await admin.unsafe(`drop database if exists "${owner.pathname.slice(1)}" with (force)`);
      } finally {
        await admin.end();
      }
    },
  };
}
