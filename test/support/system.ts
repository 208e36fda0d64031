import { type ChildProcess, spawn } from 'node:child_process';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { inject } from 'vitest';

const root = join(import.meta.dirname, '..', '..');
let systems = 0;

export const ADMIN_TOKEN = 'test-admin-token-0123456789';
/** The ledger chain key of every system a test starts; reconcile needs the same one. */
export const LEDGER_HMAC_KEY = 'test-ledger-hmac-key-0123456789abcdef';
export const SESSION_SECRET = 'test-session-secret-0123456789abcdefgh';

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

export interface SystemOptions {
  workers?: number;
  env?: Record<string, string>;
  databaseUrl?: string;
  redisUrl?: string;
}

/**
 * The real thing as separate processes: one API and N workers, with a Redis prefix of their own
 * so that no other test's workers ever take their jobs. More API processes can join
 * ({@link System.startApi}), as behind a load balancer.
 */
export class System {
  readonly workers: ChildProcess[] = [];
  private api: ChildProcess | undefined;
  private readonly moreApis: ChildProcess[] = [];
  readonly baseUrl: string;
  readonly env: Record<string, string>;
  private readonly logs: string[] = [];

  private constructor(port: number, env: Record<string, string>) {
    this.baseUrl = `http://127.0.0.1:${port}`;
    this.env = env;
  }

  static async start(options: SystemOptions = {}): Promise<System> {
    const port = await freePort();
    const env: Record<string, string> = {
      ...(process.env as Record<string, string>),
      NODE_ENV: 'test',
      DATABASE_URL: options.databaseUrl ?? inject('databaseUrl'),
      REDIS_URL: options.redisUrl ?? inject('redisUrl'),
      REDIS_PREFIX: `${inject('redisPrefix')}-${process.pid}-${++systems}`,
      ADMIN_TOKEN,
      LEDGER_HMAC_KEY,
      SESSION_SECRET,
      PORT: String(port),
      LOG_LEVEL: process.env.TEST_LOG_LEVEL ?? 'warn',
      // Several processes per system: keep well inside PostgreSQL's default 100 connections.
      DB_POOL_SIZE: '5',
      // Load tests sell hundreds a second for one seller, and hostile-input tests send thousands of
      // wrong tokens from 127.0.0.1: the limits run, far above what any of them reaches. The tests
      // of the limits set their own.
      SELLER_RATE_LIMIT: '1000000',
      AUTH_FAILURE_LIMIT: '1000000',
      // A killed worker's deliveries move on after 3 s rather than 30: fault tests wait for them.
      DELIVERY_LEASE_MS: '3000',
      ...options.env,
    };
    const system = new System(port, env);
    system.api = system.spawn('apps/api/src/index.ts', 'api');
    for (let i = 0; i < (options.workers ?? 1); i++) system.startWorker();
    await system.waitReady();
    return system;
  }

  /**
   * Another API process of the same deployment (same database, Redis prefix and settings, plus
   * `extraEnv`), on a port of its own; resolves with its base URL once it is ready.
   */
  async startApi(extraEnv: Record<string, string> = {}): Promise<string> {
    const port = await freePort();
    const name = `api${this.moreApis.length + 1}`;
    this.moreApis.push(this.spawn('apps/api/src/index.ts', name, { ...extraEnv, PORT: String(port) }));
    const baseUrl = `http://127.0.0.1:${port}`;
    await this.waitReady(baseUrl);
    return baseUrl;
  }

  startWorker(extraEnv: Record<string, string> = {}): ChildProcess {
    const worker = this.spawn('apps/worker/src/index.ts', `worker${this.workers.length}`, extraEnv);
    this.workers.push(worker);
    return worker;
  }

  /** Sends a signal to the API process and resolves with its exit code. */
  async stopApi(signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    const api = this.api;
    if (!api || api.exitCode !== null) return api?.exitCode ?? null;
    const exited = new Promise<number | null>((resolve) => api.once('exit', resolve));
    api.kill(signal);
    return exited;
  }

  /** kill -9: no shutdown, no cleanup, locks and leases left to expire. */
  killWorker(index: number): void {
    this.workers[index]?.kill('SIGKILL');
  }

  async stopWorker(index: number, signal: NodeJS.Signals = 'SIGTERM'): Promise<number | null> {
    const worker = this.workers[index];
    if (!worker || worker.exitCode !== null) return worker?.exitCode ?? null;
    worker.kill(signal);
    return new Promise((resolve) => worker.once('exit', (code) => resolve(code)));
  }

  async stop(): Promise<void> {
    const all = [this.api, ...this.moreApis, ...this.workers].filter(
      (p): p is ChildProcess => !!p && p.exitCode === null && p.signalCode === null,
    );
    await Promise.all(
      all.map(
        (p) =>
          new Promise<void>((resolve) => {
            const timer = setTimeout(() => p.kill('SIGKILL'), 10_000);
            p.once('exit', () => {
              clearTimeout(timer);
              resolve();
            });
            p.kill('SIGTERM');
          }),
      ),
    );
  }

  /** The last lines the processes wrote, for a failing test's message. */
  recentLogs(lines = 40): string {
    return this.logs.slice(-lines).join('');
  }

  private spawn(entry: string, name: string, extraEnv: Record<string, string> = {}): ChildProcess {
    // TEST_PROCESS_NODE runs the processes under test on another Node.js than the tests' own (the
    // machine's older one, say), to prove the product still runs there.
    const child = spawn(process.env.TEST_PROCESS_NODE ?? process.execPath, ['--import', 'tsx', join(root, entry)], {
      cwd: root,
      env: { ...this.env, ...extraEnv },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    // A test process that ends without stopping its system must not leave servers behind holding
    // PostgreSQL connections.
    const killOnExit = () => child.kill('SIGKILL');
    process.once('exit', killOnExit);
    child.once('exit', () => process.off('exit', killOnExit));
    // Whole lines only: a pipe cuts output anywhere, and a line split across two chunks would
    // not match what a test looks for in it.
    const keepLines = () => {
      let partial = '';
      return (chunk: Buffer) => {
        const lines = (partial + chunk.toString()).split('\n');
        partial = lines.pop() ?? '';
        for (const line of lines) {
          this.logs.push(`[${name}] ${line}\n`);
          if (process.env.TEST_SHOW_LOGS) process.stderr.write(`[${name}] ${line}\n`);
        }
        if (this.logs.length > 2000) this.logs.splice(0, this.logs.length - 1500);
      };
    };
    child.stdout?.on('data', keepLines());
    child.stderr?.on('data', keepLines());
    return child;
  }

  private async waitReady(baseUrl = this.baseUrl, timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      try {
        const res = await fetch(`${baseUrl}/readyz`);
        if (res.ok) return;
      } catch {}
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`API did not become ready:\n${this.recentLogs()}`);
  }
}
