/**
 * `npm run lint:openapi`: writes the OpenAPI document the API serves (built from `createApp`'s
 * routes, no server needed) to .tmp/openapi.json and lints it with Redocly's built-in
 * `recommended` rules, no configuration and no ignore file. Redocly fails on errors only; this
 * fails on warnings too, so the document stays at zero of both.
 *
 *   node --import tsx test/openapi/lint.ts [document.json]   (lints the given file instead)
 */
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(import.meta.dirname, '..', '..');
const redocly = join(dirname(createRequire(import.meta.url).resolve('@redocly/cli/package.json')), 'bin', 'cli.js');

export interface LintResult {
  errors: number;
  warnings: number;
  /** Redocly's own exit code: non-zero on errors. */
  status: number | null;
  /** Redocly's own report, as a person reads it. */
  report: string;
}

/** Lints one document with Redocly's defaults: no configuration file is read, nothing is sent out. */
export function lintOpenApi(file: string, options: { print?: boolean } = {}): LintResult {
  const run = (format: string) =>
    spawnSync(process.execPath, [redocly, 'lint', `--format=${format}`, '--max-problems=1000', file], {
      cwd: root,
      encoding: 'utf8',
      env: { ...process.env, REDOCLY_TELEMETRY: 'off', REDOCLY_SUPPRESS_UPDATE_NOTICE: 'true' },
    });
  const human = run('codeframe');
  const report = `${human.stdout}${human.stderr}`;
  if (options.print) process.stdout.write(report);
  const machine = run('json');
  let totals: { errors: number; warnings: number };
  try {
    ({ totals } = JSON.parse(machine.stdout) as { totals: { errors: number; warnings: number } });
  } catch {
    throw new Error(`redocly lint gave no JSON report (exit ${machine.status}):\n${machine.stdout}${machine.stderr}`);
  }
  return { errors: totals.errors, warnings: totals.warnings, status: human.status, report };
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  let file = process.argv[2];
  if (!file) {
    const { writeOpenApiDocument } = await import('./document.ts');
    file = writeOpenApiDocument(join(root, '.tmp', 'openapi.json'));
  }
  const { errors, warnings, status } = lintOpenApi(file, { print: true });
  console.log(`lint:openapi: ${errors} errors, ${warnings} warnings in ${file}`);
  process.exit(errors + warnings === 0 && status === 0 ? 0 : 1);
}
