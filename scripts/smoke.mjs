// `npm run smoke`: the quick start as a user runs it, on whatever Node.js runs this script:
// `npm start`'s own script on a database of its own, one funded seller, one sale, then SIGTERM,
// which must stop everything it started. CI runs it on the machine's own Node.js while the suite
// runs on the target version, so the code keeps working on both.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:net';
import postgres from 'postgres';
import { root } from './prepare.mjs';

const owner = new URL(process.env.SMOKE_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres');
const database = `cs_smoke_${randomBytes(4).toString('hex')}`;
const ownerUrl = new URL(owner);
ownerUrl.pathname = `/${database}`;
const appUrl = new URL(ownerUrl);
appUrl.username = 'cs_app';
appUrl.password = 'cs_app';
const port = await new Promise((resolve) => {
  const server = createServer().listen(0, '127.0.0.1', () => {
    const { port } = server.address();
    server.close(() => resolve(port));
  });
});
const token = randomBytes(24).toString('hex');
const base = `http://127.0.0.1:${port}`;

const child = spawn(process.execPath, ['scripts/start.mjs'], {
  cwd: root,
  env: {
    ...process.env,
    PORT: String(port),
    MIGRATION_DATABASE_URL: ownerUrl.toString(),
    DATABASE_URL: appUrl.toString(),
    REDIS_PREFIX: `cs-smoke-${process.pid}`,
    ADMIN_TOKEN: token,
    LEDGER_HMAC_KEY: randomBytes(32).toString('hex'),
    LOG_LEVEL: 'warn',
  },
  stdio: ['ignore', 'inherit', 'inherit'],
});
const exited = new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));

const call = async (method, path, body, key = token) => {
  const res = await fetch(`${base}${path}`, {
    method,
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json', prefer: 'wait=10' },
    body: body ? JSON.stringify(body) : undefined,
  });
  return { status: res.status, body: await res.json() };
};
const expect = (ok, what, got) => {
  if (!ok) throw new Error(`${what}: ${JSON.stringify(got)}`);
};

let failure;
try {
  const deadline = Date.now() + 90_000;
  while (
    !(await fetch(`${base}/readyz`).then(
      (r) => r.ok,
      () => false,
    ))
  ) {
    if (Date.now() > deadline) throw new Error('npm start did not become ready in 90 s');
    await new Promise((r) => setTimeout(r, 200));
  }
  const seller = await call('POST', '/api/sellers', {
    name: 'Smoke',
    email: `${database}@smoke.test`,
    phone: '09120000000',
  });
  expect(seller.status === 201, 'create a seller', seller);
  const request = await call(
    'POST',
    '/api/credit-requests',
    { seller: seller.body.id, amount: 10000 },
    seller.body.api_key,
  );
  expect(request.status === 201, 'ask for credit', request);
  const approved = await call('POST', `/api/credit-requests/${request.body.id}/process`, { action: 'approve' });
  expect(approved.status === 200 && approved.body.status === 'succeeded', 'approve it', approved);
  const sale = await call(
    'POST',
    '/api/charge-sales',
    { seller_id: seller.body.id, phone_number: '09121234567', amount: 4000 },
    seller.body.api_key,
  );
  expect(sale.status === 200 && sale.body.result?.new_balance === '6000', 'sell', sale);
  const check = await call('GET', `/api/sellers/${seller.body.id}/reconcile`);
  expect(check.body.is_reconciled === true, 'reconcile', check);
  console.log(`smoke on Node.js ${process.version}: started, funded, sold, reconciled`);
} catch (error) {
  failure = error;
} finally {
  child.kill('SIGTERM');
  const stopped = await Promise.race([exited, new Promise((r) => setTimeout(() => r(null), 20_000))]);
  if (!stopped) {
    child.kill('SIGKILL');
    failure ??= new Error('npm start did not stop within 20 s of SIGTERM');
  } else if (stopped.code !== 0 && !failure) {
    failure = new Error(`npm start exited with ${stopped.code ?? stopped.signal} after SIGTERM`);
  }
  const admin = postgres(owner.toString(), { max: 1, onnotice: () => {} });
  await admin.unsafe(`drop database if exists "${database}" with (force)`).catch(() => {});
  await admin.end();
}
if (failure) {
  console.error(`smoke: ${failure.message}`);
  process.exit(1);
}
