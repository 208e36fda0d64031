import type { ChildProcess } from 'node:child_process';
import { type DelayProxy, startDelayProxy } from './delay-proxy.ts';
import { cleanUp, PARTITIONS, superviseWorkers, type ThrowawayPostgres, throwawayPostgres } from './faults.ts';
import { type Host, HostNetwork, HostWorker, netnsUnavailable } from './netns.ts';
import { type LocalRedisCluster, startRedisCluster } from './redis-cluster.ts';
import { System } from './system.ts';

/** A worker process of the chaos system, on a host of its own or on this one. */
export interface ChaosWorker {
  name: string;
  /** Its host, when the workers run on hosts. */
  host?: Host;
  readonly alive: boolean;
  kill(signal: NodeJS.Signals): void;
}

/** The worker hosts: network namespaces, each with its own links to PostgreSQL and the cluster. */
export interface ChaosHosts {
  network: HostNetwork;
  /** Each host's proxy in front of PostgreSQL, on the root side of its link: where that link is slowed. */
  postgresProxies: Map<Host, DelayProxy>;
}

/** What the bank test runs on, and what its faults act on. */
export interface ChaosWorld {
  postgres: ThrowawayPostgres;
  cluster: LocalRedisCluster;
  /** The API (and, without hosts, the workers). */
  system: System;
  /** Undefined where network namespaces cannot be made: the workers then run on this host. */
  hosts?: ChaosHosts;
  liveWorkers(): ChaosWorker[];
  /**
   * Stands in for the deployment's restart policy from now on: a worker that dies is replaced,
   * on its host. Each death is kept (and told to `onDeath`).
   */
  supervise(onDeath?: (line: string) => void): { deaths: string[]; stop(): void };
  /** The processes' last lines, for a failing test's message. */
  recentLogs(): string;
  /** Heals every link, stops every process and server, removes the namespaces. */
  stop(): Promise<void>;
}

/**
 * A PostgreSQL of its own, a Redis Cluster of 3 masters with a replica each, an API, and
 * `workers` worker processes, each on a host of its own (a network namespace reaching PostgreSQL
 * through a delaying proxy on its link, and every cluster node at one address over its other
 * link: see `HostNetwork.sharedAddress` and `startRedisCluster`'s `announce`). Where namespaces
 * cannot be made, it says so with one line through `log` and runs the workers on this host
 * instead, unless CS_REQUIRE_NETNS=1, which makes that an error.
 */
export async function startChaosWorld({
  workers,
  log,
}: {
  workers: number;
  log: (line: string) => void;
}): Promise<ChaosWorld> {
  const unavailable = netnsUnavailable();
  if (unavailable && process.env.CS_REQUIRE_NETNS === '1') {
    throw new Error(`CS_REQUIRE_NETNS=1 but network namespaces cannot be made: ${unavailable}`);
  }
  if (unavailable) {
    log(
      `network namespace faults skipped (a host cut off from Redis or PostgreSQL, a host slowed): ${unavailable}; ` +
        'the workers run on this host (CS_REQUIRE_NETNS=1 makes this a failure)',
    );
  }
  // Each server and process started here kills itself at this process' exit with a listener of
  // its own: a dozen at once, more than Node's default warns at.
  process.setMaxListeners(Math.max(process.getMaxListeners(), 40));
  // Undone in reverse order if the set-up fails half way.
  const undo: Array<() => Promise<unknown> | undefined> = [];
  const undoAll = () => cleanUp(...undo.slice().reverse());
  try {
    const network = unavailable ? undefined : await HostNetwork.create(workers);
    if (network) undo.push(() => network.remove());
    const announce = network ? { address: await network.sharedAddress('redis') } : undefined;
    // Both awaited, whichever fails: one started while the other failed is undone too.
    const [startedPostgres, startedCluster] = await Promise.allSettled([
      throwawayPostgres().then((p) => {
        undo.push(() => p.remove());
        return p;
      }),
      startRedisCluster({ announce }).then((c) => {
        undo.push(() => c.stop());
        return c;
      }),
    ]);
    if (startedPostgres.status === 'rejected') throw startedPostgres.reason;
    if (startedCluster.status === 'rejected') throw startedCluster.reason;
    const [postgres, cluster] = [startedPostgres.value, startedCluster.value];
    await cluster.waitRestored(30_000);
    const system = await System.start({
      workers: network ? 0 : workers,
      databaseUrl: postgres.databaseUrl,
      env: { REDIS_CLUSTER_NODES: cluster.nodes, PARTITIONS: String(PARTITIONS) },
    });
    undo.push(() => system.stop());
    const world = network
      ? await onHosts(network, postgres, cluster, system, undo)
      : onThisHost(postgres, cluster, system);
    return world;
  } catch (error) {
    await undoAll().catch(() => {});
    throw error;
  }
}

function onThisHost(postgres: ThrowawayPostgres, cluster: LocalRedisCluster, system: System): ChaosWorld {
  const asChaosWorker = (w: ChildProcess): ChaosWorker => ({
    name: `worker ${w.pid}`,
    get alive() {
      return w.exitCode === null && w.signalCode === null;
    },
    kill: (signal) => void w.kill(signal),
  });
  let stopSupervising = () => {};
  return {
    postgres,
    cluster,
    system,
    liveWorkers: () => system.workers.map(asChaosWorker).filter((w) => w.alive),
    supervise: (onDeath) => {
      const supervisor = superviseWorkers(system);
      // superviseWorkers keeps the deaths; tell them as they come.
      let reported = 0;
      const told = setInterval(() => {
        for (const line of supervisor.deaths.slice(reported)) onDeath?.(`${line}; another started`);
        reported = supervisor.deaths.length;
      }, 200);
      stopSupervising = () => {
        clearInterval(told);
        supervisor.stop();
      };
      return { deaths: supervisor.deaths, stop: () => stopSupervising() };
    },
    recentLogs: () => system.recentLogs(80),
    // Supervision first: a worker stopped here is not replaced.
    stop: () =>
      cleanUp(
        async () => stopSupervising(),
        () => system.stop(),
        () => cluster.stop(),
        () => postgres.remove(),
      ),
  };
}

async function onHosts(
  network: HostNetwork,
  postgres: ThrowawayPostgres,
  cluster: LocalRedisCluster,
  system: System,
  undo: Array<() => Promise<unknown> | undefined>,
): Promise<ChaosWorld> {
  const postgresProxies = new Map<Host, DelayProxy>();
  const databaseUrl = new URL(postgres.databaseUrl);
  for (const host of network.hosts) {
    const proxy = await startDelayProxy({
      listen: { host: host.links.postgres.rootAddress },
      target: { host: '127.0.0.1', port: Number(databaseUrl.port) },
    });
    postgresProxies.set(host, proxy);
    undo.push(() => proxy.close());
  }
  const started: HostWorker[] = [];
  const perHost = new Map<Host, number>();
  const startOn = (host: Host) => {
    const n = perHost.get(host) ?? 0;
    perHost.set(host, n + 1);
    const proxy = postgresProxies.get(host) as DelayProxy;
    const url = new URL(databaseUrl);
    url.hostname = proxy.host;
    url.port = String(proxy.port);
    const worker = new HostWorker(host, `h${host.number}w${n}`, {
      ...system.env,
      DATABASE_URL: url.toString(),
      // The "worker started" line, which says it runs, is an info line.
      LOG_LEVEL: 'info',
    });
    started.push(worker);
    return worker;
  };
  const stopWorkers = () => Promise.all(started.map((w) => w.stop(5000)));
  undo.push(stopWorkers);
  for (const host of network.hosts) startOn(host);
  await Promise.all(started.map((w) => w.waitStarted()));

  const asChaosWorker = (w: HostWorker): ChaosWorker => ({
    name: w.name,
    host: w.host,
    get alive() {
      return w.alive;
    },
    kill: (signal) => void w.child.kill(signal),
  });
  let supervising = false;
  const heal = async () => {
    await network.healAll();
    for (const host of network.hosts) cluster.setDelay(0, host.links.redis.hostAddress);
    for (const proxy of postgresProxies.values()) proxy.setDelay(0);
  };
  return {
    postgres,
    cluster,
    system,
    hosts: { network, postgresProxies },
    liveWorkers: () => started.filter((w) => w.alive).map(asChaosWorker),
    supervise: (onDeath) => {
      const deaths: string[] = [];
      supervising = true;
      const watch = (worker: HostWorker) => {
        worker.child.once('exit', (code, signal) => {
          if (!supervising) return;
          const next = startOn(worker.host);
          // One that ended by itself says why in its last line (e.g. a service it could not reach at start).
          const said = signal === null ? `: ${worker.lines.at(-1)?.line.slice(0, 240) ?? 'nothing'}` : '';
          const line = `${worker.name} (pid ${worker.child.pid}) exited (${signal ?? code}${said}); ${next.name} started on host ${worker.host.number}`;
          deaths.push(line);
          onDeath?.(line);
          watch(next);
        });
      };
      for (const worker of started) if (worker.alive) watch(worker);
      return {
        deaths,
        stop: () => {
          supervising = false;
        },
      };
    },
    recentLogs: () =>
      [...started.filter((w) => w.alive).map((w) => w.recentLogs(30)), system.recentLogs(40)].join('\n'),
    // Supervision first, so that a worker stopped here is not replaced; the links healed, so that
    // the workers can shut down cleanly (killed if they do not).
    stop: () =>
      cleanUp(
        async () => {
          supervising = false;
        },
        heal,
        stopWorkers,
        () => system.stop(),
        ...[...postgresProxies.values()].map((p) => () => p.close()),
        () => cluster.stop(),
        () => postgres.remove(),
        () => network.remove(),
      ),
  };
}
