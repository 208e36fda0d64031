/**
 * `--load wrk`: the workloads of bench/load.ts driven by Debian's wrk (C, several threads, one
 * event loop each) instead of autocannon, to show the figures are not the load generator's. The
 * requests are built in Lua (bench/load-wrk.lua) from a plan this module writes as a Lua table;
 * the script prints progress lines and, from wrk's `done()`, one JSON line that becomes the same
 * `LoadResult` as autocannon's, so the report prints the same table.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { accessSync, constants, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import { createInterface } from 'node:readline';
import type { LoadPlan, LoadResult, RequestKind } from './load.ts';
import type { LoadTick } from './load-process.ts';
import { root } from './processes.ts';
import { amounts, creditAmount, MIXED_SALES, nilUuid, phones } from './request-mix.ts';
import { cpuSeconds } from './samplers.ts';

/** wrk threads; fewer when there are fewer connections (each thread needs one). */
const WRK_THREADS = 2;
const script = join(root, 'bench/load-wrk.lua');

/** The wrk executable on PATH, or undefined. */
export function findWrk(): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    const candidate = join(dir, 'wrk');
    try {
      accessSync(candidate, constants.X_OK);
      return candidate;
    } catch {}
  }
  return undefined;
}

/** What load-wrk.lua's `done()` prints after `wrk-result `. */
interface WrkReport {
  requests: number;
  durationUs: number;
  errors: { connect: number; read: number; write: number; status: number; timeout: number };
  latencyUs: { p50: number; p90: number; p99: number; max: number; mean: number };
  /** Responses by `<kind> <status>`. */
  byKindStatus: Record<string, number>;
}

/**
 * Runs wrk for one plan; `started` gets the child so that the run's teardown can stop it. Ticks
 * come from this side once a second, summing each thread's last progress line.
 */
export function runWrk(
  plan: LoadPlan,
  onTick: (tick: LoadTick) => void,
  started: (child: ChildProcess) => void,
): Promise<LoadResult> {
  const wrk = findWrk();
  if (!wrk) return Promise.reject(new Error('wrk is not on PATH (Debian: apt-get install wrk)'));
  const threads = Math.min(WRK_THREADS, plan.connections);
  const planText = `return ${lua(luaPlan(plan, threads))}\n`;
  const dir = mkdtempSync(join(tmpdir(), 'cs-bench-wrk-'));
  const planFile = join(dir, 'plan.lua');
  writeFileSync(planFile, planText);
  const child = spawn(
    wrk,
    [
      ...['-t', String(threads), '-c', String(plan.connections), '-d', `${plan.durationSeconds}s`],
      ...['--timeout', '30s', '-s', script, plan.url, '--', planFile],
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  started(child);
  const progress = new Map<number, { ok: number; notOk: number }>();
  const capped = new Set<number>();
  let report: WrkReport | undefined;
  let unreadable: string | undefined;
  let cpuUsed = 0;
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr = (stderr + chunk.toString()).slice(-2000);
  });
  createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (line) => {
    const [tag, ...fields] = line.split(' ');
    if (tag === 'wrk-progress') {
      const [thread, ok, notOk] = fields.map(Number) as [number, number, number];
      progress.set(thread, { ok, notOk });
    } else if (tag === 'wrk-capped') {
      capped.add(Number(fields[0]));
      // wrk sleeps out its whole duration even when every thread has stopped; interrupted, it reports now.
      if (capped.size === threads) child.kill('SIGINT');
    } else if (tag === 'wrk-result') {
      // Read while wrk is still alive: once it exits and is reaped, /proc has nothing left of it.
      cpuUsed = cpuSeconds(child.pid ?? 0);
      try {
        report = JSON.parse(fields.join(' ')) as WrkReport;
      } catch {
        unreadable = line;
      }
    }
  });
  let second = 0;
  const ticker = setInterval(() => {
    const sum = [...progress.values()].reduce((a, p) => ({ ok: a.ok + p.ok, notOk: a.notOk + p.notOk }), {
      ok: 0,
      notOk: 0,
    });
    onTick({ type: 'tick', second: ++second, responses: sum.ok + sum.notOk, ...sum });
  }, 1000);
  return new Promise((resolve, reject) => {
    child.once('error', (error) => {
      clearInterval(ticker);
      rmSync(dir, { recursive: true, force: true });
      reject(new Error(`wrk could not start: ${error.message}`));
    });
    child.once('close', (code, signal) => {
      clearInterval(ticker);
      rmSync(dir, { recursive: true, force: true });
      if (!report) {
        const what = unreadable ? `an unreadable result: ${unreadable}` : 'no result';
        return reject(new Error(`wrk exited (${signal ?? code}) with ${what}\n${stderr}`));
      }
      const result = loadResult(report, cpuUsed);
      // In mixed, the script tells a credit request's answer by the X-Request-Id the API echoes;
      // without it every answer would count as a sale and no approval would be sent.
      if (plan.mode === 'mixed' && result.responses >= 100 && Object.keys(result.byKind.credit_request).length === 0)
        return reject(new Error('wrk: no answer carried the X-Request-Id of a credit request, so mixed cannot run'));
      resolve(result);
    });
  });
}

/** The Lua table load-wrk.lua reads with `dofile`. */
function luaPlan(plan: LoadPlan, threads: number): Record<string, unknown> {
  if (plan.target === 'ceiling' && plan.mode !== 'sales') throw new Error('the bare pipeline takes sales only');
  return {
    name: plan.name,
    mode: plan.mode,
    target: plan.target,
    threads,
    maxPerThread: Math.ceil(plan.maxRequests / threads),
    adminToken: plan.adminToken,
    mixedSales: MIXED_SALES,
    creditAmount,
    nilUuid,
    sellers: plan.sellers.map(({ id, key }) => ({ id, key })),
    phones,
    amounts,
  };
}

/** A Lua literal of strings, numbers, arrays and records with identifier keys. */
function lua(value: unknown): string {
  if (typeof value === 'number') return String(value);
  if (typeof value === 'string') return luaString(value);
  if (Array.isArray(value)) return `{${value.map(lua).join(',')}}`;
  if (value && typeof value === 'object')
    return `{${Object.entries(value)
      .map(([k, v]) => `${k}=${lua(v)}`)
      .join(',')}}`;
  throw new Error(`no Lua literal for ${String(value)}`);
}

/**
 * A Lua string: quotes, backslashes and control characters as decimal escapes of three digits
 * (so that a digit after one is not read as part of it).
 */
function luaString(text: string): string {
  const escaped = (c: string) => {
    const code = c.charCodeAt(0);
    return c === '\\' || c === '"' || code < 32 || code === 127 ? `\\${String(code).padStart(3, '0')}` : c;
  };
  return `"${[...text].map(escaped).join('')}"`;
}

function loadResult(report: WrkReport, cpuUsed: number): LoadResult {
  const byKind: LoadResult['byKind'] = { sale: {}, credit_request: {}, approval: {} };
  const statusCodes: Record<string, number> = {};
  let ok = 0;
  let notOk = 0;
  for (const [key, n] of Object.entries(report.byKindStatus)) {
    const [kind, status] = key.split(' ') as [RequestKind, string];
    byKind[kind][status] = (byKind[kind][status] ?? 0) + n;
    statusCodes[status] = (statusCodes[status] ?? 0) + n;
    if (status.startsWith('2')) ok += n;
    else notOk += n;
  }
  const { connect, read, write, timeout } = report.errors;
  const ms = (us: number) => us / 1000;
  return {
    durationSeconds: report.durationUs / 1e6,
    responses: ok + notOk,
    ok,
    notOk,
    // Socket errors and timeouts, as autocannon's `errors`; wrk's `status` (answers ≥ 400) is in notOk.
    errors: connect + read + write + timeout,
    timeouts: timeout,
    statusCodes,
    byKind,
    latencyMs: {
      p50: ms(report.latencyUs.p50),
      p90: ms(report.latencyUs.p90),
      p99: ms(report.latencyUs.p99),
      max: ms(report.latencyUs.max),
      mean: ms(report.latencyUs.mean),
    },
    cpuSeconds: cpuUsed,
  };
}
