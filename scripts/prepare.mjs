// What `npm start` and `npm test` do before anything else on a fresh machine: install the locked
// dependencies when they are missing, and make sure PostgreSQL and Redis answer, starting them
// (Docker Compose, else the local server binaries) when they do not.
import { execFileSync, execSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
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

/**
 * Makes PostgreSQL and Redis answer at the given URLs, or exits with one line saying what to do.
 * Returns the URLs to use: those given, or, when it started them with Docker Compose (which
 * requires passwords), the same with the development passwords of `secrets`.
 */
export async function ensureServices({ databaseUrl, redisUrl, secrets = developmentSecrets() }) {
  const pg = localPort(databaseUrl, 5432);
  const redis = localPort(redisUrl, 6379);
  const pgUp = await isListening(pg.port, pg.local ? '127.0.0.1' : pg.host);
  const redisUp = await isListening(redis.port, redis.local ? '127.0.0.1' : redis.host);
  if (pgUp && redisUp) return { databaseUrl, redisUrl };

  for (const [up, s, name, variable] of [
    [pgUp, pg, 'PostgreSQL', 'DATABASE_URL'],
    [redisUp, redis, 'Redis', 'REDIS_URL'],
  ]) {
    if (!up && !s.local) fail(`${name} does not answer at ${s.host}:${s.port}; start it or fix ${variable}`);
  }

  if (dockerRuns()) {
    console.log('Starting PostgreSQL and Redis with Docker Compose (published on 127.0.0.1 only)…');
    execSync('docker compose -f docker-compose.yml -f docker-compose.local.yml up -d postgres redis', {
      cwd: root,
      stdio: 'inherit',
      env: {
        ...process.env,
        POSTGRES_PASSWORD: secrets.ownerPassword,
        APP_DB_PASSWORD: secrets.appPassword,
        REDIS_PASSWORD: secrets.redisPassword,
        ADMIN_TOKEN: secrets.adminToken,
        LEDGER_HMAC_KEY: secrets.ledgerKey,
        SESSION_SECRET: secrets.sessionSecret,
      },
    });
    await waitForPort(pg.port, { timeoutMs: 60000 });
    await waitForPort(redis.port, { timeoutMs: 60000 });
    const owner = new URL(databaseUrl);
    owner.username = 'charge_sales_owner';
    owner.password = secrets.ownerPassword;
    const queue = new URL(redisUrl);
    queue.password = secrets.redisPassword;
    return { databaseUrl: owner.toString(), redisUrl: queue.toString() };
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
  return { databaseUrl, redisUrl };
}

/**
 * The development secrets of this checkout, made once and kept in .tmp/ (never committed): the
 * admin token stays valid across restarts, and the ledger key too, or every restart would make
 * the ledger's hash chains fail to verify.
 */
export function developmentSecrets() {
  const file = join(root, '.tmp', 'dev-secrets.json');
  let secrets = {};
  try {
    secrets = JSON.parse(readFileSync(file, 'utf8'));
  } catch {}
  const made = {
    adminToken: `dev-${randomBytes(24).toString('base64url')}`,
    ledgerKey: randomBytes(32).toString('hex'),
    sessionSecret: randomBytes(32).toString('hex'),
    appPassword: randomBytes(16).toString('hex'),
    ownerPassword: randomBytes(16).toString('hex'),
    redisPassword: randomBytes(16).toString('hex'),
  };
  const complete = { ...made, ...secrets };
  if (Object.keys(made).some((key) => !secrets[key])) {
    mkdirSync(dirname(file), { recursive: true });
    writeFileSync(file, `${JSON.stringify(complete, null, 2)}\n`, { mode: 0o600 });
  }
  return complete;
}

function fail(line) {
  console.error(line);
  process.exit(1);
}
