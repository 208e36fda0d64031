import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import postgres from 'postgres';
import { freePort } from './system.ts';

/** Debian's PgBouncer (1.18 on bookworm: no named prepared statements in transaction pooling). */
export const PGBOUNCER_BINARY = '/usr/sbin/pgbouncer';

export interface PgBouncerOptions {
  /** The PostgreSQL server behind it. */
  upstream: { host: string; port: number };
  /** Database names clients ask for → the database on the server, and a pool size of its own if any. */
  databases: Record<string, { dbname: string; poolSize?: number }>;
  /** Roles clients log in as, with their passwords (md5 to the client, the same to the server). */
  users: Array<{ name: string; password: string }>;
  /** Server connections per database and role (default_pool_size). */
  poolSize: number;
  poolMode?: 'session' | 'transaction' | 'statement';
}

export interface PgBouncer {
  host: string;
  port: number;
  /** The pgbouncer.ini it runs with, for the report. */
  config: string;
  /** A URL through the pooler: the role and password as given, the database by its name here. */
  url(database: string, user: string, password: string): string;
  /** One line per SHOW command row of the admin console (database `pgbouncer`). */
  show<T = Record<string, unknown>>(what: 'POOLS' | 'STATS' | 'SERVERS' | 'CLIENTS' | 'DATABASES'): Promise<T[]>;
  /** What it logged, for a failing test's message. */
  logs(lines?: number): string;
  /** SIGTERM (immediate shutdown), then waits for the process to exit; SIGKILL after 5 s. */
  stop(): Promise<void>;
}

/**
 * A PgBouncer of the test's own, from the machine's binary, on a free loopback port, with its
 * configuration and auth file in a temporary directory that `stop()` removes. It refuses to run as
 * root, so under root it drops to the `postgres` user (`-u`), which is given the directory.
 */
export async function startPgBouncer(options: PgBouncerOptions): Promise<PgBouncer> {
  const dir = mkdtempSync(join(tmpdir(), 'cs-pgbouncer-'));
  const port = await freePort();
  const host = '127.0.0.1';
  const admin = { name: 'cs_bouncer_admin', password: randomBytes(12).toString('hex') };
  const quote = (value: string) => `"${value.replaceAll('"', '""')}"`;
  writeFileSync(
    join(dir, 'userlist.txt'),
    [...options.users, admin].map((u) => `${quote(u.name)} ${quote(u.password)}\n`).join(''),
  );
  const databases = Object.entries(options.databases).map(
    ([name, db]) =>
      `${name} = host=${options.upstream.host} port=${options.upstream.port} dbname=${db.dbname}` +
      (db.poolSize ? ` pool_size=${db.poolSize}` : ''),
  );
  const config = [
    '[databases]',
    ...databases,
    '',
    '[pgbouncer]',
    `listen_addr = ${host}`,
    `listen_port = ${port}`,
    // No Unix socket: two test runs would fight over /tmp/.s.PGSQL.<port>.
    'unix_socket_dir =',
    'auth_type = md5',
    `auth_file = ${join(dir, 'userlist.txt')}`,
    `admin_users = ${admin.name}`,
    `pool_mode = ${options.poolMode ?? 'transaction'}`,
    `default_pool_size = ${options.poolSize}`,
    'min_pool_size = 0',
    'reserve_pool_size = 0',
    'max_client_conn = 500',
    // Startup parameters beyond the ones PgBouncer tracks are refused: none is ignored.
    'ignore_startup_parameters =',
    'log_connections = 0',
    'log_disconnections = 0',
    'log_pooler_errors = 1',
    '',
  ].join('\n');
  writeFileSync(join(dir, 'pgbouncer.ini'), config);

  const asRoot = process.getuid?.() === 0;
  if (asRoot) execFileSync('chown', ['-R', 'postgres:postgres', dir]);
  chmodSync(dir, 0o700);
  const child: ChildProcess = spawn(
    PGBOUNCER_BINARY,
    [...(asRoot ? ['-u', 'postgres'] : []), join(dir, 'pgbouncer.ini')],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  const output: string[] = [];
  const keep = (chunk: Buffer) => {
    output.push(chunk.toString());
    if (output.length > 500) output.splice(0, output.length - 400);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  // A test process that ends without stopping it must not leave it listening.
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);
  const exited = new Promise<void>((resolve) =>
    child.once('exit', () => {
      process.off('exit', killOnExit);
      resolve();
    }),
  );
  const logs = (lines = 60) => output.join('').split('\n').slice(-lines).join('\n');

  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await adminSql?.end({ timeout: 1 }).catch(() => {});
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const killer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(killer);
    }
    rmSync(dir, { recursive: true, force: true });
  };

  let adminSql: postgres.Sql | undefined;
  try {
    await waitForListening(host, port, child, logs);
  } catch (error) {
    await stop();
    throw error;
  }
  adminSql = postgres({
    host,
    port,
    database: 'pgbouncer',
    username: admin.name,
    password: admin.password,
    max: 1,
    // The admin console speaks the simple query protocol only, and has no pg_type to read.
    fetch_types: false,
    prepare: false,
    onnotice: () => {},
  });
  const adminConsole = adminSql;

  return {
    host,
    port,
    config,
    url: (database, user, password) =>
      `postgres://${encodeURIComponent(user)}:${encodeURIComponent(password)}@${host}:${port}/${encodeURIComponent(database)}`,
    show: async <T>(what: string) => (await adminConsole.unsafe(`SHOW ${what}`)) as unknown as T[],
    logs,
    stop,
  };
}

async function waitForListening(host: string, port: number, child: ChildProcess, logs: () => string) {
  const deadline = Date.now() + 10_000;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`pgbouncer exited:\n${logs()}`);
    const open = await new Promise<boolean>((resolve) => {
      const socket = new Socket();
      const done = (ok: boolean) => {
        socket.destroy();
        resolve(ok);
      };
      socket.setTimeout(500, () => done(false));
      socket.once('error', () => done(false));
      socket.connect(port, host, () => done(true));
    });
    if (open) return;
    await sleep(50);
  }
  throw new Error(`pgbouncer did not listen on ${host}:${port} within 10 s:\n${logs()}`);
}
