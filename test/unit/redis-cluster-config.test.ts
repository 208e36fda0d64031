import { loadConfig, parseClusterNodes } from '@cs/config';
import { createRedis, redisTargetOf } from '@cs/queue';
import { Cluster, Redis } from 'ioredis';
import { describe, expect, it } from 'vitest';

const fail = (line: string): never => {
  throw new Error(line);
};
const load = (env: Record<string, string>) => loadConfig({ env, fail, needsAdminToken: false });

describe('parseClusterNodes', () => {
  it.each([
    ['127.0.0.1:7000', [{ host: '127.0.0.1', port: 7000 }]],
    [
      '10.0.0.1:7000,10.0.0.2:7001,10.0.0.3:7002',
      [
        { host: '10.0.0.1', port: 7000 },
        { host: '10.0.0.2', port: 7001 },
        { host: '10.0.0.3', port: 7002 },
      ],
    ],
    ['redis-0.redis.svc.cluster.local:6379', [{ host: 'redis-0.redis.svc.cluster.local', port: 6379 }]],
    // Spaces around entries and empty entries (a trailing comma) are ignored.
    [
      ' node-a:1 , node-b:65535 ,',
      [
        { host: 'node-a', port: 1 },
        { host: 'node-b', port: 65535 },
      ],
    ],
    // IPv6 hosts go in brackets, which are not part of the host.
    ['[::1]:7000', [{ host: '::1', port: 7000 }]],
    [
      '[2001:db8::1]:6380,[fe80::1:2]:6381',
      [
        { host: '2001:db8::1', port: 6380 },
        { host: 'fe80::1:2', port: 6381 },
      ],
    ],
  ])('reads %j', (value, nodes) => {
    expect(parseClusterNodes(value)).toEqual(nodes);
  });

  it.each([
    ['127.0.0.1', '"127.0.0.1" is not a host:port'],
    ['node-a:7000,node-b', '"node-b" is not a host:port'],
    ['host:0', '"host:0" is not a host:port'],
    ['host:65536', '"host:65536" is not a host:port'],
    ['host:123456', '"host:123456" is not a host:port'],
    ['host:http', '"host:http" is not a host:port'],
    ['host:-1', '"host:-1" is not a host:port'],
    ['redis://host:7000', '"redis://host:7000" is not a host:port'],
    ['user:pw@host:7000', '"user:pw@host:7000" is not a host:port'],
    ['host:7000:7001', '"host:7000:7001" is not a host:port'],
    ['host name:7000', '"host name:7000" is not a host:port'],
    // An IPv6 address without brackets is ambiguous (where does the port start?), so refused.
    ['::1:7000', '"::1:7000" is not a host:port'],
    ['[::1]', '"[::1]" is not a host:port'],
    ['[not-hex]:7000', '"[not-hex]:7000" is not a host:port'],
    ['', 'names no node'],
    [' , ,', 'names no node'],
  ])('refuses %j, naming the entry', (value, message) => {
    expect(() => parseClusterNodes(value)).toThrow(message);
  });
});

describe('loadConfig with REDIS_CLUSTER_NODES', () => {
  it('is a single Redis at REDIS_URL when unset', () => {
    const config = load({ REDIS_URL: 'redis://cache:6380' });
    expect(config.REDIS_CLUSTER_NODES).toBeUndefined();
    expect(redisTargetOf(config)).toEqual({ url: 'redis://cache:6380', clusterNodes: undefined });
  });

  it('parses the nodes, and keeps REDIS_URL for the credentials', () => {
    const config = load({
      REDIS_URL: 'redis://app:s3cret@ignored-host:6379',
      REDIS_CLUSTER_NODES: '10.0.0.1:7000, [fd00::2]:7001',
    });
    expect(config.REDIS_CLUSTER_NODES).toEqual([
      { host: '10.0.0.1', port: 7000 },
      { host: 'fd00::2', port: 7001 },
    ]);
    expect(redisTargetOf(config)).toEqual({
      url: 'redis://app:s3cret@ignored-host:6379',
      clusterNodes: [
        { host: '10.0.0.1', port: 7000 },
        { host: 'fd00::2', port: 7001 },
      ],
    });
  });

  it.each([
    ['10.0.0.1:7000,10.0.0.2', 'config: REDIS_CLUSTER_NODES: "10.0.0.2" is not a host:port'],
    ['::1:7000', 'config: REDIS_CLUSTER_NODES: "::1:7000" is not a host:port'],
    [',', 'config: REDIS_CLUSTER_NODES: names no node'],
  ])('refuses %j in one line naming the variable and the entry', (value, line) => {
    expect(() => load({ REDIS_CLUSTER_NODES: value })).toThrow(new Error(line));
  });
});

describe('createRedis', () => {
  // Nothing listens on port 1: the clients are made and disconnected without reaching a server.
  const nowhere = [{ host: '127.0.0.1', port: 1 }];

  it('makes a Cluster client when nodes are given, with the credentials of the URL', () => {
    const client = createRedis({ url: 'redis://app:p%40ss%3Aword@127.0.0.1:6379', clusterNodes: nowhere });
    client.on('error', () => {});
    try {
      expect(client).toBeInstanceOf(Cluster);
      expect((client as Cluster).options.redisOptions).toMatchObject({ username: 'app', password: 'p@ss:word' });
    } finally {
      client.disconnect();
    }
  });

  it('makes a single-server client without nodes', () => {
    const client = createRedis({ url: 'redis://127.0.0.1:1' });
    client.on('error', () => {});
    try {
      expect(client).toBeInstanceOf(Redis);
      expect(client).not.toBeInstanceOf(Cluster);
    } finally {
      client.disconnect();
    }
  });

  it('gives a request path fewer redirections, so a command to a dead master fails fast', () => {
    const api = createRedis({ url: 'redis://127.0.0.1', clusterNodes: nowhere }, { failFast: true }) as Cluster;
    const worker = createRedis({ url: 'redis://127.0.0.1', clusterNodes: nowhere }) as Cluster;
    for (const c of [api, worker]) c.on('error', () => {});
    try {
      expect(api.options).toMatchObject({ enableOfflineQueue: false, maxRedirections: 4 });
      expect(api.options.redisOptions).toMatchObject({ maxRetriesPerRequest: 1 });
      expect(worker.options).toMatchObject({ enableOfflineQueue: true, maxRedirections: 16 });
      expect(worker.options.redisOptions).toMatchObject({ maxRetriesPerRequest: null });
    } finally {
      api.disconnect();
      worker.disconnect();
    }
  });

  it('keeps an ended cluster client, and its duplicates, ended until connect() (ioredis 6.0.0 workaround)', () => {
    const client = createRedis({ url: 'redis://127.0.0.1', clusterNodes: nowhere }) as Cluster;
    const duplicate = client.duplicate();
    for (const c of [client, duplicate]) c.on('error', () => {});
    try {
      for (const c of [client, duplicate]) {
        const internals = c as unknown as { setStatus(status: string): void };
        internals.setStatus('end');
        // What the connection pool's `drain` does when a node dropped after the end.
        internals.setStatus('close');
        expect(c.status).toBe('end');
        internals.setStatus('connecting');
        expect(c.status).toBe('connecting');
      }
    } finally {
      client.disconnect();
      duplicate.disconnect();
    }
  });
});
