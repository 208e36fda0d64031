import { randomBytes } from 'node:crypto';
import { migrateDatabase, urlAsRole } from '@cs/db';
import { Redis } from 'ioredis';
import postgres from 'postgres';
import type { TestProject } from 'vitest/node';

declare module 'vitest' {
  export interface ProvidedContext {
    /** The application role's URL: what the API and workers connect with, as in production. */
    databaseUrl: string;
    /** The owner's URL: for tests that look at or go around the application. */
    ownerDatabaseUrl: string;
    redisUrl: string;
    redisPrefix: string;
  }
}

/** The role the processes of every test run connect as: the privileges production has. */
export const TEST_APPLICATION_ROLE = 'cs_app';
export const TEST_APPLICATION_PASSWORD = 'cs_app';

/**
 * One database and one Redis key prefix per test run, so runs never see each other's data; both
 * are removed afterwards. The tables belong to the connecting (owner) role; the processes use the
 * application role, which holds only the privileges `npm run db:migrate` grants it.
 */
export default async function setup(project: TestProject) {
  const base = new URL(process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres');
  const suffix = `${Date.now().toString(36)}_${randomBytes(3).toString('hex')}`;
  const database = `cs_test_${suffix}`;
  const url = new URL(base);
  url.pathname = `/${database}`;
  const redisUrl = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379';
  const redisPrefix = `cst-${suffix}`;

  const applicationUrl = urlAsRole(url.toString(), TEST_APPLICATION_ROLE, TEST_APPLICATION_PASSWORD);
  await migrateDatabase(url.toString(), { applicationUrl });
  project.provide('databaseUrl', applicationUrl);
  project.provide('ownerDatabaseUrl', url.toString());
  project.provide('redisUrl', redisUrl);
  project.provide('redisPrefix', redisPrefix);

  return async () => {
    if (process.env.KEEP_TEST_DATA) return;
    const admin = postgres(base.toString(), { max: 1, onnotice: () => {} });
    await admin.unsafe(`drop database if exists "${database}" with (force)`).catch(() => {});
    await admin.end();
    const redis = new Redis(redisUrl);
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', `${redisPrefix}*`, 'COUNT', 1000);
      cursor = next;
      if (keys.length > 0) await redis.unlink(...keys);
    } while (cursor !== '0');
    await redis.quit();
  };
}
