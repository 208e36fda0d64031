/**
 * `node --import tsx bench/compare-summary.ts before.json after.json`: the phases of two bench
 * runs (`--json`) side by side, as bench/compare.sh prints them. It reads only what every version
 * of the JSON has (an older bench's has no `delivery`), so the run before deliveries existed can be
 * one of the two.
 */
import { readFileSync } from 'node:fs';
import { fmt, log } from './output.ts';

interface RunJson {
  results: Array<{
    name: string;
    label: string;
    kind: 'api' | 'sync' | 'ceiling' | 'rowlock';
    committedPerSecond: number;
    cpuSeconds: Record<string, number>;
    stats: {
      jobs: number;
      batchMs: number | null;
      p50: number | null;
      p99: number | null;
      delivery?: { p50: number | null; p99: number | null; delivered: number; records: number };
    };
    problems: string[];
  }>;
  finalProblems: string[];
}

/** The processes charged for a phase's CPU, as bench/report.ts charges them. */
const charged: Record<RunJson['results'][number]['kind'], string[]> = {
  api: ['api', 'workers', 'redis', 'postgres'],
  sync: ['sync', 'postgres'],
  ceiling: ['api', 'workers', 'redis', 'postgres'],
  rowlock: ['bench', 'postgres'],
};

const [beforeFile, afterFile] = process.argv.slice(2);
if (!beforeFile || !afterFile) {
  console.error('usage: node --import tsx bench/compare-summary.ts before.json after.json');
  process.exit(2);
}
const read = (file: string) => JSON.parse(readFileSync(file, 'utf8')) as RunJson;
const before = read(beforeFile);
const after = read(afterFile);

// JSON turns NaN (a figure a phase has not) into null.
const num = (n: number | null | undefined, digits = 0) => (n == null ? '-' : fmt(n, digits));
const cpuPerJob = (r: RunJson['results'][number]) =>
  r.stats.jobs > 0 ? (1000 * charged[r.kind].reduce((s, g) => s + (r.cpuSeconds[g] ?? 0), 0)) / r.stats.jobs : null;
const pair = (a: string, b: string) => `${a} → ${b}`;

const rows = after.results.map((a) => {
  const b = before.results.find((r) => r.name === a.name);
  const d = a.stats.delivery;
  return [
    a.label,
    pair(num(b?.committedPerSecond), num(a.committedPerSecond)),
    pair(num(b?.stats.p50, 1), num(a.stats.p50, 1)),
    pair(num(b?.stats.p99, 1), num(a.stats.p99, 1)),
    pair(num(b?.stats.batchMs, 1), num(a.stats.batchMs, 1)),
    pair(num(b && cpuPerJob(b), 2), num(cpuPerJob(a), 2)),
    d ? `${num(d.p50, 1)} / ${num(d.p99, 1)}` : '-',
  ];
});
const header = [
  'workload (before → after)',
  'committed/s',
  'p50 ms',
  'p99 ms',
  'batch ms',
  'CPU ms per job',
  'delivery p50 / p99 ms',
];
const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
const line = (cells: string[]) =>
  `| ${cells.map((c, i) => (i === 0 ? c.padEnd(widths[i] ?? 0) : c.padStart(widths[i] ?? 0))).join(' | ')} |`;
log(line(header));
log(`|${widths.map((w, i) => (i === 0 ? `:${'-'.repeat(w + 1)}` : `${'-'.repeat(w + 1)}:`)).join('|')}|`);
for (const r of rows) log(line(r));
log(
  'committed/s, p50, p99, batch: submission → commit (a sale at its debit, in both runs). CPU per job: over load ' +
    "and drain; after deliveries the drain includes the delivery stage's work. delivery: debit → delivered (after only).",
);
for (const [name, run] of [
  ['before', before],
  ['after', after],
] as const) {
  const problems = [...run.results.flatMap((r) => r.problems.map((p) => `${r.label}: ${p}`)), ...run.finalProblems];
  log(`${name}: ${problems.length === 0 ? 'every check passed' : `FAILED: ${problems.join('; ')}`}`);
}
