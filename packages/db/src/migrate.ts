import { fileURLToPath } from 'node:url';
import { loadConfig } from '@cs/config';
import { drizzle } from 'drizzle-orm/postgres-js';
import { migrate } from 'drizzle-orm/postgres-js/migrator';
import postgres from 'postgres';
import { describeConnectionError } from './errors.ts';
import { grantApplicationRole } from './privileges.ts';

const migrationsFolder = fileURLToPath(new URL('../../../drizzle', import.meta.url));

/**
 * Creates the database if it does not exist and applies every pending migration, connected as the
 * tables' owner. With `applicationUrl` (the role the API and workers use), it then makes sure that
 * role exists, holds only what they need, and has its session defaults in this database (see
 * privileges.ts). Run it against PostgreSQL itself, not through a pooler in transaction mode.
 */
export async function migrateDatabase(ownerUrl: string, { applicationUrl }: { applicationUrl?: string } = {}) {
  await createDatabaseIfMissing(ownerUrl);
  const client = postgres(ownerUrl, { max: 1, onnotice: () => {}, connect_timeout: 5 });
  try {
    await migrate(drizzle(client), { migrationsFolder });
    if (applicationUrl) await grantApplicationRole(client, applicationUrl);
  } finally {
    await client.end({ timeout: 5 });
  }
}

async function createDatabaseIfMissing(url: string): Promise<void> {
  const target = new URL(url);
  const name = decodeURIComponent(target.pathname.slice(1));
  if (!name) return;
  const admin = new URL(url);
  admin.pathname = '/postgres';
  const client = postgres(admin.toString(), { max: 1, onnotice: () => {}, connect_timeout: 5 });
  try {
    const found = await client`select 1 from pg_database where datname = ${name}`;
    if (found.length === 0) await client.unsafe(`create database "${name.replaceAll('"', '""')}"`);
  } catch (error) {
    // Concurrent creators: the other one won, which is what we wanted.
    if ((error as { code?: string }).code !== '42P04') throw error;
  } finally {
    await client.end({ timeout: 5 });
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const config = loadConfig({ needsAdminToken: false, needsLedgerKey: false });
  const ownerUrl = config.MIGRATION_DATABASE_URL ?? config.DATABASE_URL;
  migrateDatabase(ownerUrl, { applicationUrl: config.DATABASE_URL }).then(
    () => console.log('migrations applied'),
    (error: unknown) => {
      console.error(`db:migrate: ${describeConnectionError(error, ownerUrl)}`);
      process.exit(1);
    },
  );
}
