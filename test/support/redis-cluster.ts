import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { freePort } from './system.ts';

const execFileAsync = promisify(execFile);

export interface ClusterNodeProcess {
  port: number;
  process: ChildProcess;
}

export interface LocalRedisCluster {
  /** `REDIS_CLUSTER_NODES` for the processes. */
  nodes: string;
  readonly members: ClusterNodeProcess[];
  /** Asks one node (by port) a command, through redis-cli: works while other nodes are down. */
  cli(port: number, ...args: string[]): Promise<string>;
  /** The port of the master serving `key`'s slot, as the cluster now says. */
  masterOf(key: string): Promise<number>;
  /** kill -9 of the node at `port`. */
  kill(port: number): Promise<void>;
  /** Waits until every live node reports `cluster_state:ok` and every slot has a live master. */
  waitHealthy(timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

/**
 * A Redis Cluster of the test's own from Debian's `redis-server` and `redis-cli`: `masters`
 * masters with `replicas` replicas each, on free loopback ports, keeping nothing on disk
 * between runs. A short node timeout makes a failover take seconds, not the default 15.
 */
export async function startRedisCluster({ masters = 3, replicas = 1 } = {}): Promise<LocalRedisCluster> {
  const dir = mkdtempSync(join(tmpdir(), 'cs-redis-cluster-'));
  const members: ClusterNodeProcess[] = [];
  const count = masters * (1 + replicas);
  for (let i = 0; i < count; i++) {
    const port = await freePort();
    const process = spawn(
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
    members.push({ port, process });
  }
  const cli = async (port: number, ...args: string[]) =>
    (await execFileAsync('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...args], { timeout: 10_000 })).stdout;
  const alive = () => members.filter((m) => m.process.exitCode === null && m.process.signalCode === null);

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
    async kill(port) {
      const member = members.find((m) => m.port === port);
      if (!member || member.process.exitCode !== null) return;
      const exited = new Promise((resolve) => member.process.once('exit', resolve));
      member.process.kill('SIGKILL');
      await exited;
    },
    async waitHealthy(timeoutMs = 30_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const states = await Promise.all(alive().map((m) => cli(m.port, 'cluster', 'info').catch(() => '')));
        if (states.every((info) => info.includes('cluster_state:ok'))) return;
        if (Date.now() > deadline) throw new Error(`the cluster did not become healthy: ${states.join(' | ')}`);
        await sleep(200);
      }
    },
    async stop() {
      await Promise.all(alive().map((m) => cluster.kill(m.port)));
      rmSync(dir, { recursive: true, force: true });
    },
  };
  await cluster.waitHealthy();
  return cluster;
}
