import { type ChildProcess, execFile, execFileSync, spawn } from 'node:child_process';
import { appendFileSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { isReachable } from '@cs/config';
import { migrateDatabase, urlAsRole } from '@cs/db';
import { freePort } from './system.ts';

/**
 * Worker "hosts" on one machine: each a Linux network namespace that reaches PostgreSQL and Redis
 * over a veth pair of its own per service, so that a host can be cut off from one service while
 * the others are not (`ip link set <root side> down`), with no netem and no iptables. Everything
 * made here is tracked and removed by the object that made it; nothing is looked up or removed by
 * name pattern, since other runs share the machine.
 */

const execFileAsync = promisify(execFile);
const root = join(import.meta.dirname, '..', '..');

export type Service = 'postgres' | 'redis';
export const SERVICES: readonly Service[] = ['postgres', 'redis'];

async function ip(...args: string[]): Promise<string> {
  const { stdout } = await execFileAsync('ip', args);
  return stdout;
}

/**
 * Why namespaces cannot be made here, or undefined when they can: root, `ip netns add`, a veth
 * pair into the namespace. Synchronous, so a test file can decide at collection time.
 */
export function netnsUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'not running as root (network namespaces need CAP_SYS_ADMIN)';
  const probe = `cs-${process.pid}-probe`;
  try {
    execFileSync('ip', ['netns', 'add', probe], { stdio: 'pipe' });
  } catch (error) {
    return `\`ip netns add\` failed: ${String((error as { stderr?: Buffer }).stderr ?? error).trim()}`;
  }
  try {
    execFileSync('ip', ['-n', probe, 'link', 'add', 'probe0', 'type', 'veth', 'peer', 'name', 'probe1'], {
      stdio: 'pipe',
    });
    return undefined;
  } catch (error) {
    return `a veth pair cannot be made: ${String((error as { stderr?: Buffer }).stderr ?? error).trim()}`;
  } finally {
    try {
      execFileSync('ip', ['netns', 'del', probe], { stdio: 'pipe' });
    } catch {}
  }
}

/** One service's link of one host: a veth pair, its root side serving the service. */
export interface HostLink {
  service: Service;
  /** The root namespace's end: where the host reaches the service; set down to cut the host off. */
  rootDevice: string;
  rootAddress: string;
  /** The host's own end, inside its namespace. */
  hostAddress: string;
  up: boolean;
}

export interface Host {
  /** 1-based, as the scenario names them. */
  number: number;
  namespace: string;
  links: Record<Service, HostLink>;
}

/**
 * `count` namespaces, each with a veth pair per service on a /30 of its own, from a 10.x.y.0/24
 * that nothing on the machine uses. `remove()` deletes the namespaces (a veth pair goes with its
 * namespace) and any root-side device left over.
 */
export class HostNetwork {
  readonly hosts: Host[] = [];
  private readonly namespaces: string[] = [];
  private readonly devices: string[] = [];
  /** Devices of the root namespace alone (no namespace takes them with it). */
  private readonly rootOnlyDevices: string[] = [];
  private readonly shared = new Map<Service, string>();
  private readonly removeOnExit = () => this.removeSync();

  private constructor(readonly subnet: string) {
    process.once('exit', this.removeOnExit);
  }

  static async create(count: number): Promise<HostNetwork> {
    if (count > 30) throw new Error('at most 30 hosts fit a /24 of /30s');
    const network = new HostNetwork(await freeSubnet());
    try {
      for (let n = 1; n <= count; n++) await network.addHost(n);
    } catch (error) {
      await network.remove();
      throw error;
    }
    return network;
  }

  /** The root-side addresses, where the servers must listen. */
  get rootAddresses(): string[] {
    return this.hosts.flatMap((h) => SERVICES.map((s) => h.links[s].rootAddress));
  }

  /** Cuts the host off from the service: its packets are dropped, no reset, no refusal. */
  async cut(host: Host, service: Service): Promise<void> {
    await ip('link', 'set', host.links[service].rootDevice, 'down');
    host.links[service].up = false;
  }

  async heal(host: Host, service: Service): Promise<void> {
    await ip('link', 'set', host.links[service].rootDevice, 'up');
    host.links[service].up = true;
  }

  /**
   * One address, the same for every host, where the hosts reach `service` over their own link for
   * it: held in the root namespace by a veth pair of its own (a machine may lack the dummy device),
   * and routed from each host through its `service` link. For a service whose servers all announce
   * one address (a Redis Cluster's nodes, each on a port of its own): the root namespace reaches it
   * as a local address, and a cut of a host's link cuts that host off from every server at it.
   */
  async sharedAddress(service: Service): Promise<string> {
    const known = this.shared.get(service);
    if (known) return known;
    const address = `${this.subnet}.${service === 'postgres' ? 253 : 254}`;
    const device = `v${process.pid % 1_000_000}s${service === 'postgres' ? 'p' : 'r'}`;
    await ip('link', 'add', device, 'type', 'veth', 'peer', 'name', `${device}x`);
    this.rootOnlyDevices.push(device);
    await ip('addr', 'add', `${address}/32`, 'dev', device);
    await ip('link', 'set', device, 'up');
    await ip('link', 'set', `${device}x`, 'up');
    for (const host of this.hosts) {
      const link = host.links[service];
      const hostDevice = service === 'postgres' ? 'pg0' : 'redis0';
      await ip('-n', host.namespace, 'route', 'add', `${address}/32`, 'via', link.rootAddress, 'dev', hostDevice);
    }
    this.shared.set(service, address);
    return address;
  }

  async healAll(): Promise<void> {
    for (const host of this.hosts)
      for (const service of SERVICES) if (!host.links[service].up) await this.heal(host, service);
  }

  /** The host's TCP sockets with their timers and retransmissions (`ss -tnoi`), for a failing test's message. */
  async sockets(host: Host): Promise<string> {
    return ip('netns', 'exec', host.namespace, 'ss', '-tnoi').catch((error: Error) => `ss failed: ${error.message}`);
  }

  async remove(): Promise<void> {
    process.off('exit', this.removeOnExit);
    for (const namespace of this.namespaces.splice(0)) await ip('netns', 'del', namespace).catch(() => '');
    // Gone with their namespaces; a device whose peer was never moved in is deleted by name.
    const left = await ip('-o', 'link', 'show').catch(() => '');
    for (const device of [...this.devices.splice(0), ...this.rootOnlyDevices.splice(0)]) {
      if (left.includes(` ${device}@`) || left.includes(` ${device}:`)) await ip('link', 'del', device).catch(() => '');
    }
  }

  /** For a test process that exits without its afterAll: no namespace outlives it. */
  private removeSync(): void {
    for (const namespace of this.namespaces.splice(0)) {
      try {
        execFileSync('ip', ['netns', 'del', namespace], { stdio: 'ignore' });
      } catch {}
    }
    for (const device of this.rootOnlyDevices.splice(0)) {
      try {
        execFileSync('ip', ['link', 'del', device], { stdio: 'ignore' });
      } catch {}
    }
  }

  private async addHost(number: number): Promise<void> {
    const namespace = `cs-${process.pid}-h${number}`;
    await ip('netns', 'add', namespace);
    this.namespaces.push(namespace);
    await ip('-n', namespace, 'link', 'set', 'lo', 'up');
    const links = {} as Record<Service, HostLink>;
    for (const [i, service] of SERVICES.entries()) {
      // /30s: .4k+1 the root side, .4k+2 the host's side.
      const base = 4 * (2 * (number - 1) + i);
      const rootDevice = `v${process.pid % 1_000_000}h${number}${service === 'postgres' ? 'p' : 'r'}`;
      const hostDevice = service === 'postgres' ? 'pg0' : 'redis0';
      const rootAddress = `${this.subnet}.${base + 1}`;
      const hostAddress = `${this.subnet}.${base + 2}`;
      await ip('link', 'add', rootDevice, 'type', 'veth', 'peer', 'name', hostDevice, 'netns', namespace);
      this.devices.push(rootDevice);
      await ip('addr', 'add', `${rootAddress}/30`, 'dev', rootDevice);
      await ip('link', 'set', rootDevice, 'up');
      await ip('-n', namespace, 'addr', 'add', `${hostAddress}/30`, 'dev', hostDevice);
      await ip('-n', namespace, 'link', 'set', hostDevice, 'up');
      links[service] = { service, rootDevice, rootAddress, hostAddress, up: true };
    }
    this.hosts.push({ number, namespace, links });
  }
}

/** A 10.x.y (x in 200–249) that no address or route of the root namespace falls in. */
async function freeSubnet(): Promise<string> {
  const taken = `${await ip('-o', 'addr', 'show')}\n${await ip('route', 'show', 'table', 'all')}`;
  for (let attempt = 0; attempt < 100; attempt++) {
    const candidate = `10.${200 + Math.floor(Math.random() * 50)}.${Math.floor(Math.random() * 256)}`;
    // Clear of the whole 10.x.0.0/16: a route into it, however wide, could cover the /24.
    const sixteen = candidate.split('.').slice(0, 2).join('.');
    if (!taken.includes(`${sixteen}.`)) return candidate;
  }
  throw new Error('no free 10.x.y.0/24 found for the hosts');
}

async function waitForPort(port: number, host: string, up: boolean, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if ((await isReachable(`tcp://${host}:${port}`, port, 1000)) === up) return;
    await sleep(100);
  }
  throw new Error(`${host}:${port} did not ${up ? 'open' : 'close'} within ${timeoutMs} ms`);
}

async function freePorts(count: number): Promise<number[]> {
  const ports = new Set<number>();
  while (ports.size < count) ports.add(await freePort());
  return [...ports];
}

/** As `postgresBinDir` of scripts/local-services.mjs: Debian's newest, else initdb's on PATH. */
function postgresBinDir(): string {
  const base = '/usr/lib/postgresql';
  if (existsSync(base)) {
    for (const v of readdirSync(base).sort((a, b) => Number(b) - Number(a))) {
      if (existsSync(join(base, v, 'bin', 'initdb'))) return join(base, v, 'bin');
    }
  }
  return execFileSync('sh', ['-c', 'dirname "$(command -v initdb)"'], { encoding: 'utf8' }).trim();
}

export interface HostServers {
  postgres: {
    port: number;
    /** The tables' owner, on loopback: for the test's own SQL and the migration. */
    ownerUrl: string;
    /** The application role on loopback: for the API. */
    databaseUrl: string;
    /** The application role at another address (a host's root-side address, a proxy). */
    databaseUrlAt(host: string, port?: number): string;
    /** The server's log, its last lines, for a failing test's message. */
    log(): string;
    /** The whole of it. */
    fullLog(): string;
  };
  redis: { port: number; url: string; urlAt(host: string, port?: number): string };
  stop(): Promise<void>;
}

/**
 * A PostgreSQL and a Redis of the test's own, listening on loopback and on `addresses` (the hosts'
 * root-side veth addresses), the database migrated with the application role `cs_app` (password
 * cs_app). Connections from `allowFrom` (a CIDR) are trusted, as loopback's are. Like
 * `throwawayPostgres` in faults.ts, but that one listens on loopback only.
 */
export async function startHostServers({
  addresses,
  allowFrom,
}: {
  addresses: string[];
  allowFrom: string;
}): Promise<HostServers> {
  const [pgPort, redisPort] = (await freePorts(2)) as [number, number];
  const asRoot = process.getuid?.() === 0;
  const asPostgres = (command: string, args: string[]) =>
    asRoot ? execFileAsync('runuser', ['-u', 'postgres', '--', command, ...args]) : execFileAsync(command, args);
  const bin = postgresBinDir();
  const pgDir = mkdtempSync(join(tmpdir(), 'cs-hosts-pg-'));
  const redisDir = mkdtempSync(join(tmpdir(), 'cs-hosts-redis-'));
  let postgresStarted = false;
  let redis: ChildProcess | undefined;

  const stop = async () => {
    if (redis && redis.exitCode === null && redis.signalCode === null) {
      const exited = new Promise((resolve) => redis?.once('exit', resolve));
      redis.kill('SIGKILL');
      await exited;
    }
    if (postgresStarted) {
      await asPostgres(join(bin, 'pg_ctl'), ['-D', pgDir, '-w', '-t', '30', '-m', 'immediate', 'stop']).catch(() => {});
      postgresStarted = false;
    }
    process.off('exit', killOnExit);
    rmSync(pgDir, { recursive: true, force: true });
    rmSync(redisDir, { recursive: true, force: true });
  };
  const killOnExit = () => {
    redis?.kill('SIGKILL');
    if (postgresStarted) {
      try {
        execFileSync(
          asRoot ? 'runuser' : join(bin, 'pg_ctl'),
          [...(asRoot ? ['-u', 'postgres', '--', join(bin, 'pg_ctl')] : []), '-D', pgDir, '-m', 'immediate', 'stop'],
          { stdio: 'ignore' },
        );
      } catch {}
    }
  };
  process.once('exit', killOnExit);

  try {
    if (asRoot) execFileSync('chown', ['postgres:postgres', pgDir]);
    await asPostgres(join(bin, 'initdb'), ['-D', pgDir, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--no-sync']);
    appendFileSync(join(pgDir, 'pg_hba.conf'), `host all all ${allowFrom} trust\n`);
    await asPostgres(join(bin, 'pg_ctl'), [
      '-D',
      pgDir,
      '-w',
      '-t',
      '30',
      '-l',
      join(pgDir, 'server.log'),
      '-o',
      `-p ${pgPort} -k ${pgDir} -c listen_addresses=${['127.0.0.1', ...addresses].join(',')} -c fsync=off -c max_connections=200`,
      'start',
    ]);
    postgresStarted = true;
    await waitForPort(pgPort, '127.0.0.1', true);

    redis = spawn(
      'redis-server',
      [
        '--port',
        String(redisPort),
        '--bind',
        '127.0.0.1',
        ...addresses,
        '--protected-mode',
        'no',
        '--save',
        '',
        '--appendonly',
        'no',
        '--dir',
        redisDir,
      ],
      { stdio: 'ignore' },
    );
    await waitForPort(redisPort, '127.0.0.1', true);
    for (const address of addresses) {
      await waitForPort(pgPort, address, true, 5000);
      await waitForPort(redisPort, address, true, 5000);
    }

    const readLog = () => {
      try {
        return readFileSync(join(pgDir, 'server.log'), 'utf8');
      } catch {
        return '';
      }
    };
    const ownerUrl = `postgres://postgres@127.0.0.1:${pgPort}/charge_sales`;
    const databaseUrl = urlAsRole(ownerUrl, 'cs_app', 'cs_app');
    await migrateDatabase(ownerUrl, { applicationUrl: databaseUrl });
    const at = (url: string, host: string, port: number) => {
      const u = new URL(url);
      u.hostname = host;
      u.port = String(port);
      return u.toString();
    };
    return {
      postgres: {
        port: pgPort,
        ownerUrl,
        databaseUrl,
        databaseUrlAt: (host, port = pgPort) => at(databaseUrl, host, port),
        log: () => readLog().split('\n').slice(-40).join('\n'),
        fullLog: readLog,
      },
      redis: {
        port: redisPort,
        url: `redis://127.0.0.1:${redisPort}`,
        urlAt: (host, port = redisPort) => `redis://${host}:${port}`,
      },
      stop,
    };
  } catch (error) {
    await stop();
    throw error;
  }
}

/** One line a process wrote, with when the test received it. */
export interface LogLine {
  at: number;
  line: string;
}

/**
 * A worker process inside a host's namespace (`ip netns exec`, which execs: the child's pid is
 * the worker's). Its output is kept, line by line, for a failing test's message and for the
 * events a test looks for; `id` is its partition manager's id (from its "worker started" line,
 * which needs LOG_LEVEL info or lower), the value of the leases it holds.
 */
export class HostWorker {
  readonly child: ChildProcess;
  readonly lines: LogLine[] = [];
  id: string | undefined;
  private readonly killOnExit = () => this.child.kill('SIGKILL');

  constructor(
    readonly host: Host,
    readonly name: string,
    env: Record<string, string>,
    /** Node options before the entry point, e.g. `--import` of a diagnostic preload. */
    nodeArgs: string[] = [],
  ) {
    this.child = spawn(
      'ip',
      [
        'netns',
        'exec',
        host.namespace,
        process.execPath,
        ...nodeArgs,
        '--import',
        'tsx',
        join(root, 'apps/worker/src/index.ts'),
      ],
      { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] },
    );
    process.once('exit', this.killOnExit);
    this.child.once('exit', () => process.off('exit', this.killOnExit));
    const keep = () => {
      let partial = '';
      return (chunk: Buffer) => {
        const lines = (partial + chunk.toString()).split('\n');
        partial = lines.pop() ?? '';
        for (const line of lines) {
          this.lines.push({ at: Date.now(), line });
          if (this.id === undefined && line.includes('"worker started"')) {
            this.id = /"id":"([0-9a-f-]{36})"/.exec(line)?.[1];
          }
          if (process.env.TEST_SHOW_LOGS) process.stderr.write(`[${name}] ${line}\n`);
        }
        if (this.lines.length > 20_000) this.lines.splice(0, 5_000);
      };
    };
    this.child.stdout?.on('data', keep());
    this.child.stderr?.on('data', keep());
  }

  get alive(): boolean {
    return this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Lines written since `since` that match `pattern`. */
  linesMatching(pattern: RegExp, since = 0): LogLine[] {
    return this.lines.filter((l) => l.at >= since && pattern.test(l.line));
  }

  recentLogs(count = 30): string {
    return this.lines
      .slice(-count)
      .map((l) => `[${this.name}] ${l.line}`)
      .join('\n');
  }

  async waitStarted(timeoutMs = 30_000): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    while (this.id === undefined) {
      if (!this.alive) throw new Error(`${this.name} exited before starting:\n${this.recentLogs()}`);
      if (Date.now() > deadline)
        throw new Error(`${this.name} did not start in ${timeoutMs} ms:\n${this.recentLogs()}`);
      await sleep(50);
    }
    return this.id;
  }

  /** SIGTERM, then SIGKILL after `graceMs`; resolves once it has exited. */
  async stop(graceMs = 5000): Promise<void> {
    if (!this.alive) return;
    const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    await exited;
    clearTimeout(timer);
  }
}
