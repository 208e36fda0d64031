// `npm start`: the whole system on one machine. Installs what is missing, makes sure PostgreSQL
// and Redis answer, applies migrations as the tables' owner, then runs the API and one worker as
// the application role (the privileges production has) until Ctrl-C or SIGTERM.
//
// The processes are started here directly (node with the arguments of the package.json scripts),
// not through `npm run`: npm does not pass SIGTERM on to a script's process, and neither does the
// `sh -c` it runs the script with, so a stopped `npm run` leaves its node process running. For the
// same reason this process watches its own parent: when `npm start` gets SIGTERM, npm ends the
// shell it started this with, and only the shell; the change of parent is the one sign of it.
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { developmentSecrets, ensureDependencies, ensureServices, root } from './prepare.mjs';

const env = { ...process.env };

/** The processes running now. */
const running = new Set();
let stopping = false;
/** Set when a process ended by itself, or did not stop cleanly: what this process exits with. */
let failure = 0;
// The processes' own limit for a graceful stop (their config's default), and a little more: past
// it a process is stuck, not busy, and is killed.
const killAfterMs = (Number(env.SHUTDOWN_TIMEOUT_MS) || 10_000) + 2_000;

/** Asks every running process to stop (SIGTERM: they finish the work in hand), once. */
function stop() {
  if (stopping) return;
  stopping = true;
  for (const child of running) {
    child.kill('SIGTERM');
    setTimeout(() => {
      if (!running.has(child)) return;
      console.error(`${child.name} did not stop within ${killAfterMs} ms; killing it`);
      child.kill('SIGKILL');
    }, killAfterMs).unref();
  }
  if (running.size === 0) process.exit(failure);
}
process.on('SIGTERM', stop);
process.on('SIGHUP', stop);
process.on('SIGINT', () => {
  // A second Ctrl-C: no more waiting.
  if (stopping) for (const child of running) child.kill('SIGKILL');
  stop();
});
const parent = process.ppid;
setInterval(() => {
  if (process.ppid !== parent) stop();
}, 500).unref();
// However this process ends (an exception, an exit of its own), the processes do not stay behind.
process.on('exit', () => {
  for (const child of running) child.kill('SIGTERM');
});
// Nobody reads our output any more (the terminal closed, the pipe's reader ended): stop, as a
// process writing to a closed pipe would, but gracefully.
process.stdout.on('error', stop);
process.stderr.on('error', stop);

const production = env.NODE_ENV === 'production';
const secrets = developmentSecrets();
if (production && (!env.ADMIN_TOKEN || !env.LEDGER_HMAC_KEY || !env.SESSION_SECRET)) {
  console.error('ADMIN_TOKEN, LEDGER_HMAC_KEY and SESSION_SECRET are required in production');
  process.exit(1);
}
// Kept between starts (in .tmp/dev-secrets.json): a token pasted into a script keeps working,
// and the ledger's hash chains keep verifying.
env.ADMIN_TOKEN ||= secrets.adminToken;
env.LEDGER_HMAC_KEY ||= secrets.ledgerKey;
env.SESSION_SECRET ||= secrets.sessionSecret;
env.REDIS_URL ??= 'redis://127.0.0.1:6379';
env.PORT ??= '3000';

ensureDependencies();
// Only DATABASE_URL given: it is used for everything (a superuser is allowed in development,
// with a warning). Neither given: migrate as the local superuser, run as the role `cs_app`.
const split = !env.DATABASE_URL || !!env.MIGRATION_DATABASE_URL;
const services = await ensureServices({
  databaseUrl: env.MIGRATION_DATABASE_URL ?? env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/charge_sales',
  redisUrl: env.REDIS_URL,
  secrets,
});
env.REDIS_URL = services.redisUrl;
if (split) {
  env.MIGRATION_DATABASE_URL = services.databaseUrl;
  if (!env.DATABASE_URL) {
    const app = new URL(services.databaseUrl);
    app.username = 'cs_app';
    app.password = secrets.appPassword;
    env.DATABASE_URL = app.toString();
  }
} else {
  env.DATABASE_URL = services.databaseUrl;
}

// Imported only now: on a fresh checkout ensureDependencies() has just installed it.
const { prettyFactory } = await import('pino-pretty');

// In a terminal, the processes' JSON log lines are shown by pino-pretty, one line an event;
// anywhere else (a pipe, a log collector) they pass unchanged. Lines that are not pino's (a crash's
// stack, a config error) pass unchanged either way.
const prettify = prettyFactory({
  singleLine: true,
  translateTime: 'SYS:HH:MM:ss.l',
  ignore: 'pid,hostname,service',
  messageFormat: '{if service}{service}: {end}{msg}',
  // An error's stack stays in the line, as JSON, instead of spreading over many.
  errorLikeObjectKeys: [],
});
function isPinoLine(line) {
  if (!line.startsWith('{')) return false;
  try {
    const entry = JSON.parse(line);
    return typeof entry?.level === 'number' && 'time' in entry;
  } catch {
    return false;
  }
}
const asIs = (line) => `${line}\n`;
const pretty = (line) => (isPinoLine(line) ? (prettify(line) ?? asIs(line)) : asIs(line));

/** Copies a process's output to ours whole lines at a time, so two processes' lines never mix. */
function forwardLines(from, to) {
  const format = to.isTTY ? pretty : asIs;
  let partial = '';
  from.setEncoding('utf8');
  from.on('data', (chunk) => {
    const lines = (partial + chunk).split('\n');
    partial = lines.pop() ?? '';
    if (lines.length > 0) to.write(lines.map(format).join(''));
  });
  from.on('end', () => {
    if (partial) to.write(format(partial));
  });
}

// One place says how each process runs: its script in package.json.
const scripts = JSON.parse(readFileSync(join(root, 'package.json'), 'utf8')).scripts ?? {};
function nodeArguments(script) {
  const command = scripts[script] ?? '';
  const [program, ...args] = command.trim().split(/\s+/);
  if (program !== 'node' || /["'`$&|;<>\\]/.test(command))
    throw new Error(`npm start runs the package.json script "${script}" as a plain "node …" command, not: ${command}`);
  return args;
}
// Each process also stops on its own when this one goes without telling it (kill -9): every
// second it checks that its parent is still the one that started it, and if not sends itself
// SIGTERM (which it handles as any other SIGTERM).
const watchParent =
  "--import=data:text/javascript,const p=process.ppid;setInterval(()=>process.ppid===p||process.kill(process.pid,'SIGTERM'),1e3).unref()";

/** Starts a package.json script's node process; resolves with whether it ended cleanly. */
function run(script) {
  const child = spawn(process.execPath, [watchParent, ...nodeArguments(script)], {
    cwd: root,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child.name = script;
  running.add(child);
  forwardLines(child.stdout, process.stdout);
  forwardLines(child.stderr, process.stderr);
  child.on('error', (error) => console.error(`${script}: ${error.message}`));
  // 'close', not 'exit': its output is all written out by then.
  child.ended = new Promise((resolve) =>
    child.on('close', (code, signal) => {
      running.delete(child);
      const asked = stopping && (signal === 'SIGTERM' || signal === 'SIGINT');
      resolve({ clean: code === 0 || asked, code, signal });
    }),
  );
  return child;
}

const migrated = await run('db:migrate').ended;
if (!migrated.clean || stopping) process.exit(migrated.clean ? failure : (migrated.code ?? 1));

const children = [run('start:api'), run('start:worker')];
for (const child of children) {
  child.ended.then(({ clean, code, signal }) => {
    if (!clean) failure ||= code || 1;
    if (!stopping) {
      console.error(`${child.name} exited (${signal ?? `code ${code}`}); stopping the rest`);
      failure ||= code || 1;
      stop();
    }
    if (running.size === 0) process.exit(failure);
  });
}

// The banner comes once the API answers, so it is not lost among the processes' start-up logs.
const baseUrl = `http://127.0.0.1:${env.PORT}`;
let ready = false;
for (let i = 0; i < 300 && !ready && !stopping; i++) {
  ready = await fetch(`${baseUrl}/readyz`).then(
    (r) => r.ok,
    () => false,
  );
  if (!ready) await new Promise((r) => setTimeout(r, 100));
}
if (ready && !stopping) {
  console.log(`\nCharge Sales runs on ${baseUrl}  (API reference: ${baseUrl}/docs, operator pages: ${baseUrl}/admin)`);
  const kept = env.ADMIN_TOKEN === secrets.adminToken ? '  (kept in .tmp/dev-secrets.json between starts)' : '';
  console.log(`Admin token: ${env.ADMIN_TOKEN}${kept}`);
  console.log(`Try: curl -H "Authorization: Bearer ${env.ADMIN_TOKEN}" ${baseUrl}/api/sellers\n`);
} else if (!stopping) {
  console.error(`the API does not answer ${baseUrl}/readyz after 30 s; see its log above`);
}
