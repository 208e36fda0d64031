// Throwaway PostgreSQL and Redis servers from the machine's own binaries, on a port and a data
// directory of their own. Used when nothing answers at DATABASE_URL / REDIS_URL and Docker is not
// running, and by the fault tests, which stop and restart servers that nobody else uses.
import { execFileSync, spawn } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { Socket } from 'node:net';
import { join } from 'node:path';

/** True when something accepts TCP connections on host:port. */
export function isListening(port, host = '127.0.0.1', timeoutMs = 1000) {
  return new Promise((resolve) => {
    const socket = new Socket();
    const done = (ok) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('error', () => done(false));
    socket.connect(port, host, () => done(true));
  });
}

export async function waitForPort(port, { timeoutMs = 20000, up = true } = {}) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if ((await isListening(port)) === up) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`port ${port} did not ${up ? 'open' : 'close'} within ${timeoutMs} ms`);
}

/** The directory of PostgreSQL's server binaries, or null when they are not installed. */
export function postgresBinDir() {
  const root = '/usr/lib/postgresql';
  if (existsSync(root)) {
    const versions = readdirSync(root).sort((a, b) => Number(b) - Number(a));
    for (const v of versions) if (existsSync(join(root, v, 'bin', 'initdb'))) return join(root, v, 'bin');
  }
  try {
    const initdb = execFileSync('sh', ['-c', 'command -v initdb'], { encoding: 'utf8' }).trim();
    return initdb ? initdb.replace(/\/initdb$/, '') : null;
  } catch {
    return null;
  }
}

export function hasRedisServer() {
  try {
    execFileSync('sh', ['-c', 'command -v redis-server'], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

// PostgreSQL refuses to run as root: run it as the `postgres` user when we are root.
const asRoot = process.getuid?.() === 0;
function asPostgres(command, args, options = {}) {
  return asRoot
    ? execFileSync('runuser', ['-u', 'postgres', '--', command, ...args], options)
    : execFileSync(command, args, options);
}

/**
 * Starts a PostgreSQL server (trust auth, user `postgres`) on `port` with its data in `dir`,
 * creating the cluster on first use. Returns { stop, start, kill }.
 */
export async function startPostgres({ port, dir }) {
  const bin = postgresBinDir();
  if (!bin) throw new Error('PostgreSQL server binaries not found (install postgresql)');
  if (!existsSync(join(dir, 'PG_VERSION'))) {
    rmSync(dir, { recursive: true, force: true });
    mkdirSync(dir, { recursive: true });
    if (asRoot) execFileSync('chown', ['postgres:postgres', dir]);
    chmodSync(dir, 0o700);
    asPostgres(join(bin, 'initdb'), ['-D', dir, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--no-sync'], {
      stdio: 'ignore',
    });
  }
  const pgCtl = (action, extra = []) =>
    asPostgres(join(bin, 'pg_ctl'), ['-D', dir, '-w', '-t', '30', ...extra, action], { stdio: 'ignore' });
  const start = async () => {
    pgCtl('start', [
      '-l',
      join(dir, 'server.log'),
      '-o',
      `-p ${port} -k ${dir} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200`,
    ]);
    await waitForPort(port);
  };
  await start();
  return {
    port,
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    start,
    stop: async () => {
      try {
        pgCtl('stop', ['-m', 'fast']);
      } catch {}
      await waitForPort(port, { up: false });
    },
    /** An abrupt crash: SIGKILL of the postmaster, as in a power cut. */
    kill: async () => {
      try {
        asPostgres(join(bin, 'pg_ctl'), ['-D', dir, 'kill', 'KILL', readPid(dir)], { stdio: 'ignore' });
      } catch {}
      await waitForPort(port, { up: false });
    },
  };
}

function readPid(dir) {
  return execFileSync('head', ['-1', join(dir, 'postmaster.pid')], { encoding: 'utf8' }).trim();
}

/** Starts a Redis server on `port`, with AOF (fsync every second) when asked; returns { stop, start }. */
export async function startRedis({ port, dir, appendonly = false, detached = false }) {
  mkdirSync(dir, { recursive: true });
  let child;
  const start = async () => {
    child = spawn(
      'redis-server',
      [
        '--port',
        String(port),
        '--bind',
        '127.0.0.1',
        '--save',
        '',
        '--appendonly',
        appendonly ? 'yes' : 'no',
        '--appendfsync',
        'everysec',
        '--dir',
        dir,
      ],
      { stdio: 'ignore', detached },
    );
    // A detached server outlives the script that started it (the quick start's services).
    if (detached) child.unref();
    await waitForPort(port);
  };
  await start();
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    start,
    stop: async () => {
      child?.kill('SIGKILL');
      await waitForPort(port, { up: false });
    },
  };
}
