// `npm test`: installs what is missing, makes sure PostgreSQL and Redis answer, then runs the
// suite. Each run uses a database and a Redis key prefix of its own (see test/global-setup.ts);
// TEST_DATABASE_URL is the owner, the processes connect as the application role `cs_app`.
import { spawnSync } from 'node:child_process';
import { ensureDependencies, ensureServices, root } from './prepare.mjs';

process.env.TEST_DATABASE_URL ??= process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
process.env.REDIS_URL ??= 'redis://127.0.0.1:6379';

ensureDependencies();
const services = await ensureServices({ databaseUrl: process.env.TEST_DATABASE_URL, redisUrl: process.env.REDIS_URL });
process.env.TEST_DATABASE_URL = services.databaseUrl;
process.env.REDIS_URL = services.redisUrl;
const result = spawnSync('npx', ['vitest', 'run', ...process.argv.slice(2)], { cwd: root, stdio: 'inherit' });
process.exit(result.status ?? 1);
