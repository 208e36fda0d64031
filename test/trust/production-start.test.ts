import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { migrateDatabase, urlAsRole } from '@cs/db';
import type postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { testSql } from '../support/db.ts';
import { freePort } from '../support/system.ts';

const root = join(import.meta.dirname, '..', '..');
const API = 'apps/api/src/index.ts';
const WORKER = 'apps/worker/src/index.ts';

/** Variables the processes read: none of them is inherited from the test's own environment. */
const CONFIG_VARIABLES = [
  'NODE_ENV',
  'PORT',
  'DATABASE_URL',
  'MIGRATION_DATABASE_URL',
  'REDIS_URL',
  'REDIS_PREFIX',
  'ADMIN_TOKEN',
  'LEDGER_HMAC_KEY',
  'SESSION_SECRET',
  'SESSION_IDLE_MS',
  'SESSION_MAX_MS',
  'CREDIT_SECOND_APPROVAL_ABOVE',
  'METRICS_TOKEN',
  'MAX_PENDING_SUBMISSIONS',
  'PARTITIONS',
  'LOG_LEVEL',
  'DB_POOL_SIZE',
  'BATCH_SIZE',
  'PARTITION_LEASE_MS',
  'JOB_LOCK_MS',
  'STALLED_INTERVAL_MS',
  'WORKER_HEALTH_PORT',
  'SHUTDOWN_TIMEOUT_MS',
  'PGPASSWORD',
  'PGUSER',
  'PGAPPNAME',
];

let processes = 0;

/** A valid production environment: every refusal below changes exactly one thing in it. */
async function productionEnv(overrides: Record<string, string | undefined> = {}): Promise<Record<string, string>> {
  const env: Record<string, string | undefined> = { ...process.env };
  for (const name of CONFIG_VARIABLES) delete env[name];
  Object.assign(env, {
    NODE_ENV: 'production',
    DATABASE_URL: inject('databaseUrl'),
    REDIS_URL: inject('redisUrl'),
    REDIS_PREFIX: `${inject('redisPrefix')}-prod-${process.pid}-${++processes}`,
    ADMIN_TOKEN: randomBytes(20).toString('hex'),
    LEDGER_HMAC_KEY: randomBytes(32).toString('hex'),
    SESSION_SECRET: randomBytes(32).toString('hex'),
    PORT: String(await freePort()),
    LOG_LEVEL: 'warn',
    DB_POOL_SIZE: '3',
    ...overrides,
  });
  for (const [name, value] of Object.entries(env)) if (value === undefined) delete env[name];
  return env as Record<string, string>;
}

interface Started {
  child: ChildProcess;
  stdout: () => string;
  stderr: () => string;
  /** Non-empty lines of stderr. */
  errorLines: () => string[];
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  describe: () => string;
}

function start(entry: string, env: Record<string, string>): Started {
  const child = spawn(process.execPath, ['--import', 'tsx', entry], {
    cwd: root,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);
  let out = '';
  let err = '';
  child.stdout?.on('data', (chunk: Buffer) => {
    out += chunk.toString();
  });
  child.stderr?.on('data', (chunk: Buffer) => {
    err += chunk.toString();
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) =>
    child.once('close', (code, signal) => {
      process.off('exit', killOnExit);
      resolve({ code, signal });
    }),
  );
  const errorLines = () => err.split('\n').filter((line) => line.trim() !== '');
  return {
    child,
    stdout: () => out,
    stderr: () => err,
    errorLines,
    exited,
    describe: () => `${entry}\n--- stderr ---\n${err}--- stdout ---\n${out.slice(-2000)}`,
  };
}

/** At most this many processes starting at once: 2 shared cores. */
const limit = (() => {
  let running = 0;
  const waiting: Array<() => void> = [];
  return async <T>(task: () => Promise<T>): Promise<T> => {
    while (running >= 3) await new Promise<void>((resolve) => waiting.push(resolve));
    running++;
    try {
      return await task();
    } finally {
      running--;
      waiting.shift()?.();
    }
  };
})();

/** Runs a process that must refuse to start; resolves with its exit and its output. */
function runRefused(entry: string, env: Record<string, string>, timeoutMs = 20_000) {
  return limit(async () => {
    const proc = start(entry, env);
    const timer = setTimeout(() => proc.child.kill('SIGKILL'), timeoutMs);
    const exit = await proc.exited;
    clearTimeout(timer);
    return { ...exit, lines: proc.errorLines(), describe: proc.describe };
  });
}

/** Asserts the one clear line: exit code 1, exactly one non-empty stderr line, naming the problem. */
async function expectRefused(entry: string, env: Record<string, string>, problem: RegExp) {
  const run = await runRefused(entry, env);
  expect(run.signal, `killed: it did not exit by itself\n${run.describe()}`).toBeNull();
  expect(run.code, run.describe()).toBe(1);
  expect(run.lines, run.describe()).toHaveLength(1);
  expect(run.lines[0], run.describe()).toMatch(problem);
  return run.lines[0] as string;
}

async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs: number, proc: Started) {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (proc.child.exitCode !== null) throw new Error(`exited before ${what}: ${proc.describe()}`);
    const value = await probe().catch(() => undefined);
    if (value !== undefined) return value;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`no ${what} within ${timeoutMs} ms: ${proc.describe()}`);
}

const readyz = (port: string) => async () => {
  const res = await fetch(`http://127.0.0.1:${port}/readyz`, { signal: AbortSignal.timeout(2000) });
  return res.status === 200 ? res.status : undefined;
};

async function stop(proc: Started) {
  if (proc.child.exitCode !== null || proc.child.signalCode !== null) return proc.exited;
  const timer = setTimeout(() => proc.child.kill('SIGKILL'), 15_000);
  proc.child.kill('SIGTERM');
  const exit = await proc.exited;
  clearTimeout(timer);
  return exit;
}

/** `ADMIN_TOKEN=<value>` or `ADMIN_TOKEN: <value>` literals written in the repository's docs and config. */
function documentedAdminTokens(): Array<{ file: string; value: string }> {
  const found: Array<{ file: string; value: string }> = [];
  for (const file of ['.env.example', 'docker-compose.yml', 'README.md']) {
    const text = readFileSync(join(root, file), 'utf8');
    for (const match of text.matchAll(/\bADMIN_TOKEN\s*[=:][ \t]*(["']?)([^\s"'`]+)\1/g)) {
      const value = match[2] ?? '';
      // Interpolations (`${ADMIN_TOKEN:?…}`, `$TOKEN`) and elisions (`...`) are not literal tokens.
      if (value.startsWith('$') || /^\.+$|^…$/.test(value)) continue;
      found.push({ file, value });
    }
  }
  return found;
}

describe('production start refuses, each with one clear line, exactly these', () => {
  const ownerUrl = inject('ownerDatabaseUrl');
  const suffix = `${process.pid}_${randomBytes(3).toString('hex')}`;
  /** A role that owns its tables without being a superuser. */
  const tableOwnerRole = `cs_test_table_owner_${suffix}`;
  const tableOwnerDb = `${new URL(ownerUrl).pathname.slice(1)}_owned_${suffix}`;
  /** A role that owns nothing itself but is a member of the owning role: the owner's powers. */
  const ownerMemberRole = `cs_test_owner_member_${suffix}`;
  let tableOwnerUrl: string;
  let ownerMemberUrl: string;
  let owner: postgres.Sql;

  beforeAll(async () => {
    owner = testSql();
    await owner.unsafe(`drop database if exists "${tableOwnerDb}" with (force)`);
    await owner.unsafe(`drop role if exists "${tableOwnerRole}"`);
    await owner.unsafe(`drop role if exists "${ownerMemberRole}"`);
    await owner.unsafe(`create role "${tableOwnerRole}" login createdb`);
    await owner.unsafe(`create role "${ownerMemberRole}" login in role "${tableOwnerRole}"`);
    const url = new URL(ownerUrl);
    url.pathname = `/${tableOwnerDb}`;
    tableOwnerUrl = urlAsRole(url.toString(), tableOwnerRole, '');
    ownerMemberUrl = urlAsRole(url.toString(), ownerMemberRole, '');
    // Created and migrated by that role, so the database and its tables are its own.
    await migrateDatabase(tableOwnerUrl);
    const check = testSql(url.toString());
    try {
      const [state] = await check`
        select (select rolsuper from pg_roles where rolname = ${tableOwnerRole}) as super,
               (select count(*)::int from pg_tables where schemaname = 'public' and tableowner = ${tableOwnerRole}) as tables`;
      expect(state).toEqual({ super: false, tables: 13 });
    } finally {
      await check.end();
    }
  });
  afterAll(async () => {
    if (!owner) return;
    await owner.unsafe(`drop database if exists "${tableOwnerDb}" with (force)`).catch(() => {});
    await owner.unsafe(`drop role if exists "${ownerMemberRole}"`).catch(() => {});
    await owner.unsafe(`drop role if exists "${tableOwnerRole}"`).catch(() => {});
    await owner.end();
  });

  describe.concurrent('refusals', () => {
    it('a superuser DATABASE_URL: api and worker', async () => {
      const [api, worker] = await Promise.all([
        expectRefused(API, await productionEnv({ DATABASE_URL: ownerUrl }), /superuser/),
        expectRefused(WORKER, await productionEnv({ DATABASE_URL: ownerUrl }), /superuser/),
      ]);
      expect(api).toMatch(/^api: /);
      expect(worker).toMatch(/^worker: /);
    });

    it('a DATABASE_URL of the tables’ owner, not a superuser: api and worker', async () => {
      const [api, worker] = await Promise.all([
        expectRefused(API, await productionEnv({ DATABASE_URL: tableOwnerUrl }), /owner/),
        expectRefused(WORKER, await productionEnv({ DATABASE_URL: tableOwnerUrl }), /owner/),
      ]);
      for (const line of [api, worker]) {
        expect(line).toContain(tableOwnerRole);
        expect(line).not.toMatch(/superuser/);
      }
    });

    it('a DATABASE_URL of a member of the owning role (it can do all the owner can): api', async () => {
      const line = await expectRefused(API, await productionEnv({ DATABASE_URL: ownerMemberUrl }), /owner/);
      expect(line).toContain(ownerMemberRole);
    });

    it('an ADMIN_TOKEN of 31 characters', async () => {
      await expectRefused(
        API,
        await productionEnv({ ADMIN_TOKEN: randomBytes(16).toString('hex').slice(0, 31) }),
        /ADMIN_TOKEN.*32/,
      );
    });

    it('an ADMIN_TOKEN copied from .env.example, docker-compose.yml or the README', async () => {
      const documented = documentedAdminTokens();
      expect(documented.map(({ file }) => file)).toContain('.env.example');
      await Promise.all(
        documented.map(async ({ value }) =>
          expectRefused(
            API,
            await productionEnv({ ADMIN_TOKEN: value }),
            value.length >= 32 ? /ADMIN_TOKEN.*placeholder/ : /ADMIN_TOKEN.*32/,
          ),
        ),
      );
    });

    it('a missing LEDGER_HMAC_KEY: api and worker', async () => {
      await Promise.all([
        expectRefused(API, await productionEnv({ LEDGER_HMAC_KEY: undefined }), /LEDGER_HMAC_KEY.*required/),
        expectRefused(WORKER, await productionEnv({ LEDGER_HMAC_KEY: undefined }), /LEDGER_HMAC_KEY.*required/),
      ]);
    });

    it('a missing, short, placeholder or reused SESSION_SECRET: the api', async () => {
      const admin = randomBytes(20).toString('hex');
      await Promise.all([
        expectRefused(API, await productionEnv({ SESSION_SECRET: undefined }), /SESSION_SECRET.*required/),
        expectRefused(API, await productionEnv({ SESSION_SECRET: 'a'.repeat(31) }), /SESSION_SECRET.*32/),
        expectRefused(
          API,
          await productionEnv({ SESSION_SECRET: 'replace-with-a-random-session-secret-of-32-or-more-characters' }),
          /SESSION_SECRET.*placeholder/,
        ),
        expectRefused(
          API,
          await productionEnv({ ADMIN_TOKEN: admin, SESSION_SECRET: admin }),
          /SESSION_SECRET.*ADMIN_TOKEN/,
        ),
      ]);
    });

    it('a LEDGER_HMAC_KEY of 31 characters: api and worker', async () => {
      const key = randomBytes(16).toString('hex').slice(0, 31);
      await Promise.all([
        expectRefused(API, await productionEnv({ LEDGER_HMAC_KEY: key }), /LEDGER_HMAC_KEY.*32/),
        expectRefused(WORKER, await productionEnv({ LEDGER_HMAC_KEY: key }), /LEDGER_HMAC_KEY.*32/),
      ]);
    });
  });

  describe.concurrent('and nothing else', () => {
    it('production with a valid environment and a passwordless application URL: the API is ready, the worker consumes', async () => {
      const url = new URL(inject('databaseUrl'));
      expect(url.password).not.toBe('');
      url.password = '';
      const env = await productionEnv({ DATABASE_URL: url.toString() });
      const workerHealth = String(await freePort());
      const [api, worker] = await limit(async () => {
        const api = start(API, env);
        const worker = start(WORKER, { ...env, WORKER_HEALTH_PORT: workerHealth });
        try {
          await waitFor('readyz 200', readyz(env.PORT as string), 30_000, api);
          // The worker is up and holds partitions: its health answer lists them.
          const partitions = await waitFor(
            'a partition held by the worker',
            async () => {
              const res = await fetch(`http://127.0.0.1:${workerHealth}/`, { signal: AbortSignal.timeout(2000) });
              const body = (await res.json()) as { partitions: number[] };
              return body.partitions.length > 0 ? body.partitions : undefined;
            },
            30_000,
            worker,
          );
          expect(partitions.length).toBeGreaterThan(0);
          // Still running a moment later, and neither said anything on stderr.
          await new Promise((resolve) => setTimeout(resolve, 1000));
          expect(api.child.exitCode, api.describe()).toBeNull();
          expect(worker.child.exitCode, worker.describe()).toBeNull();
          expect(api.errorLines(), api.describe()).toEqual([]);
          expect(worker.errorLines(), worker.describe()).toEqual([]);
        } finally {
          const exits = await Promise.all([stop(api), stop(worker)]);
          expect(exits, `${api.describe()}\n${worker.describe()}`).toEqual([
            { code: 0, signal: null },
            { code: 0, signal: null },
          ]);
        }
        return [api, worker];
      });
      expect(api.stderr()).toBe('');
      expect(worker.stderr()).toBe('');
    });

    it('development with a superuser URL: the API starts, with one warning line', async () => {
      const env = await productionEnv({ NODE_ENV: 'development', DATABASE_URL: ownerUrl });
      await limit(async () => {
        const api = start(API, env);
        try {
          await waitFor('readyz 200', readyz(env.PORT as string), 30_000, api);
          const lines = api.errorLines();
          expect(lines, api.describe()).toHaveLength(1);
          expect(lines[0]).toMatch(/warning/);
          expect(lines[0]).toMatch(/superuser/);
        } finally {
          expect(await stop(api), api.describe()).toEqual({ code: 0, signal: null });
        }
      });
    });
  });
});
