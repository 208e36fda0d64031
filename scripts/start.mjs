// `npm start`: the whole system on one machine. Installs what is missing, makes sure PostgreSQL
// and Redis answer, applies migrations as the tables' owner, then runs the API and one worker as
// the application role (the privileges production has) until Ctrl-C.
import { spawn } from 'node:child_process';
import { developmentSecrets, ensureDependencies, ensureServices, root } from './prepare.mjs';

const env = { ...process.env };
const production = env.NODE_ENV === 'production';
const secrets = developmentSecrets();
if (production && (!env.ADMIN_TOKEN || !env.LEDGER_HMAC_KEY)) {
  console.error('ADMIN_TOKEN and LEDGER_HMAC_KEY are required in production');
  process.exit(1);
}
// Kept between starts (in .tmp/dev-secrets.json): a token pasted into a script keeps working,
// and the ledger's hash chains keep verifying.
env.ADMIN_TOKEN ||= secrets.adminToken;
env.LEDGER_HMAC_KEY ||= secrets.ledgerKey;
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

const run = (script) => spawn('npm', ['run', '--silent', script], { cwd: root, env, stdio: 'inherit' });
const migrate = run('db:migrate');
const code = await new Promise((resolve) => migrate.on('exit', resolve));
if (code !== 0) process.exit(code ?? 1);

const children = [run('start:api'), run('start:worker')];

// The banner comes once the API answers, so it is not lost among the processes' start-up logs.
const baseUrl = `http://127.0.0.1:${env.PORT}`;
for (let i = 0; i < 300; i++) {
  const ready = await fetch(`${baseUrl}/readyz`).then(
    (r) => r.ok,
    () => false,
  );
  if (ready) break;
  await new Promise((r) => setTimeout(r, 100));
}
console.log(`\nCharge Sales runs on ${baseUrl}  (API reference: ${baseUrl}/docs, operator pages: ${baseUrl}/admin)`);
console.log(`Admin token: ${env.ADMIN_TOKEN}  (kept in .tmp/dev-secrets.json between starts)`);
console.log(`Try: curl -H "Authorization: Bearer ${env.ADMIN_TOKEN}" ${baseUrl}/api/sellers\n`);

let stopping = false;
const stop = () => {
  if (stopping) return;
  stopping = true;
  for (const child of children) child.kill('SIGTERM');
};
process.on('SIGINT', stop);
process.on('SIGTERM', stop);
for (const child of children) {
  child.on('exit', (exitCode) => {
    if (!stopping) {
      console.error(`a process exited (code ${exitCode}); stopping the rest`);
      stop();
    }
    if (children.every((c) => c.exitCode !== null || c.signalCode !== null)) process.exit(exitCode ?? 0);
  });
}
