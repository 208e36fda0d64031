// What `npm start` and `npm test` do before anything else on a fresh machine: install the locked
// dependencies when they are missing, and make sure PostgreSQL and Redis answer, starting them
// (Docker Compose, else the local server binaries) when they do not.
import { execFileSync, execSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  hasRedisServer,
  isListening,
  postgresBinDir,
  startPostgres,
  startRedis,
  waitForPort,
} from './local-services.mjs';

export const root = join(dirname(fileURLToPath(import.meta.url)), '..');

export function ensureDependencies() {
  if (existsSync(join(root, 'node_modules', '.package-lock.json')) && existsSync(join(root, 'node_modules', 'tsx')))
    return;
  console.log('Installing dependencies from package-lock.json (npm ci)…');
  execSync('npm ci --no-audit --no-fund', { cwd: root, stdio: 'inherit' });
}

function localPort(url, defaultPort) {
  const u = new URL(url);
  const local = ['127.0.0.1', 'localhost', '::1', '[::1]'].includes(u.hostname);
  return { local, port: Number(u.port) || defaultPort, host: u.hostname };
}

function dockerRuns() {
  try {
    execFileSync('docker', ['info'], { stdio: 'ignore', timeout: 5000 });
    return true;
  } catch {
    return false;
  }
}

/** Makes PostgreSQL and Redis answer at the given URLs, or exits with one line saying what to do. */
export async function ensureServices({ databaseUrl, redisUrl }) {
  const pg = localPort(databaseUrl, 5432);
  const redis = localPort(redisUrl, 6379);
  const pgUp = await isListening(pg.port, pg.local ? '127.0.0.1' : pg.host);
  const redisUp = await isListening(redis.port, redis.local ? '127.0.0.1' : redis.host);
  if (pgUp && redisUp) return;

  for (const [up, s, name, variable] of [
    [pgUp, pg, 'PostgreSQL', 'DATABASE_URL'],
    [redisUp, redis, 'Redis', 'REDIS_URL'],
  ]) {
    if (!up && !s.local) fail(`${name} does not answer at ${s.host}:${s.port}; start it or fix ${variable}`);
  }

  if (dockerRuns()) {
    console.log('Starting PostgreSQL and Redis with Docker Compose…');
    execSync('docker compose up -d postgres redis', { cwd: root, stdio: 'inherit' });
    await waitForPort(pg.port, { timeoutMs: 60000 });
    await waitForPort(redis.port, { timeoutMs: 60000 });
    return;
  }
  const dataDir = join(root, '.tmp', 'services');
  mkdirSync(dataDir, { recursive: true });
  if (!pgUp) {
    if (!postgresBinDir())
      fail(`PostgreSQL does not answer on port ${pg.port}: install PostgreSQL 15+ or Docker, or set DATABASE_URL`);
    console.log(`Starting a local PostgreSQL on port ${pg.port} (data in .tmp/services)…`);
    await startPostgres({ port: pg.port, dir: `/tmp/charge-sales-pg-${pg.port}` });
  }
  if (!redisUp) {
    if (!hasRedisServer())
      fail(`Redis does not answer on port ${redis.port}: install Redis 7+ or Docker, or set REDIS_URL`);
    console.log(`Starting a local Redis on port ${redis.port}…`);
    await startRedis({ port: redis.port, dir: join(dataDir, `redis-${redis.port}`), detached: true });
  }
}

function fail(line) {
  console.error(line);
  process.exit(1);
}
