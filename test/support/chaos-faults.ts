import { execFile } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import type { ChaosHosts, ChaosWorld } from './chaos-world.ts';
import type { Random } from './concurrency.ts';
import { until } from './faults.ts';
import type { Host } from './netns.ts';
import type { LocalRedisCluster } from './redis-cluster.ts';

const execFileAsync = promisify(execFile);

/** What the schedule draws for one fault before it runs: which one (0–1) and how long (0–1000). */
export interface Draw {
  pick: number;
  ms: number;
}

/**
 * A fault: it starts, lasts a while, and heals itself before it resolves, with a line saying what
 * it did. Everything it draws comes from its `Draw`, taken by the schedule before it runs, so that
 * two faults at once cannot change each other's draws and a seed replays the same schedule. What
 * it picks from (the live workers, the masters) is the system's state when it runs.
 */
export interface Fault {
  /** A short name, for the tally of a run. */
  kind: string;
  /** What it does, for the log. */
  name: string;
  /**
   * Faults with the same key never run at once (the second waits for the first): two failovers at
   * once would leave two masters of three down, and no replica could be elected.
   */
  lock?: (draw: Draw) => string;
  run(draw: Draw, note: (line: string) => void): Promise<string>;
}

/** The slowdown of a slowed host's links, each way. */
export const SLOW_MS = 200;

const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

/** The faults one step of the schedule can draw; those on hosts only when the workers run on hosts. */
export function faultsOf(world: ChaosWorld): Fault[] {
  return [
    ...workerFaults(world),
    ...clusterFaults(world.cluster),
    ...postgresFaults(world),
    ...(world.hosts ? hostFaults(world.hosts, world.cluster) : []),
  ];
}

function workerFaults(world: ChaosWorld): Fault[] {
  const liveWorker = (pick: number) => {
    const live = world.liveWorkers();
    return live[Math.floor(pick * live.length)];
  };
  return [
    {
      kind: 'worker kill -9',
      name: 'kill -9 of a worker (its supervisor starts another on its host)',
      run: async ({ pick }) => {
        const worker = liveWorker(pick);
        if (!worker) return 'no live worker to kill';
        worker.kill('SIGKILL');
        return `${worker.name} killed`;
      },
    },
    {
      kind: 'worker SIGSTOP',
      name: 'SIGSTOP of a worker for 2–8 s, past its lease and job locks',
      run: async ({ pick, ms }) => {
        const worker = liveWorker(pick);
        if (!worker) return 'no live worker to pause';
        const pauseMs = 2000 + ms * 6;
        worker.kill('SIGSTOP');
        await sleep(pauseMs);
        worker.kill('SIGCONT');
        return `${worker.name} paused for ${seconds(pauseMs)}${worker.alive ? '' : ' (killed meanwhile)'}`;
      },
    },
  ];
}

/** A live master (by the draw) and its replica, as the cluster now says. */
async function masterAndReplica(cluster: LocalRedisCluster, pick: number) {
  const masters = await cluster.masters();
  const master = masters[Math.floor(pick * masters.length)] as number;
  const view = await cluster.topology();
  const id = view.find((n) => n.port === master)?.id;
  const replica = view.find((n) => n.masterId === id && !n.flags.some((f) => f.startsWith('fail')))?.port;
  if (replica === undefined) throw new Error(`the master at :${master} has no replica: ${JSON.stringify(view)}`);
  return { master, replica };
}

function clusterFaults(cluster: LocalRedisCluster): Fault[] {
  return [
    {
      kind: 'cluster master failover',
      name:
        'Redis Cluster master failover: kill -9 of a master under traffic, its replica promoted, ' +
        'the killed node started again 0–2 s later to rejoin as a replica',
      lock: () => 'cluster',
      run: async ({ pick, ms }, note) => {
        const { master, replica } = await masterAndReplica(cluster, pick);
        const killedAt = Date.now();
        await cluster.kill(master);
        note(`master :${master} killed; its replica :${replica} to take over`);
        await until(
          `the replica :${replica} promoted in place of :${master}`,
          async () =>
            (await cluster.topology(master)).find((n) => n.port === replica)?.flags.includes('master') ?? false,
          20_000,
          100,
        );
        const promotedMs = Date.now() - killedAt;
        note(`replica :${replica} promoted to master ${seconds(promotedMs)} after the kill`);
        await sleep(ms * 2);
        await cluster.restart(master);
        await until(
          `:${master} back as a replica of :${replica}`,
          async () => {
            const view = await cluster.topology();
            const newMaster = view.find((n) => n.port === replica);
            const old = view.find((n) => n.port === master);
            return old?.flags.includes('slave') === true && old.masterId === newMaster?.id;
          },
          20_000,
          100,
        );
        // A replica synced with each master again: the next failover has one to promote.
        await cluster.waitRestored(30_000);
        return (
          `:${replica} took over from :${master} in ${seconds(promotedMs)}; :${master} rejoined as its replica; ` +
          `the cluster whole again ${seconds(Date.now() - killedAt)} after the kill`
        );
      },
    },
    {
      // On a cluster, the single Redis' "killed with nothing persisted" is a shard's: a master and
      // its replica down at once, so nothing can take over, and both back with no data.
      kind: 'cluster shard lost',
      name:
        'a Redis Cluster shard lost: a master and its replica killed at once (nothing persisted) and ' +
        'started again 1–4 s later, empty',
      lock: () => 'cluster',
      run: async ({ pick, ms }, note) => {
        const { master, replica } = await masterAndReplica(cluster, pick);
        const downMs = 1000 + ms * 3;
        const killedAt = Date.now();
        await Promise.all([cluster.kill(master), cluster.kill(replica)]);
        note(`master :${master} and its replica :${replica} killed`);
        await sleep(downMs);
        await cluster.restart(master);
        await cluster.restart(replica);
        await cluster.waitRestored(30_000);
        return (
          `:${master} and :${replica} down for ${seconds(downMs)}, back empty; the cluster whole again ` +
          `${seconds(Date.now() - killedAt)} after the kill`
        );
      },
    },
  ];
}

function postgresFaults({ postgres }: ChaosWorld): Fault[] {
  // One server: a stop and a crash drawn at once would both start it again, and the second start
  // finds it running and fails. They wait for each other.
  const lock = () => 'postgres';
  return [
    {
      kind: 'PostgreSQL crash',
      name: 'PostgreSQL crashed (immediate) and started again after 1–3 s',
      lock,
      run: async ({ ms }) => {
        await postgres.crash();
        await sleep(1000 + ms * 2);
        await postgres.start();
        return `down ${seconds(1000 + ms * 2)}`;
      },
    },
    {
      kind: 'PostgreSQL stop',
      name: 'PostgreSQL stopped cleanly and started again after 1–3 s',
      lock,
      run: async ({ ms }) => {
        await postgres.stop();
        await sleep(1000 + ms * 2);
        await postgres.start();
        return `down ${seconds(1000 + ms * 2)}`;
      },
    },
  ];
}

function hostFaults({ network, postgresProxies }: ChaosHosts, cluster: LocalRedisCluster): Fault[] {
  const hostOf = (pick: number) => network.hosts[Math.floor(pick * network.hosts.length)] as Host;
  const redisNodes = cluster.nodes.split(',');
  const postgresOf = (host: Host) => {
    const proxy = postgresProxies.get(host);
    return `${proxy?.host}:${proxy?.port}`;
  };
  /** What the host reaches now: each endpoint, and whether a TCP connection to it opened within 2 s. */
  const reach = async (host: Host) => {
    const { stdout } = await execFileAsync('ip', [
      'netns',
      'exec',
      host.namespace,
      'bash',
      '-c',
      'while [ $# -gt 1 ]; do h=$1; p=$2; shift 2; (timeout 2 bash -c "exec 3<>/dev/tcp/$h/$p" 2>/dev/null && echo "$h:$p up" || echo "$h:$p down") & done; wait',
      'reach',
      ...[...redisNodes, postgresOf(host)].flatMap((endpoint) => endpoint.split(':')),
    ]);
    const up = new Set(stdout.split('\n').flatMap((line) => (line.endsWith(' up') ? [line.split(' ')[0]] : [])));
    return { redis: redisNodes.filter((n) => up.has(n)).length, postgres: up.has(postgresOf(host)) };
  };
  const reachLine = (r: { redis: number; postgres: boolean }) =>
    `it reaches ${r.redis} of ${redisNodes.length} cluster nodes and ${r.postgres ? '' : 'not '}PostgreSQL`;

  return [
    {
      kind: 'host cut from Redis',
      name: 'a worker host cut off from Redis (every cluster node) for 2–8 s, PostgreSQL still reachable',
      lock: ({ pick }) => `redis link of host ${hostOf(pick).number}`,
      run: async ({ pick, ms }, note) => {
        const host = hostOf(pick);
        const cutMs = 2000 + ms * 6;
        const cutAt = Date.now();
        await network.cut(host, 'redis');
        const during = await reach(host);
        note(`host ${host.number} cut off from Redis: ${reachLine(during)}`);
        // Only its link to Redis is down; its link to PostgreSQL may be cut by another fault.
        if (during.redis > 0) throw new Error(`host ${host.number} cut off from Redis still reaches a cluster node`);
        await sleep(Math.max(0, cutAt + cutMs - Date.now()));
        await network.heal(host, 'redis');
        return `host ${host.number} cut off from Redis for ${seconds(cutMs)}, healed`;
      },
    },
    {
      kind: 'host cut from PostgreSQL',
      name: 'a worker host cut off from PostgreSQL for 3–10 s, Redis still reachable',
      lock: ({ pick }) => `postgres link of host ${hostOf(pick).number}`,
      run: async ({ pick, ms }, note) => {
        const host = hostOf(pick);
        const cutMs = 3000 + ms * 7;
        const cutAt = Date.now();
        await network.cut(host, 'postgres');
        const during = await reach(host);
        note(`host ${host.number} cut off from PostgreSQL: ${reachLine(during)}`);
        if (during.postgres) throw new Error(`host ${host.number} cut off from PostgreSQL still reaches it`);
        await sleep(Math.max(0, cutAt + cutMs - Date.now()));
        await network.heal(host, 'postgres');
        return `host ${host.number} cut off from PostgreSQL for ${seconds(cutMs)}, healed`;
      },
    },
    {
      kind: 'host slowed',
      name: `a worker host's links to Redis and PostgreSQL slowed by ${SLOW_MS} ms each way for 3–8 s`,
      lock: ({ pick }) => `delay of host ${hostOf(pick).number}`,
      run: async ({ pick, ms }, note) => {
        const host = hostOf(pick);
        const slowMs = 3000 + ms * 5;
        const slowAt = Date.now();
        const proxy = postgresProxies.get(host);
        cluster.setDelay(SLOW_MS, host.links.redis.hostAddress);
        proxy?.setDelay(SLOW_MS);
        // A PING from the host, through the proxy of a node that runs (another fault may have
        // killed some): about twice the delay, and the time to start redis-cli.
        const running = cluster.members.find((m) => cluster.isRunning(m.port));
        const [pingHost = '', pingPort = ''] = (running?.announced ?? '').split(':');
        const pingStarted = Date.now();
        const ping = await execFileAsync(
          'ip',
          ['netns', 'exec', host.namespace, 'redis-cli', '-h', pingHost, '-p', pingPort, 'ping'],
          { timeout: 10_000 },
        ).then(
          (r) => `${r.stdout.trim()} after ${Date.now() - pingStarted} ms`,
          (e: Error) => `failed: ${e.message.split('\n')[0]}`,
        );
        note(`host ${host.number} slowed: a PING from it to a cluster node: ${ping}`);
        await sleep(Math.max(0, slowAt + slowMs - Date.now()));
        cluster.setDelay(0, host.links.redis.hostAddress);
        proxy?.setDelay(0);
        return `host ${host.number} slowed for ${seconds(slowMs)}, back to full speed`;
      },
    },
  ];
}

/**
 * Deals the faults like cards: each one once, in an order drawn from `random`, then a new round.
 * A run of a few minutes thus has every fault at least once, whatever the seed.
 */
export class Deck {
  private order: number[] = [];

  constructor(
    private readonly random: Random,
    private readonly size: number,
  ) {}

  next(): number {
    if (this.order.length === 0) this.order = this.random.shuffle(Array.from({ length: this.size }, (_, i) => i));
    return this.order.pop() as number;
  }
}

/** Runs tasks one at a time per key (none: at once), in the order they asked. */
export class KeyedLock {
  private readonly tails = new Map<string, Promise<unknown>>();

  async hold<T>(key: string | undefined, task: () => Promise<T>): Promise<T> {
    if (key === undefined) return task();
    const before = this.tails.get(key) ?? Promise.resolve();
    const run = before.catch(() => {}).then(task);
    this.tails.set(key, run);
    try {
      return await run;
    } finally {
      if (this.tails.get(key) === run) this.tails.delete(key);
    }
  }
}
