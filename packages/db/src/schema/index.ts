export * from './audit.ts';
export * from './credit-requests.ts';
export * from './jobs.ts';
export * from './operators.ts';
export * from './phone-numbers.ts';
export * from './sellers.ts';
export * from './transactions.ts';
export * from './vocabulary.ts';
