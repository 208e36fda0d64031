/**
 * The run's data in PostgreSQL and Redis: the bench database recreated at the start and dropped at
 * the end, the Redis keys of the run (and of runs that are gone) removed, the server described,
 * and the bench's own queries retried while a shared server briefly refuses connections.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { isDatabaseUnavailable, migrateDatabase } from '@cs/db';
import type { createRedis } from '@cs/queue';
import postgres from 'postgres';
import type { Sql } from './direct-sale.ts';
import type { RunSettings } from './options.ts';

type Redis = ReturnType<typeof createRedis>;

/**
 * The bench's own queries wait out a PostgreSQL that briefly refuses connections: the server is
 * shared, and "too many clients" from a neighbour's test run must not abort a run midway.
 */
export async function retrying<T>(query: () => Promise<T>, attempts = 20): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await query();
    } catch (error) {
      if (attempt >= attempts || !isDatabaseUnavailable(error)) throw error;
      await sleep(250 * attempt);
    }
  }
}

/** `databaseUrl` with another database name: the same server, user and password. */
export function urlOfDatabase(databaseUrl: string, databaseName: string): string {
  const url = new URL(databaseUrl);
  url.pathname = `/${encodeURIComponent(databaseName)}`;
  return url.toString();
}

/** Runs `statement` on the server's `postgres` database (creating and dropping databases). */
async function onServer(databaseUrl: string, statement: string): Promise<void> {
  const client = postgres(urlOfDatabase(databaseUrl, 'postgres'), { max: 1, onnotice: () => {} });
  try {
    await client.unsafe(statement);
  } finally {
    await client.end({ timeout: 5 });
  }
}

const quoted = (name: string) => `"${name.replaceAll('"', '""')}"`;

/** Drops the bench database (closing its connections by force), from the server's `postgres` database. */
export async function dropDatabase(databaseUrl: string, databaseName: string): Promise<void> {
  await onServer(databaseUrl, `drop database if exists ${quoted(databaseName)} with (force)`);
}

/** Creates an empty database on the bench database's server, owned by the bench's user. */
export async function createDatabase(databaseUrl: string, databaseName: string): Promise<void> {
  await onServer(databaseUrl, `create database ${quoted(databaseName)}`);
}

/** Whether a process exists (a run's Redis keys and databases carry its pid). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** A fresh bench database, migrated as its owner, which grants the application role. */
export async function recreateDatabase(databaseUrl: string, run: RunSettings): Promise<void> {
  await dropDatabase(databaseUrl, run.databaseName);
  await migrateDatabase(databaseUrl, { applicationUrl: run.applicationUrl });
}

/**
 * A run whose checks failed keeps its Redis keys for inspection; the next run removes those of
 * bench processes that no longer exist (the prefix carries the pid), never a live run's.
 */
export async function removeStaleRedisKeys(redis: Redis): Promise<void> {
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', 'csbench-*', 'COUNT', 1000);
    cursor = next;
    const stale = keys.filter((key) => !processAlive(Number(/^csbench-(\d+):/.exec(key)?.[1] ?? process.pid)));
    if (stale.length > 0) await redis.unlink(...stale);
  } while (cursor !== '0');
}

/** Removes this run's Redis keys. */
export async function removeRedisKeys(redis: Redis, prefix: string): Promise<void> {
  let cursor = '0';
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', `${prefix}:*`, 'COUNT', 1000);
    cursor = next;
    if (keys.length > 0) await redis.unlink(...keys);
  } while (cursor !== '0');
}

export interface PostgresSettings {
  version: string;
  sc: string;
  fsync: string;
  sb: string;
  free: number;
  max: number;
}

/**
 * Opens every connection of the bench's own pool now, while the shared server has room, and reads
 * the server's version, durability settings and free connections.
 */
export async function describePostgres(sql: Sql, poolSize: number): Promise<PostgresSettings | undefined> {
  await Promise.all(Array.from({ length: poolSize }, () => sql`select 1`));
  const [settings] = await sql<PostgresSettings[]>`
    select split_part(version(), ' ', 2) as version, current_setting('synchronous_commit') as sc,
           current_setting('fsync') as fsync, current_setting('shared_buffers') as sb,
           current_setting('max_connections')::int as max,
           current_setting('max_connections')::int - (select count(*) from pg_stat_activity)::int as free`;
  return settings;
}
