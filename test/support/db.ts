import postgres from 'postgres';
import { inject } from 'vitest';

/** Direct SQL on the test database, for assertions and for attempts to bypass the application. */
export function testSql(url = inject('databaseUrl')) {
  return postgres(url, { max: 4, onnotice: () => {}, types: { bigint: postgres.BigInt } });
}
