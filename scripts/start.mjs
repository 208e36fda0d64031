// `npm start`: the whole system on one machine. Installs what is missing, makes sure PostgreSQL
// and Redis answer, applies migrations, then runs the API and one worker until Ctrl-C.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { ensureDependencies, ensureServices, root } from './prepare.mjs';

const env = { ...process.env };
env.DATABASE_URL ??= 'postgres://postgres@127.0.0.1:5432/charge_sales';
env.REDIS_URL ??= 'redis://127.0.0.1:6379';
env.PORT ??= '3000';
if (!env.ADMIN_TOKEN) {
  if (env.NODE_ENV === 'production') {
    console.error('ADMIN_TOKEN is required in production');
    process.exit(1);
  }
  env.ADMIN_TOKEN = `dev-${randomBytes(18).toString('base64url')}`;
}

ensureDependencies();
await ensureServices({ databaseUrl: env.DATABASE_URL, redisUrl: env.REDIS_URL });

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
console.log(`Admin token: ${env.ADMIN_TOKEN}`);
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
