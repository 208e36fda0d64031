// `npm run reconcile`: checks every seller in one SQL pass (balance = sum of its ledger, and each
// row's balance_after follows from the previous row), prints a summary, and exits 1 on any
// difference, so it can run from cron or CI.
import { loadConfig } from '@cs/config';
import { createDb, describeConnectionError } from '@cs/db';
import { reconcile } from '@cs/ledger';

const config = loadConfig({ needsAdminToken: false });
const { db, close } = createDb(config.DATABASE_URL, { max: 1 });
try {
  const started = performance.now();
  const checks = await reconcile(db);
  const bad = checks.filter((c) => !c.isReconciled);
  const rows = checks.reduce((sum, c) => sum + c.totalTransactions, 0);
  const total = checks.reduce((sum, c) => sum + c.currentBalance, 0n);
  console.log(
    `reconciled ${checks.length} sellers, ${rows} ledger rows, ${total} rials held, in ${(performance.now() - started).toFixed(0)} ms`,
  );
  for (const c of bad) {
    console.log(
      `  UNRECONCILED seller ${c.sellerId}: balance ${c.currentBalance}, ledger sum ${c.calculatedFromTransactions}, ` +
        `difference ${c.currentBalance - c.calculatedFromTransactions}, broken balance_after rows ${c.brokenChainRows}`,
    );
  }
  console.log(bad.length === 0 ? 'all sellers reconcile' : `${bad.length} seller(s) do not reconcile`);
  process.exitCode = bad.length === 0 ? 0 : 1;
} catch (error) {
  console.error(`reconcile: ${describeConnectionError(error, config.DATABASE_URL)}`);
  process.exitCode = 2;
} finally {
  await close();
}
