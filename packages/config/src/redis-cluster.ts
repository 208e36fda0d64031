/** A node of a Redis Cluster, as `REDIS_CLUSTER_NODES` names it. */
export interface ClusterNode {
  host: string;
  port: number;
}

/** `host:port,host:port,...` (an IPv6 host in brackets); throws naming the first entry that is not one. */
export function parseClusterNodes(value: string): ClusterNode[] {
  const nodes = value
    .split(',')
    .map((entry) => entry.trim())
    .filter((entry) => entry !== '')
    .map((entry) => {
      const match = /^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(entry);
      const port = Number(match?.[2]);
      if (!match?.[1] || port < 1 || port > 65535) throw new Error(`"${entry}" is not a host:port`);
      return { host: match[1].replace(/^\[|\]$/g, ''), port };
    });
  if (nodes.length === 0) throw new Error('names no node');
  return nodes;
}
