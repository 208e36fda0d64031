import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';

const execFileAsync = promisify(execFile);

/**
 * `npm run reconcile` against a database (`DATABASE_URL`, and `LEDGER_HMAC_KEY` when the rows were
 * sealed with a test key), as a child process. Asynchronous: a test process that serves something
 * the system uses (the provider simulator) keeps serving while it runs.
 */
export async function runReconcile(
  env: Partial<Record<'DATABASE_URL' | 'LEDGER_HMAC_KEY', string>>,
  args: string[] = [],
): Promise<{ status: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await execFileAsync(
      process.execPath,
      ['--import', 'tsx', join(import.meta.dirname, '..', '..', 'scripts', 'reconcile.ts'), ...args],
      {
        env: {
          ...process.env,
          ...(env.DATABASE_URL ? { DATABASE_URL: env.DATABASE_URL } : {}),
          ...(env.LEDGER_HMAC_KEY ? { LEDGER_HMAC_KEY: env.LEDGER_HMAC_KEY } : {}),
        },
        encoding: 'utf8',
        timeout: 60_000,
      },
    );
    return { status: 0, stdout, stderr };
  } catch (error) {
    const e = error as { code?: number; stdout?: string; stderr?: string };
    return { status: typeof e.code === 'number' ? e.code : -1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}
