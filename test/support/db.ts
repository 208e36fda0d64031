import postgres from 'postgres';
import { inject } from 'vitest';

/**
 * Direct SQL on the test database as the tables' owner, for assertions and for attempts to bypass
 * the application; `inject('databaseUrl')` is the application role's URL.
 */
export function testSql(url = inject('ownerDatabaseUrl')) {
  return postgres(url, { max: 4, onnotice: () => {}, types: { bigint: postgres.BigInt } });
}
