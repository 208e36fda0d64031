export * from './credit-requests.ts';
export * from './jobs.ts';
export * from './phone-numbers.ts';
export * from './sellers.ts';
export * from './transactions.ts';
export * from './vocabulary.ts';
