import { readFileSync } from 'node:fs';
import type { Sql } from './direct-sale.ts';

/** A field of /proc/<pid>/status in MiB (VmRSS: now; VmHWM: the process's peak so far); 0 where /proc is missing. */
export function procStatusMiB(pid: number, field: 'VmRSS' | 'VmHWM'): number {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const kib = new RegExp(`^${field}:\\s+(\\d+)\\s+kB`, 'm').exec(status)?.[1];
    return kib ? Number(kib) / 1024 : 0;
  } catch {
    return 0;
  }
}

/**
 * Samples the resident memory of the measured processes during a phase. VmHWM alone would give
 * each process's peak since it started, setup included; the maximum of VmRSS over the phase is
 * what that phase cost.
 */
export class RssSampler {
  private readonly peaks = new Map<string, number>();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly processes: () => Array<{ name: string; pid: number }>) {}

  start(intervalMs = 200): void {
    this.peaks.clear();
    this.sample();
    this.timer = setInterval(() => this.sample(), intervalMs);
  }

  /** Peak RSS in MiB by process name since `start`. */
  stop(): Map<string, number> {
    clearInterval(this.timer);
    this.sample();
    return new Map(this.peaks);
  }

  current(): Map<string, number> {
    return new Map(this.processes().map((p) => [p.name, procStatusMiB(p.pid, 'VmRSS')]));
  }

  private sample(): void {
    for (const { name, pid } of this.processes()) {
      const rss = procStatusMiB(pid, 'VmRSS');
      if (rss > (this.peaks.get(name) ?? 0)) this.peaks.set(name, rss);
    }
  }
}

/**
 * What the bench database's backends are doing, sampled from pg_stat_activity: running on CPU,
 * waiting on a row lock, on the WAL flush, or sitting in an open transaction while the client
 * thinks (`idle in transaction`: the round trips of a transaction held open by its client).
 */
export class WaitSampler {
  private readonly counts = new Map<string, number>();
  private samples = 0;
  private timer: NodeJS.Timeout | undefined;
  private busy = false;

  constructor(
    private readonly sql: Sql,
    private readonly database: string,
  ) {}

  start(intervalMs = 250): void {
    this.counts.clear();
    this.samples = 0;
    this.timer = setInterval(() => void this.sample(), intervalMs);
  }

  /** The most common states, as `state share%` of backend samples, most frequent first. */
  stop(top = 5): string {
    clearInterval(this.timer);
    const total = [...this.counts.values()].reduce((a, b) => a + b, 0);
    if (total === 0) return 'no busy backends sampled';
    const perSample = total / Math.max(1, this.samples);
    const shares = [...this.counts]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([state, n]) => `${state} ${Math.round((100 * n) / total)}%`)
      .join(', ');
    return `${perSample.toFixed(1)} busy backends on average: ${shares}`;
  }

  private async sample(): Promise<void> {
    if (this.busy) return;
    this.busy = true;
    try {
      const rows = await this.sql<{ what: string; n: number }[]>`
        select case
                 when state = 'active' and wait_event is null then 'on CPU'
                 -- For a lock wait, which statement waits: the first words of its SQL.
                 when wait_event_type = 'Lock' then wait_event_type || ':' || wait_event || ' ('
                   || array_to_string((string_to_array(btrim(regexp_replace(query, '\\s+', ' ', 'g')), ' '))[1:3], ' ') || ')'
                 when state = 'active' then wait_event_type || ':' || wait_event
                 else state
               end as what,
               count(*)::int as n
        from pg_stat_activity
        where datname = ${this.database} and pid <> pg_backend_pid()
          and state in ('active', 'idle in transaction')
        group by 1`;
      this.samples++;
      for (const { what, n } of rows) this.counts.set(what, (this.counts.get(what) ?? 0) + n);
    } catch {
      // A missed sample only makes the picture coarser.
    } finally {
      this.busy = false;
    }
  }
}

/** CPU seconds (user + system) a process has used so far, from /proc/<pid>/stat; 0 where unreadable. */
export function cpuSeconds(pid: number): number {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // Fields after the command name, which may itself contain spaces and parentheses.
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name; in clock ticks (100 a second on Linux).
    return (Number(fields[11]) + Number(fields[12])) / 100;
  } catch {
    return 0;
  }
}

/**
 * Read and write system calls a process has made so far (`syscr` + `syscw` of /proc/<pid>/io); 0
 * where unreadable (another user's process without root). On one machine every hand-over between
 * processes is a socket write and a read, and a write that wakes the reader often gives it the
 * core: the count tells how many hand-overs a job costs, and moves far less with the neighbours'
 * load than the time does.
 */
export function systemCalls(pid: number): number {
  try {
    const io = readFileSync(`/proc/${pid}/io`, 'utf8');
    const field = (name: string) => Number(new RegExp(`^${name}: (\\d+)$`, 'm').exec(io)?.[1] ?? 0);
    return field('syscr') + field('syscw');
  } catch {
    return 0;
  }
}

/** Whether a URL's host is this machine (whose processes the bench can read in /proc). */
export const isLocal = (host: string) => ['127.0.0.1', 'localhost', '::1', '[::1]'].includes(host);

/** What a group of processes used over a phase. */
export interface Usage {
  cpuSeconds: Record<string, number>;
  systemCalls: Record<string, number>;
  /** WAL written and flushed to disk by the whole PostgreSQL server (pg_stat_wal). */
  wal: { bytes: number; flushes: number };
}

/**
 * CPU and system calls used by each group of processes over a phase: the product's processes, the
 * sync server, the PostgreSQL backends serving the bench database, and the Redis server. On a
 * shared machine throughput moves with the neighbours' load; the CPU a committed job costs moves
 * much less, and its system calls hardly at all.
 */
export class CpuMeter {
  private start = new Map<string, { cpu: number; calls: number }>();
  private walStart = { bytes: 0, flushes: 0 };

  constructor(
    private readonly sql: Sql,
    private readonly database: string,
    private readonly processes: () => Array<{ group: string; pid: number }>,
    /** The Redis server's own CPU seconds (`INFO cpu`) and pid: it serves every process of the run. */
    private readonly redisServer: () => Promise<{ cpuSeconds: number; pid: number | undefined }>,
  ) {}

  async begin(): Promise<void> {
    this.start = await this.snapshot();
    this.walStart = await this.walSoFar();
  }

  /** Usage by group since `begin`. A backend that closed before the end is not counted. */
  async end(): Promise<Usage> {
    const end = await this.snapshot();
    const wal = await this.walSoFar();
    const usage: Usage = {
      cpuSeconds: {},
      systemCalls: {},
      wal: { bytes: wal.bytes - this.walStart.bytes, flushes: wal.flushes - this.walStart.flushes },
    };
    for (const [key, { cpu, calls }] of end) {
      const group = key.slice(0, key.indexOf(':'));
      const before = this.start.get(key) ?? { cpu: 0, calls: 0 };
      usage.cpuSeconds[group] = (usage.cpuSeconds[group] ?? 0) + cpu - before.cpu;
      usage.systemCalls[group] = (usage.systemCalls[group] ?? 0) + calls - before.calls;
    }
    return usage;
  }

  private async walSoFar(): Promise<{ bytes: number; flushes: number }> {
    const [row] = await this.sql<{ bytes: number; flushes: number }[]>`
      select wal_bytes::float8 as bytes, wal_sync::float8 as flushes from pg_stat_wal`;
    return row ?? { bytes: 0, flushes: 0 };
  }

  private async snapshot(): Promise<Map<string, { cpu: number; calls: number }>> {
    const backends = await this.sql<{ pid: number }[]>`
      select pid from pg_stat_activity where datname = ${this.database} and pid <> pg_backend_pid()`;
    const all = [...this.processes(), ...backends.map(({ pid }) => ({ group: 'postgres', pid }))];
    const snapshot = new Map(
      all.map(({ group, pid }) => [`${group}:${pid}`, { cpu: cpuSeconds(pid), calls: systemCalls(pid) }]),
    );
    const redis = await this.redisServer();
    // The server's pid is only this machine's when Redis runs here; elsewhere its calls are 0.
    snapshot.set('redis:server', { cpu: redis.cpuSeconds, calls: redis.pid ? systemCalls(redis.pid) : 0 });
    return snapshot;
  }
}

/** Fields of a Redis `INFO` section, as text. */
export function parseRedisInfo(info: string): Map<string, string> {
  return new Map(
    info
      .split(/\r?\n/)
      .filter((line) => line.includes(':') && !line.startsWith('#'))
      .map((line) => [line.slice(0, line.indexOf(':')), line.slice(line.indexOf(':') + 1)]),
  );
}

/** Calls and microseconds per Redis command since the server started (`INFO commandstats`). */
export function parseCommandStats(info: string): Map<string, { calls: number; usec: number }> {
  const stats = new Map<string, { calls: number; usec: number }>();
  for (const [key, value] of parseRedisInfo(info)) {
    if (!key.startsWith('cmdstat_')) continue;
    const calls = Number(/calls=(\d+)/.exec(value)?.[1] ?? 0);
    const usec = Number(/usec=(\d+)/.exec(value)?.[1] ?? 0);
    stats.set(key.slice('cmdstat_'.length), { calls, usec });
  }
  return stats;
}

/** Redis commands run between two `INFO commandstats` readings, busiest first. */
export function commandDelta(
  before: Map<string, { calls: number; usec: number }>,
  after: Map<string, { calls: number; usec: number }>,
): Array<{ command: string; calls: number; usec: number }> {
  return [...after]
    .map(([command, { calls, usec }]) => ({
      command,
      calls: calls - (before.get(command)?.calls ?? 0),
      usec: usec - (before.get(command)?.usec ?? 0),
    }))
    .filter((c) => c.calls > 0)
    .sort((a, b) => b.usec - a.usec);
}
