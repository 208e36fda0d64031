export * from './apply-jobs.ts';
export * from './chain.ts';
export * from './decisions.ts';
export * from './delivery-records.ts';
export * from './money.ts';
export * from './phone.ts';
export * from './reconcile.ts';
export * from './refusals.ts';
