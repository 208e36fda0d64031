// `npm run reconcile`: checks every seller (balance = sum of its ledger, each row's balance_after
// follows from the previous row, and the ledger's hash chain verifies with LEDGER_HMAC_KEY),
// prints a summary with each seller's chain head, and exits 1 on any difference, so it can run
// from cron or CI. The heads it prints can be kept outside the database: a later run that prints
// the same head for a seller proves that none of that seller's rows up to it changed.
import { loadConfig } from '@cs/config';
import { createDb, describeConnectionError } from '@cs/db';
import { reconcile, reconcileDeliveries } from '@cs/ledger';

const config = loadConfig({ needsAdminToken: false });
const { db, close } = createDb(config.DATABASE_URL, { max: 1, prepare: config.DATABASE_PREPARE });
const heads = process.argv.includes('--heads');
try {
  const started = performance.now();
  const checks = await reconcile(db, { ledgerKey: config.LEDGER_HMAC_KEY });
  const bad = checks.filter((c) => !c.isReconciled);
  const rows = checks.reduce((sum, c) => sum + c.totalTransactions, 0);
  const total = checks.reduce((sum, c) => sum + c.currentBalance, 0n);
  console.log(
    `reconciled ${checks.length} sellers, ${rows} ledger rows, ${total} rials held, in ${(performance.now() - started).toFixed(0)} ms`,
  );
  for (const c of bad) {
    console.log(
      `  UNRECONCILED seller ${c.sellerId}: balance ${c.currentBalance}, ledger sum ${c.calculatedFromTransactions}, ` +
        `difference ${c.currentBalance - c.calculatedFromTransactions}, broken balance_after rows ${c.brokenChainRows}, ` +
        `hash chain ${c.chainBrokenAt === null ? (c.isReconciled ? 'ok' : 'does not end at the recorded head') : `broken at row ${c.chainBrokenAt}`}`,
    );
  }
  if (heads)
    for (const c of checks) console.log(`  head ${c.sellerId} ${c.chainHead ?? '-'} (${c.totalTransactions} rows)`);
  console.log(bad.length === 0 ? 'all sellers reconcile' : `${bad.length} seller(s) do not reconcile`);

  const d = await reconcileDeliveries(db, { pendingTooLongMs: config.DELIVERY_GIVE_UP_AFTER });
  console.log(
    `deliveries: ${d.sales} sales: ${d.delivered} delivered, ${d.refunded} refunded, ${d.inProgress} on their way ` +
      `(${d.unresolved} waiting for an operator), ${d.conflicts} in conflict` +
      (d.withoutDelivery > 0 ? `, ${d.withoutDelivery} debited before deliveries existed` : ''),
  );
  if (d.pendingTooLong > 0) {
    console.log(
      `  ${d.pendingTooLong} on their way for longer than DELIVERY_GIVE_UP_AFTER (oldest debited ${d.oldestPendingAt?.toISOString()})`,
    );
  }
  if (d.conflicts > 0) console.log(`  ${d.conflicts} conflict(s): see GET /api/deliveries?status=conflict`);
  for (const [count, what] of [
    [d.refundedTwice, 'sale(s) refunded more than once'],
    [d.refundsWithoutSale, 'refund(s) without their sale'],
    [d.refundedWithoutRefundRow, 'refunded delivery(ies) without a refund row'],
    [d.deliveredAndRefunded, 'delivered top-up(s) refunded'],
  ] as const) {
    if (count > 0) console.log(`  FAULT: ${count} ${what}`);
  }
  process.exitCode = bad.length === 0 && d.ok ? 0 : 1;
} catch (error) {
  console.error(`reconcile: ${describeConnectionError(error, config.DATABASE_URL)}`);
  process.exitCode = 2;
} finally {
  await close();
}
