import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { PARTITIONS } from './faults.ts';
import { Client } from './http.ts';
import { freePort, System } from './system.ts';

const execFileAsync = promisify(execFile);

export interface ClusterNodeProcess {
  port: number;
  process: ChildProcess;
}

/** One line of `CLUSTER NODES`, as a live node sees the cluster. */
export interface ClusterNodeView {
  id: string;
  port: number;
  /** e.g. `master`, `slave`, `myself`, `fail?`, `fail`. */
  flags: string[];
  /** The id of its master, for a replica. */
  masterId: string | null;
}

export interface LocalRedisCluster {
  /** `REDIS_CLUSTER_NODES` for the processes. */
  nodes: string;
  readonly members: ClusterNodeProcess[];
  /** Asks one node (by port) a command, through redis-cli: works while other nodes are down. */
  cli(port: number, ...args: string[]): Promise<string>;
  /** The port of the master serving `key`'s slot, as the cluster now says. */
  masterOf(key: string): Promise<number>;
  /** The ports of the masters not marked failing, as a live node sees them. */
  masters(): Promise<number[]>;
  /** `CLUSTER NODES` as the first live node (other than `except`) that answers sees it. */
  topology(except?: number): Promise<ClusterNodeView[]>;
  /** kill -9 of the node at `port`. */
  kill(port: number): Promise<void>;
  /**
   * Waits until every live node reports `cluster_state:ok` and every live replica's link to its
   * master is up: a master killed after that fails over to a replica that holds its data.
   */
  waitHealthy(timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

/**
 * A Redis Cluster of the test's own from Debian's `redis-server` and `redis-cli`: `masters`
 * masters with `replicas` replicas each, on free loopback ports, keeping nothing on disk
 * between runs. A short node timeout makes a failover take seconds, not the default 15.
 * If it cannot be set up, the servers it started are stopped before the error is thrown.
 */
export async function startRedisCluster({
  masters = 3,
  replicas = 1,
  fullCoverage = false,
}: {
  masters?: number;
  replicas?: number;
  /** `cluster-require-full-coverage`: whether the cluster stops serving while any slot has no master. */
  fullCoverage?: boolean;
} = {}): Promise<LocalRedisCluster> {
  const dir = mkdtempSync(join(tmpdir(), 'cs-redis-cluster-'));
  const members: ClusterNodeProcess[] = [];
  const count = masters * (1 + replicas);
  const alive = () => members.filter((m) => m.process.exitCode === null && m.process.signalCode === null);
  const kill = async (member: ClusterNodeProcess) => {
    if (member.process.exitCode !== null || member.process.signalCode !== null) return;
    const exited = new Promise((resolve) => member.process.once('exit', resolve));
    member.process.kill('SIGKILL');
    await exited;
  };
  const stopAll = async () => {
    await Promise.all(alive().map(kill));
    rmSync(dir, { recursive: true, force: true });
  };
  const cli = async (port: number, ...args: string[]) =>
    (await execFileAsync('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...args], { timeout: 10_000 })).stdout;

  try {
    for (let i = 0; i < count; i++) {
      const port = await freePort();
      const child = spawn(
        'redis-server',
        [
          '--port',
          String(port),
          '--bind',
          '127.0.0.1',
          '--cluster-enabled',
          'yes',
          '--cluster-config-file',
          `nodes-${port}.conf`,
          '--cluster-node-timeout',
          '2000',
          // A replica syncs at once rather than after Redis' default 5 s: a master killed before
          // its replica's first sync cannot fail over (the replica has no data to take over with).
          '--repl-diskless-sync-delay',
          '0',
          // As we advise for production (README, "Running on a Redis Cluster"): with Redis'
          // default (yes), every master refuses every command (CLUSTERDOWN) from the moment a
          // failed master is marked FAIL until its replica is promoted, so every partition stops.
          '--cluster-require-full-coverage',
          fullCoverage ? 'yes' : 'no',
          '--save',
          '',
          '--appendonly',
          'no',
          '--dir',
          dir,
          '--logfile',
          join(dir, `redis-${port}.log`),
        ],
        { stdio: 'ignore' },
      );
      // A test process that ends without stopping its cluster must not leave servers behind.
      const killOnExit = () => child.kill('SIGKILL');
      process.once('exit', killOnExit);
      child.once('exit', () => process.off('exit', killOnExit));
      members.push({ port, process: child });
    }

    for (const member of members) {
      for (let i = 0; ; i++) {
        const pong = await cli(member.port, 'ping').catch(() => '');
        if (pong.trim() === 'PONG') break;
        if (i > 100) throw new Error(`redis-server on ${member.port} did not start`);
        await sleep(50);
      }
    }
    await execFileAsync(
      'redis-cli',
      [
        '--cluster',
        'create',
        ...members.map((m) => `127.0.0.1:${m.port}`),
        '--cluster-replicas',
        String(replicas),
        '--cluster-yes',
      ],
      { timeout: 60_000 },
    );
  } catch (error) {
    await stopAll();
    throw error;
  }

  const cluster: LocalRedisCluster = {
    nodes: members.map((m) => `127.0.0.1:${m.port}`).join(','),
    members,
    cli,
    async masterOf(key) {
      for (const member of alive()) {
        const slot = (await cli(member.port, 'cluster', 'keyslot', key).catch(() => '')).trim();
        if (!slot) continue;
        const shards = await cli(member.port, '--json', 'cluster', 'slots').catch(() => '');
        const ranges = JSON.parse(shards || '[]') as Array<[number, number, [string, number, ...unknown[]]]>;
        const owner = ranges.find(([from, to]) => Number(slot) >= from && Number(slot) <= to);
        if (owner) return Number(owner[2][1]);
      }
      throw new Error(`no live node knows the master of ${key}`);
    },
    async masters() {
      return (await cluster.topology())
        .filter((n) => n.flags.includes('master') && !n.flags.some((f) => f.startsWith('fail')))
        .map((n) => n.port)
        .sort((a, b) => a - b);
    },
    async topology(except) {
      for (const member of alive().filter((m) => m.port !== except)) {
        const text = (await cli(member.port, 'cluster', 'nodes').catch(() => '')).trim();
        if (!text) continue;
        return text.split('\n').map((line) => {
          const [id = '', address = '', flags = '', master = '-'] = line.split(' ');
          return {
            id,
            port: Number(address.split('@')[0]?.split(':').at(-1)),
            flags: flags.split(','),
            masterId: master === '-' ? null : master,
          };
        });
      }
      throw new Error('no live node answers CLUSTER NODES');
    },
    async kill(port) {
      const member = members.find((m) => m.port === port);
      if (member) await kill(member);
    },
    async waitHealthy(timeoutMs = 30_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const live = alive();
        const states = await Promise.all(live.map((m) => cli(m.port, 'cluster', 'info').catch(() => '')));
        const links = await Promise.all(live.map((m) => cli(m.port, 'info', 'replication').catch(() => '')));
        const synced = links.every((info) => !info.includes('role:slave') || info.includes('master_link_status:up'));
        if (synced && states.every((info) => info.includes('cluster_state:ok'))) return;
        if (Date.now() > deadline) {
          throw new Error(`the cluster did not become healthy (replicas synced: ${synced}): ${states.join(' | ')}`);
        }
        await sleep(200);
      }
    },
    stop: stopAll,
  };
  try {
    await cluster.waitHealthy();
  } catch (error) {
    await stopAll();
    throw error;
  }
  return cluster;
}

/**
 * An API and two worker processes (each reporting its partitions on a health port) on a Redis
 * Cluster of their own, started with `startRedisCluster(options)`.
 */
export async function systemOnCluster(options: { fullCoverage?: boolean } = {}) {
  const cluster = await startRedisCluster(options);
  const system = await System.start({
    workers: 0,
    env: { REDIS_CLUSTER_NODES: cluster.nodes, PARTITIONS: String(PARTITIONS) },
  });
  const healthPorts = [await freePort(), await freePort()];
  for (const port of healthPorts) system.startWorker({ WORKER_HEALTH_PORT: String(port) });
  return { cluster, system, healthPorts, client: new Client(system.baseUrl) };
}
