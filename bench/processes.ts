import { type ChildProcess, spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

export const root = join(import.meta.dirname, '..');

/** A free TCP port on loopback. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => resolve(typeof address === 'object' && address ? address.port : 0));
    });
  });
}

/** Node's arguments for a TypeScript entry of the project, run through tsx. */
export const tsxEntry = (entry: string, nodeArgs: string[] = []) => [...nodeArgs, '--import', 'tsx', join(root, entry)];

/**
 * A process the bench started (`node <args>`, usually `tsxEntry`), with the tail of its output
 * kept for the error message when something goes wrong. Only these are ever signalled, by their
 * own pid.
 */
export class BenchProcess {
  readonly child: ChildProcess;
  private readonly logs: string[] = [];
  /** Warnings and errors the process logged (pino level ≥ 40), by message: a lost lease, a retried batch. */
  readonly warnings = new Map<string, number>();
  private partial = '';

  constructor(
    readonly name: string,
    args: string[],
    env: NodeJS.ProcessEnv,
  ) {
    this.child = spawn(process.execPath, args, {
      cwd: root,
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const keep = (chunk: Buffer) => {
      this.logs.push(chunk.toString());
      this.countWarnings(chunk.toString());
      if (this.logs.length > 200) this.logs.splice(0, 50);
      if (process.env.BENCH_SHOW_LOGS) process.stderr.write(`[${name}] ${chunk}`);
    };
    this.child.stdout?.on('data', keep);
    this.child.stderr?.on('data', keep);
  }

  get pid(): number {
    return this.child.pid ?? 0;
  }

  get running(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  private countWarnings(text: string): void {
    const lines = (this.partial + text).split('\n');
    this.partial = lines.pop() ?? '';
    for (const line of lines) {
      if (!line.startsWith('{')) continue;
      try {
        const entry = JSON.parse(line) as { level?: number; msg?: string };
        if ((entry.level ?? 0) >= 40) {
          const msg = entry.msg ?? '(no message)';
          this.warnings.set(msg, (this.warnings.get(msg) ?? 0) + 1);
        }
      } catch {}
    }
  }

  recentLogs(lines = 20): string {
    return this.logs
      .join('')
      .split('\n')
      .slice(-lines)
      .map((line) => `  [${this.name}] ${line}`)
      .join('\n');
  }

  /** SIGTERM, the product's graceful shutdown; SIGKILL if it has not exited after the timeout. */
  async stop(timeoutMs = 15_000): Promise<void> {
    if (!this.running) return;
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => this.child.kill('SIGKILL'), timeoutMs);
      this.child.once('exit', () => {
        clearTimeout(timer);
        resolve();
      });
      this.child.kill('SIGTERM');
    });
  }
}

/**
 * Waits until the URL answers 2xx (with `anyAnswer`, answers at all: a server without a health
 * route), or throws with the process's last lines.
 */
export async function waitHttpOk(
  url: string,
  owner: BenchProcess,
  timeoutMs = 30_000,
  anyAnswer = false,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (!owner.running) throw new Error(`${owner.name} exited before it was ready:\n${owner.recentLogs()}`);
    try {
      const res = await fetch(url);
      await res.body?.cancel();
      if (res.ok || anyAnswer) return;
    } catch {}
    await sleep(100);
  }
  throw new Error(`${owner.name} was not ready at ${url} after ${timeoutMs} ms:\n${owner.recentLogs()}`);
}

/** Runs `fn` over the items with at most `limit` calls in flight. */
export async function inParallel<T, R>(items: readonly T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length);
  let next = 0;
  const lane = async () => {
    while (next < items.length) {
      const i = next++;
      results[i] = await fn(items[i] as T);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, lane));
  return results;
}
