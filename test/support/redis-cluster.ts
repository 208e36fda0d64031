import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { type DelayProxy, startDelayProxy } from './delay-proxy.ts';
import { PARTITIONS, waitPartitionsSettled } from './faults.ts';
import { Client } from './http.ts';
import { freePort, System } from './system.ts';

const execFileAsync = promisify(execFile);

export interface ClusterNodeProcess {
  /** Its client port on loopback: the port the test knows it by. */
  port: number;
  /** Its cluster bus port. */
  busPort: number;
  /** Where the cluster tells clients to reach it (`host:port`): its proxy, when announced. */
  announced: string;
  /** The running server; a new one after `restart`. */
  process: ChildProcess;
}

/** One line of `CLUSTER NODES`, as a live node sees the cluster. */
export interface ClusterNodeView {
  id: string;
  /** The node's loopback client port (`ClusterNodeProcess.port`), whatever address it is announced at. */
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
  /** With `announce`: each node's delaying proxy, in the order of `members`; else empty. */
  readonly proxies: DelayProxy[];
  /** Asks one node (by port) a command, through redis-cli: works while other nodes are down. */
  cli(port: number, ...args: string[]): Promise<string>;
  /** The port of the master serving `key`'s slot, as the cluster now says. */
  masterOf(key: string): Promise<number>;
  /** The ports of the masters not marked failing, as a live node sees them. */
  masters(): Promise<number[]>;
  /** `CLUSTER NODES` as the first live node (other than `except`) that answers sees it. */
  topology(except?: number): Promise<ClusterNodeView[]>;
  /** Whether the node at `port` runs. */
  isRunning(port: number): boolean;
  /** kill -9 of the node at `port`. */
  kill(port: number): Promise<void>;
  /**
   * Starts the node at `port` again (after `kill`), on the same ports and cluster config file,
   * with no data (nothing is persisted): it rejoins the cluster under its old id, as a replica if
   * its master's role was taken over meanwhile.
   */
  restart(port: number): Promise<void>;
  /**
   * Slows every node's connections from the client at address `from` by `ms` each way (0: not at
   * all), through the proxies; needs `announce`.
   */
  setDelay(ms: number, from: string): void;
  /**
   * Waits until every live node reports `cluster_state:ok` and every live replica's link to its
   * master is up: a master killed after that fails over to a replica that holds its data.
   */
  waitHealthy(timeoutMs?: number): Promise<void>;
  /**
   * Waits until the cluster is whole again: every node running, none marked failing by any other,
   * every master with a replica whose link to it is up, `cluster_state:ok` everywhere.
   */
  waitRestored(timeoutMs?: number): Promise<void>;
  stop(): Promise<void>;
}

/** Distinct free loopback ports. */
async function freePorts(count: number): Promise<number[]> {
  const ports = new Set<number>();
  while (ports.size < count) ports.add(await freePort());
  return [...ports];
}

/**
 * A Redis Cluster of the test's own from Debian's `redis-server` and `redis-cli`: `masters`
 * masters with `replicas` replicas each, on free loopback ports (the bus on a port of its own, as
 * port + 10000 may not exist), keeping nothing on disk between runs. A short node timeout makes a
 * failover take seconds, not the default 15. If it cannot be set up, the servers it started are
 * stopped before the error is thrown.
 *
 * With `announce`, the nodes listen on `announce.address` too (their bus is reached there) and each
 * is announced to clients at a delaying proxy on that address, in front of its loopback port: a
 * client that reaches the address reaches every node, one that does not reaches none, and one
 * client's links to all of them can be slowed (`setDelay`). Replication goes through the proxies too.
 */
export async function startRedisCluster({
  masters = 3,
  replicas = 1,
  fullCoverage = false,
  announce,
}: {
  masters?: number;
  replicas?: number;
  /** `cluster-require-full-coverage`: whether the cluster stops serving while any slot has no master. */
  fullCoverage?: boolean;
  /** An address of this machine that the cluster is announced at (see above). */
  announce?: { address: string };
} = {}): Promise<LocalRedisCluster> {
  const dir = mkdtempSync(join(tmpdir(), 'cs-redis-cluster-'));
  const members: ClusterNodeProcess[] = [];
  const proxies: DelayProxy[] = [];
  const count = masters * (1 + replicas);
  const running = (m: ClusterNodeProcess) => m.process.exitCode === null && m.process.signalCode === null;
  const alive = () => members.filter(running);
  const kill = async (member: ClusterNodeProcess) => {
    if (!running(member)) return;
    const exited = new Promise((resolve) => member.process.once('exit', resolve));
    member.process.kill('SIGKILL');
    await exited;
  };
  const stopAll = async () => {
    await Promise.all(alive().map(kill));
    await Promise.all(proxies.map((p) => p.close()));
    rmSync(dir, { recursive: true, force: true });
  };
  const cli = async (port: number, ...args: string[]) =>
    (await execFileAsync('redis-cli', ['-h', '127.0.0.1', '-p', String(port), ...args], { timeout: 10_000 })).stdout;
  /** The loopback port of the node the cluster names by `port` (announced or its own). */
  const portOf = (port: number) =>
    members.find((m) => m.announced.endsWith(`:${port}`))?.port ?? members.find((m) => m.port === port)?.port ?? port;
  const launch = (member: ClusterNodeProcess) => {
    const [announcedHost = '', announcedPort = ''] = member.announced.split(':');
    const child = spawn(
      'redis-server',
      [
        '--port',
        String(member.port),
        '--cluster-port',
        String(member.busPort),
        '--bind',
        '127.0.0.1',
        ...(announce ? [announce.address] : []),
        ...(announce ? ['--cluster-announce-ip', announcedHost, '--cluster-announce-port', announcedPort] : []),
        '--cluster-enabled',
        'yes',
        '--cluster-config-file',
        `nodes-${member.port}.conf`,
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
        // Nothing on disk, not even what a replica receives from its master: a node started again
        // has no data (and the nodes share one directory).
        '--repl-diskless-sync',
        'yes',
        '--repl-diskless-load',
        'swapdb',
        '--dbfilename',
        `dump-${member.port}.rdb`,
        '--dir',
        dir,
        '--logfile',
        join(dir, `redis-${member.port}.log`),
      ],
      { stdio: 'ignore' },
    );
    // A test process that ends without stopping its cluster must not leave servers behind.
    const killOnExit = () => child.kill('SIGKILL');
    process.once('exit', killOnExit);
    child.once('exit', () => process.off('exit', killOnExit));
    member.process = child;
  };
  const waitPong = async (member: ClusterNodeProcess) => {
    for (let i = 0; ; i++) {
      const pong = await cli(member.port, 'ping').catch(() => '');
      if (pong.trim() === 'PONG') return;
      if (!running(member) || i > 200) throw new Error(`redis-server on ${member.port} did not start`);
      await sleep(50);
    }
  };

  try {
    const ports = await freePorts(2 * count);
    for (let i = 0; i < count; i++) {
      const port = ports[2 * i] as number;
      let announced = `127.0.0.1:${port}`;
      if (announce) {
        const proxy = await startDelayProxy({
          listen: { host: announce.address },
          target: { host: '127.0.0.1', port },
        });
        proxies.push(proxy);
        announced = `${announce.address}:${proxy.port}`;
      }
      const member = { port, busPort: ports[2 * i + 1] as number, announced } as ClusterNodeProcess;
      launch(member);
      members.push(member);
    }
    for (const member of members) await waitPong(member);
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
    nodes: members.map((m) => m.announced).join(','),
    members,
    proxies,
    cli,
    async masterOf(key) {
      for (const member of alive()) {
        const slot = (await cli(member.port, 'cluster', 'keyslot', key).catch(() => '')).trim();
        if (!slot) continue;
        const shards = await cli(member.port, '--json', 'cluster', 'slots').catch(() => '');
        const ranges = JSON.parse(shards || '[]') as Array<[number, number, [string, number, ...unknown[]]]>;
        const owner = ranges.find(([from, to]) => Number(slot) >= from && Number(slot) <= to);
        if (owner) return portOf(Number(owner[2][1]));
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
        const view = parseNodes(await cli(member.port, 'cluster', 'nodes').catch(() => ''), portOf);
        if (view.length > 0) return view;
      }
      throw new Error('no live node answers CLUSTER NODES');
    },
    isRunning(port) {
      const member = members.find((m) => m.port === port);
      return member !== undefined && running(member);
    },
    async kill(port) {
      const member = members.find((m) => m.port === port);
      if (member) await kill(member);
    },
    async restart(port) {
      const member = members.find((m) => m.port === port);
      if (!member) throw new Error(`no node of the cluster at ${port}`);
      if (running(member)) throw new Error(`the node at ${port} runs`);
      rmSync(join(dir, `dump-${port}.rdb`), { force: true });
      launch(member);
      await waitPong(member);
    },
    setDelay(ms, from) {
      if (proxies.length === 0) throw new Error('setDelay needs a cluster started with `announce`');
      for (const proxy of proxies) proxy.setDelay(ms, from);
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
    async waitRestored(timeoutMs = 30_000) {
      const deadline = Date.now() + timeoutMs;
      for (;;) {
        const problems: string[] = [];
        for (const member of members.filter((m) => !running(m))) problems.push(`:${member.port} not running`);
        for (const member of alive()) {
          const view = parseNodes(await cli(member.port, 'cluster', 'nodes').catch(() => ''), portOf);
          if (view.length !== count) problems.push(`:${member.port} knows ${view.length} nodes`);
          for (const node of view.filter((n) => n.flags.some((f) => f.startsWith('fail') || f === 'noaddr'))) {
            problems.push(`:${member.port} sees :${node.port} ${node.flags.join(',')}`);
          }
          const mastersSeen = view.filter((n) => n.flags.includes('master'));
          for (const master of mastersSeen) {
            if (!view.some((n) => n.masterId === master.id))
              problems.push(`:${member.port} sees no replica of :${master.port}`);
          }
          if (!(await cli(member.port, 'cluster', 'info').catch(() => '')).includes('cluster_state:ok')) {
            problems.push(`:${member.port} cluster_state not ok`);
          }
          const replication = await cli(member.port, 'info', 'replication').catch(() => '');
          if (replication.includes('role:slave') && !replication.includes('master_link_status:up')) {
            problems.push(`:${member.port} not synced with its master`);
          }
        }
        if (problems.length === 0) return;
        if (Date.now() > deadline) throw new Error(`the cluster was not whole again: ${problems.join('; ')}`);
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

/** `CLUSTER NODES` output, each node named by its loopback port. */
function parseNodes(text: string, portOf: (port: number) => number): ClusterNodeView[] {
  const lines = text.trim().split('\n').filter(Boolean);
  return lines.map((line) => {
    const [id = '', address = '', flags = '', master = '-'] = line.split(' ');
    return {
      id,
      port: portOf(Number(address.split('@')[0]?.split(':').at(-1))),
      flags: flags.split(','),
      masterId: master === '-' ? null : master,
    };
  });
}

/**
 * An API and two worker processes (each reporting its partitions on a health port) on a Redis
 * Cluster of their own, started with `startRedisCluster(options)`; `env` is added to theirs.
 * Returns once the workers hold every partition between them: they have worked with the cluster
 * then, so a test's first request does not meet a cluster that the processes are still learning.
 */
export async function systemOnCluster({
  env,
  ...options
}: {
  fullCoverage?: boolean;
  env?: Record<string, string>;
} = {}) {
  const cluster = await startRedisCluster(options);
  const system = await System.start({
    workers: 0,
    env: { REDIS_CLUSTER_NODES: cluster.nodes, PARTITIONS: String(PARTITIONS), ...env },
  });
  const healthPorts = [await freePort(), await freePort()];
  for (const port of healthPorts) system.startWorker({ WORKER_HEALTH_PORT: String(port) });
  await waitPartitionsSettled(healthPorts);
  return { cluster, system, healthPorts, client: new Client(system.baseUrl) };
}
