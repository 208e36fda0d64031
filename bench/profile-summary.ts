/**
 * Reads V8 CPU profiles (`node --cpu-prof`, which `npm run bench -- --profile` turns on for the
 * API, the workers and the sync server) and says where the CPU went: by package and by function,
 * self time. Also runnable alone: `node --import tsx bench/profile-summary.ts <file.cpuprofile>...`.
 */
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { fileURLToPath } from 'node:url';

interface ProfileNode {
  id: number;
  callFrame: { functionName: string; url: string; lineNumber: number };
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

export interface ProfileSummary {
  file: string;
  wallMs: number;
  busyMs: number;
  byArea: Array<{ area: string; ms: number; share: number }>;
  byFunction: Array<{ fn: string; ms: number; share: number }>;
}

/** Where a frame's code lives: a dependency, a workspace package, Node itself, or V8's own buckets. */
function areaOf(url: string, functionName: string): string {
  if (!url) return functionName.startsWith('(') ? functionName : '(native)';
  const dependency = /node_modules\/((?:@[^/]+\/)?[^/]+)/.exec(url);
  if (dependency?.[1]) return dependency[1];
  const workspace = /\/(apps|packages)\/([^/]+)\//.exec(url);
  if (workspace?.[2]) return `@cs/${workspace[2]}`;
  if (url.startsWith('node:')) return 'node internals';
  if (url.includes('/bench/')) return 'bench';
  return url;
}

function shortUrl(url: string): string {
  const dependency = /node_modules\/(.*)$/.exec(url);
  if (dependency?.[1]) return dependency[1];
  const workspace = /\/((?:apps|packages|bench)\/.*)$/.exec(url);
  return workspace?.[1] ?? url;
}

export function summarizeProfile(file: string, top = 12): ProfileSummary {
  const profile = JSON.parse(readFileSync(file, 'utf8')) as CpuProfile;
  const nodes = new Map(profile.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<number, number>();
  for (const [i, id] of profile.samples.entries()) selfUs.set(id, (selfUs.get(id) ?? 0) + (profile.timeDeltas[i] ?? 0));

  const areas = new Map<string, number>();
  const functions = new Map<string, number>();
  let busyUs = 0;
  for (const [id, us] of selfUs) {
    const frame = nodes.get(id)?.callFrame;
    if (!frame || frame.functionName === '(idle)') continue;
    busyUs += us;
    const area = areaOf(frame.url, frame.functionName);
    areas.set(area, (areas.get(area) ?? 0) + us);
    const fn = frame.url
      ? `${frame.functionName || '(anonymous)'} ${shortUrl(frame.url)}:${frame.lineNumber + 1}`
      : frame.functionName;
    functions.set(fn, (functions.get(fn) ?? 0) + us);
  }
  const rank = (m: Map<string, number>) =>
    [...m]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([name, us]) => ({ name, ms: us / 1000, share: busyUs ? us / busyUs : 0 }));
  return {
    file,
    wallMs: (profile.endTime - profile.startTime) / 1000,
    busyMs: busyUs / 1000,
    byArea: rank(areas).map(({ name, ms, share }) => ({ area: name, ms, share })),
    byFunction: rank(functions).map(({ name, ms, share }) => ({ fn: name, ms, share })),
  };
}

export function formatProfile(summary: ProfileSummary): string {
  const pct = (share: number) => `${(100 * share).toFixed(1).padStart(5)}%`;
  const lines = [
    `${basename(summary.file)}: ${(summary.busyMs / 1000).toFixed(1)} s on CPU over ${(summary.wallMs / 1000).toFixed(1)} s`,
    '  by area (self time):',
    ...summary.byArea.map((a) => `    ${pct(a.share)}  ${a.area}`),
    '  by function (self time):',
    ...summary.byFunction.map((f) => `    ${pct(f.share)}  ${f.fn}`),
  ];
  return lines.join('\n');
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  for (const file of process.argv.slice(2)) console.log(formatProfile(summarizeProfile(file)));
}
