/**
 * The processes a run starts: the product's API and workers, then the bench-only sync server and
 * the bare pipeline of the ceil phases. Each
 * is a child process with its logs kept; their peak memory is read before they stop, and their CPU
 * profiles (`--profile`) are summarised at the end.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { type createRedis, partitionLeaseKey } from '@cs/queue';
import type { Config, RunSettings } from './options.ts';
import { log } from './output.ts';
import { BenchProcess, freePort, root, tsxEntry, waitHttpOk } from './processes.ts';
import { formatProfile, summarizeProfile } from './profile-summary.ts';
import { procStatusMiB } from './samplers.ts';

/**
 * The memory flags a package.json start script gives node (`npm run start:api`, `start:worker`),
 * so the bench runs the processes as they are deployed. Without them V8 sizes the heap for a
 * large machine (on Node 24 its young generation too, to four times what Node 20 gave it) and RSS
 * grows far past what the process needs under load, for no gain in throughput.
 */
function memoryFlagsOf(script: 'start:api' | 'start:worker'): string[] {
  const scripts = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).scripts as Record<string, string>;
  return (scripts[script] ?? '').split(/\s+/).filter((arg) => /^--max-(old|semi)-space-size=\d+$/.test(arg));
}
const API_MEMORY = memoryFlagsOf('start:api');
const WORKER_MEMORY = memoryFlagsOf('start:worker');

export class RunProcesses {
  private readonly all: BenchProcess[] = [];
  /** Peak RSS of every process over its life (VmHWM), read just before it is stopped. */
  private readonly lifetimePeakMiB = new Map<string, number>();
  private api = '';
  private sync = '';

  constructor(
    private readonly config: Config,
    private readonly run: RunSettings,
  ) {}

  get apiUrl(): string {
    return this.api;
  }

  get syncUrl(): string {
    return this.sync;
  }

  running(): BenchProcess[] {
    return this.all.filter((p) => p.running);
  }

  async startProduct(): Promise<void> {
    const apiPort = await freePort();
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      NODE_ENV: 'production',
      DATABASE_URL: this.run.applicationUrl,
      LEDGER_HMAC_KEY: this.run.ledgerKey,
      SESSION_SECRET: this.run.sessionSecret,
      REDIS_URL: this.config.redisUrl,
      REDIS_PREFIX: this.run.redisPrefix,
      ADMIN_TOKEN: this.run.adminToken,
      PARTITIONS: String(this.config.partitions),
      BATCH_SIZE: String(this.config.batchSize),
      // The hot seller sells about 3,000 a second: the limiter counts every sale, as in
      // production, and never refuses one (the default of 100 a second would refuse most).
      SELLER_RATE_LIMIT: '100000',
      LOG_LEVEL: process.env.BENCH_LOG_LEVEL ?? 'warn',
    };
    // Several workers on one machine cannot share a health port.
    delete env.WORKER_HEALTH_PORT;
    const api = new BenchProcess('api', tsxEntry('apps/api/src/index.ts', [...this.nodeArgs('api'), ...API_MEMORY]), {
      ...env,
      PORT: String(apiPort),
    });
    this.all.push(api);
    for (let i = 0; i < this.config.workers; i++) {
      this.all.push(
        new BenchProcess(
          `worker${i}`,
          tsxEntry('apps/worker/src/index.ts', [...this.nodeArgs(`worker${i}`), ...WORKER_MEMORY]),
          env,
        ),
      );
    }
    this.api = `http://127.0.0.1:${apiPort}`;
    await waitHttpOk(`${this.api}/readyz`, api);
  }

  /**
   * The sync server stands in for a production server too: it connects as the application role,
   * which also shows that its writes need no privilege the product lacks.
   */
  async startSync(): Promise<void> {
    const port = await freePort();
    const sync = new BenchProcess('sync', tsxEntry('bench/sync-server.ts', this.nodeArgs('sync')), {
      ...process.env,
      DATABASE_URL: this.run.applicationUrl,
      LEDGER_HMAC_KEY: this.run.ledgerKey,
      PORT: String(port),
    });
    this.all.push(sync);
    this.sync = `http://127.0.0.1:${port}`;
    await waitHttpOk(`${this.sync}/healthz`, sync, 90_000);
  }

  /**
   * The bare pipeline (bench/ceiling.ts): its API and its one worker, plain `node` on the copies
   * in `workDir` as its README runs them (no tsx: nothing of theirs is TypeScript). Returns the
   * API's URL once it answers.
   */
  async startCeiling(workDir: string, env: NodeJS.ProcessEnv): Promise<string> {
    const port = await freePort();
    const worker = new BenchProcess('ceil-worker', [...this.nodeArgs('ceil-worker'), join(workDir, 'worker.mjs')], env);
    const api = new BenchProcess('ceil-api', [...this.nodeArgs('ceil-api'), join(workDir, 'api.mjs')], {
      ...env,
      PORT: String(port),
    });
    this.all.push(worker, api);
    const url = `http://127.0.0.1:${port}`;
    // It has no health route: any answer (404 for GET /) says it listens.
    await waitHttpOk(`${url}/`, api, 30_000, true);
    if (!worker.running) throw new Error(`ceil-worker exited:\n${worker.recentLogs()}`);
    return url;
  }

  /** Stops the running processes `which` selects, reading their peak RSS first. */
  async stop(which: (p: BenchProcess) => boolean): Promise<void> {
    const stopping = this.running().filter(which);
    for (const p of stopping) this.lifetimePeakMiB.set(p.name, procStatusMiB(p.pid, 'VmHWM'));
    await Promise.all(stopping.map((p) => p.stop()));
  }

  async stopAll(): Promise<void> {
    await Promise.all(this.all.map((p) => p.stop()));
  }

  /** Peak RSS (VmHWM, MiB) of every process over its life, the running ones read now. */
  lifetimePeaks(): Map<string, number> {
    for (const p of this.running()) this.lifetimePeakMiB.set(p.name, procStatusMiB(p.pid, 'VmHWM'));
    return new Map(this.lifetimePeakMiB);
  }

  /** The warnings and errors the processes logged, as `name: "message" ×count`. */
  loggedWarnings(): string[] {
    return this.all.flatMap((p) => [...p.warnings].map(([msg, n]) => `${p.name}: "${msg}" ×${n}`));
  }

  /** The last lines each process wrote, for the message of a run that broke. */
  recentLogs(): string[] {
    return this.all.map((p) => p.recentLogs()).filter((logs) => logs.trim());
  }

  printProfiles(): void {
    const dir = this.run.profileDir;
    if (dir === undefined) return;
    log(`\nCPU profiles in ${dir} (main thread of each process):`);
    for (const p of this.all) {
      const own = join(dir, p.name);
      const profiles = existsSync(own)
        ? readdirSync(own)
            .filter((f) => f.endsWith('.cpuprofile'))
            .map((f) => summarizeProfile(join(own, f)))
        : [];
      const main = profiles.sort((a, b) => b.busyMs - a.busyMs)[0];
      log(main ? `${p.name}: ${formatProfile(main)}` : `${p.name}: no profile written`);
    }
  }

  // A directory per process: Node writes one profile per thread (tsx's loader hooks run on a
  // thread of their own), and the main thread's is the one that matters.
  private nodeArgs(name: string): string[] {
    const dir = this.run.profileDir;
    return dir === undefined ? [] : ['--cpu-prof', '--cpu-prof-dir', join(dir, name)];
  }
}

/**
 * Waits until every partition is leased and the leases are spread over all workers: a worker
 * that starts first takes every partition and gives them back one per lease tick, and measuring
 * before that settles would measure one worker.
 */
export async function waitForLeases(
  redis: ReturnType<typeof createRedis>,
  config: Config,
  redisPrefix: string,
  timeoutMs = 45_000,
): Promise<string> {
  const keys = Array.from({ length: config.partitions }, (_, p) => partitionLeaseKey(redisPrefix, p));
  const fairShare = Math.ceil(config.partitions / config.workers);
  const deadline = Date.now() + timeoutMs;
  let shares: number[] = [];
  for (;;) {
    const owners = await redis.mget(...keys);
    const byOwner = new Map<string, number>();
    for (const owner of owners) if (owner) byOwner.set(owner, (byOwner.get(owner) ?? 0) + 1);
    shares = [...byOwner.values()].sort((a, b) => b - a);
    const settled = owners.every((o) => o !== null) && byOwner.size === config.workers && (shares[0] ?? 0) <= fairShare;
    if (settled) return `${shares.join(' + ')} partitions over ${byOwner.size} workers`;
    if (Date.now() > deadline) return `not settled after ${timeoutMs / 1000} s: ${shares.join(' + ') || 'none'}`;
    await sleep(250);
  }
}
