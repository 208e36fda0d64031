export * from './audit.ts';
export * from './client.ts';
export * from './errors.ts';
export * from './job-records.ts';
export { migrateDatabase } from './migrate.ts';
export { describeOverprivilegedRole, requireLeastPrivilege, roleOf, urlAsRole } from './privileges.ts';
export * from './schema/index.ts';
export * from './webhook-outbox.ts';
