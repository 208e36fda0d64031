export * from './client.ts';
export * from './errors.ts';
export { migrateDatabase } from './migrate.ts';
export * from './schema/index.ts';
