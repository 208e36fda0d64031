import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { isolatedDatabase } from './support/db.ts';
import { createSeller, fundSeller, waitForJob } from './support/factories.ts';
import { Client } from './support/http.ts';
import { ADMIN_TOKEN, freePort, LEDGER_HMAC_KEY } from './support/system.ts';

const root = join(import.meta.dirname, '..');

/** The direct children of a process, as `ps` sees them. */
function childrenOf(pid: number): { pid: number; args: string }[] {
  let out = '';
  try {
    out = execFileSync('ps', ['-o', 'pid=,args=', '--ppid', String(pid)], { encoding: 'utf8' });
  } catch {
    return []; // ps exits 1 when there is none
  }
  return out
    .split('\n')
    .map((line) => line.trim().match(/^(\d+)\s+(.*)$/))
    .filter((m): m is RegExpMatchArray => !!m)
    .map((m) => ({ pid: Number(m[1]), args: m[2] ?? '' }));
}

/** A process's children, theirs, and so on. */
function descendantsOf(pid: number): { pid: number; args: string }[] {
  return childrenOf(pid).flatMap((child) => [child, ...descendantsOf(child.pid)]);
}

/** Whether a process runs (a zombie, dead but not yet reaped, does not). */
function isRunning(pid: number): boolean {
  try {
    const stat = execFileSync('ps', ['-o', 'stat=', '-p', String(pid)], { encoding: 'utf8' }).trim();
    return stat !== '' && !stat.startsWith('Z');
  } catch {
    return false;
  }
}

/** Whether a process's environment holds `entry`: it is one this file started, not a reused pid. */
function hasEnv(pid: number, entry: string): boolean {
  try {
    return readFileSync(`/proc/${pid}/environ`, 'latin1').split('\0').includes(entry);
  } catch {
    return false;
  }
}

/** The lines start.mjs prints itself, between the processes' log lines. */
const ownLines = [/^migrations applied$/, /^Charge Sales runs on /, /^Admin token: /, /^Try: curl /];

describe('npm start (scripts/start.mjs)', () => {
  let db: Awaited<ReturnType<typeof isolatedDatabase>>;
  let start: ChildProcess;
  let baseUrl: string;
  let stdout = '';
  let stderr = '';
  let exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** Every process start.mjs started that the test has seen: killed in afterAll if still there. */
  const started = new Set<number>();
  const redisPrefix = `${inject('redisPrefix')}-start-${process.pid}`;
  const output = () => `--- stdout\n${stdout.slice(-4000)}\n--- stderr\n${stderr.slice(-4000)}`;

  beforeAll(async () => {
    db = await isolatedDatabase(`start_${process.pid}`);
    const port = await freePort();
    baseUrl = `http://127.0.0.1:${port}`;
    start = spawn(process.execPath, [join(root, 'scripts', 'start.mjs')], {
      cwd: root,
      env: {
        ...process.env,
        NODE_ENV: 'test',
        PORT: String(port),
        MIGRATION_DATABASE_URL: db.ownerUrl,
        DATABASE_URL: db.applicationUrl,
        REDIS_URL: inject('redisUrl'),
        REDIS_PREFIX: redisPrefix,
        ADMIN_TOKEN,
        LEDGER_HMAC_KEY,
        LOG_LEVEL: 'info',
        DB_POOL_SIZE: '5',
      },
      // Pipes, not a terminal: the logs must come out as JSON lines.
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    exited = new Promise((resolve) => start.once('exit', (code, signal) => resolve({ code, signal })));
    start.stdout?.setEncoding('utf8').on('data', (chunk: string) => {
      stdout += chunk;
    });
    start.stderr?.setEncoding('utf8').on('data', (chunk: string) => {
      stderr += chunk;
    });

    const deadline = Date.now() + 45_000;
    for (;;) {
      for (const child of descendantsOf(start.pid as number)) started.add(child.pid);
      const ready = await fetch(`${baseUrl}/readyz`).then(
        (r) => r.status === 200,
        () => false,
      );
      if (ready) break;
      if (start.exitCode !== null || start.signalCode !== null)
        throw new Error(`start.mjs exited before the API was ready\n${output()}`);
      if (Date.now() > deadline) throw new Error(`the API did not become ready\n${output()}`);
      await sleep(200);
    }
  });

  afterAll(async () => {
    // Whatever happened above, nothing started here outlives the file.
    if (start && start.exitCode === null && start.signalCode === null) {
      for (const child of descendantsOf(start.pid as number)) started.add(child.pid);
      start.kill('SIGKILL');
    }
    // The processes' log lines carry their pids too (with npm in between they would be grandchildren).
    for (const match of stdout.matchAll(/"pid":(\d+)/g)) started.add(Number(match[1]));
    for (const pid of started) {
      if (!isRunning(pid) || !hasEnv(pid, `REDIS_PREFIX=${redisPrefix}`)) continue; // gone, or a reused pid
      try {
        process.kill(pid, 'SIGKILL');
      } catch {}
    }
    await db?.drop();
  });

  it('runs the API and a worker as its own children; stopped with SIGTERM, stops both and exits 0', async () => {
    // One sale end to end: the API takes it, the worker applies it.
    const client = new Client(baseUrl);
    const seller = await createSeller(client, 'Start seller');
    await fundSeller(client, seller, 100_000);
    const sale = await client.post('/api/charge-sales', {
      token: seller.apiKey,
      body: { seller_id: seller.id, phone_number: '09121234567', amount: 1000 },
    });
    expect(sale.status, JSON.stringify(sale.body)).toBe(202);
    const job = await waitForJob(client, sale.body.job_id);
    expect(job.status, JSON.stringify(job)).toBe('succeeded');

    // The API and the worker are node processes of start.mjs itself (no npm in between, which
    // would not pass the signal on).
    const children = childrenOf(start.pid as number);
    for (const child of children) started.add(child.pid);
    const api = children.filter((c) => c.args.includes('apps/api/src/index.ts'));
    const worker = children.filter((c) => c.args.includes('apps/worker/src/index.ts'));
    expect(api, JSON.stringify(children)).toHaveLength(1);
    expect(worker, JSON.stringify(children)).toHaveLength(1);

    const sent = Date.now();
    start.kill('SIGTERM');
    const ended = await Promise.race([exited, sleep(15_000).then(() => 'still running' as const)]);
    expect(ended, output()).toEqual({ code: 0, signal: null });
    expect(Date.now() - sent).toBeLessThan(15_000);
    for (const child of children) expect(isRunning(child.pid), `${child.pid} ${child.args}`).toBe(false);

    // Not a terminal: the processes' log lines are JSON, one event a line, unchanged.
    expect(stdout).not.toContain('\u001b[');
    const lines = stdout.split('\n').filter((line) => line !== '');
    const logs = lines
      .filter((line) => !ownLines.some((own) => own.test(line)))
      .map((line) => {
        let entry: any;
        try {
          entry = JSON.parse(line);
        } catch {
          throw new Error(`not a JSON line: ${line}\n${output()}`);
        }
        expect(entry, line).toMatchObject({ level: expect.any(Number), time: expect.any(Number) });
        expect(['api', 'worker'], line).toContain(entry.service);
        return entry;
      });
    const logged = (service: string, msg: string) =>
      logs.find((entry) => entry.service === service && String(entry.msg).startsWith(msg));
    // Each line comes from the process ps showed, and each process stopped through its own SIGTERM
    // handling (a graceful stop), not a kill.
    expect(logged('api', 'api listening')?.pid, output()).toBe(api[0]?.pid);
    expect(logged('worker', 'worker started')?.pid, output()).toBe(worker[0]?.pid);
    expect(logged('api', 'shutting down')?.signal, output()).toBe('SIGTERM');
    expect(logged('worker', 'shutting down')?.signal, output()).toBe('SIGTERM');
    expect(logged('worker', 'stopped'), output()).toBeDefined();
    expect(lines.some((line) => line.startsWith('Charge Sales runs on '))).toBe(true);
  });
});
