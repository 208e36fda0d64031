// `npm test`: installs what is missing, runs the unit project (pure rules, no services, seconds)
// and stops if it fails, then makes sure PostgreSQL and Redis answer and runs the end-to-end
// project. Each e2e run uses a database and a Redis key prefix of its own (see
// test/global-setup.ts); TEST_DATABASE_URL is the owner, the processes connect as the application
// role `cs_app`. Extra arguments go to both vitest runs (`npm test -- -t idempotency`); with
// `--config` (`npm run test:stress`) or `--project`, to a single run, as given. The tests run on
// a supported Node.js: on an older machine node, on Node 24 from the cache (scripts/target-node.mjs).
import { spawnSync } from 'node:child_process';
import { delimiter, join } from 'node:path';
import { ensureDependencies, ensureServices, root } from './prepare.mjs';
import { targetNodeBinDir } from './target-node.mjs';

const args = process.argv.slice(2);
const named = (flag) => args.some((a) => a === flag || a.startsWith(`${flag}=`));
const single = named('--config') || named('-c') || named('--project');

const nodeBin = targetNodeBinDir();
if (nodeBin !== join(process.execPath, '..')) {
  console.log(`Node.js ${process.version} is past its end of life: the tests run on Node.js 24 from ${nodeBin}`);
  process.env.PATH = `${nodeBin}${delimiter}${process.env.PATH ?? ''}`;
}

function vitest(extra) {
  const result = spawnSync('npx', ['vitest', 'run', ...extra, ...args], { cwd: root, stdio: 'inherit' });
  return result.status ?? 1;
}

process.env.TEST_DATABASE_URL ??= process.env.DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
process.env.REDIS_URL ??= 'redis://127.0.0.1:6379';

ensureDependencies();

// With a file filter, one of the two projects may hold none of the files: that is not a failure.
const filtered = args.length > 0 ? ['--passWithNoTests'] : [];
if (!single) {
  const unit = vitest(['--project', 'unit', ...filtered]);
  if (unit !== 0) {
    console.error('Unit tests failed; the end-to-end tests were not run.');
    process.exit(unit);
  }
}

const services = await ensureServices({ databaseUrl: process.env.TEST_DATABASE_URL, redisUrl: process.env.REDIS_URL });
process.env.TEST_DATABASE_URL = services.databaseUrl;
process.env.REDIS_URL = services.redisUrl;
process.exit(single ? vitest([]) : vitest(['--project', 'e2e', ...filtered]));
