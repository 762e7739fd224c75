/**
 * What a gateway node knows of the rest of its cluster: the other workers
 * of its host, and in Redis mode every node on every host.
 *
 * Implementations: `StandaloneCluster` (one process, tests and embedding),
 * `EmbeddedCluster` (the workers of one host, through the primary over
 * IPC), `RedisCluster` (every worker of every host, through the Redis
 * registry and per-node inboxes). test/cluster-contract.test.ts runs the
 * same suite against each.
 *
 * Guarantees, for every implementation:
 *   - `stats` counts every open authenticated socket of every live node;
 *     a node that stopped cleanly is gone from it at once, one that died
 *     within its lease (Redis mode: 4/3 x REGISTRY_LEASE_S);
 *   - `deliver` reaches a connection on any node, at most once, and
 *     resolves false only when no live node holds it (404), never silently;
 *   - every call settles within a deadline (IPC_TIMEOUT_MS, or the Redis
 *     command time-out): a stalled peer gives an error, not a hang;
 *   - `close` removes this node's entries at once; safe to call twice.
 */
import type { Metrics } from '../observability/metrics.js';

export interface ConnectionInfo {
  connectionId: string;
  creatorId: string;
  sessionId: string;
  /** When the socket opened (epoch ms). */
  readonly connectedAt: number;
}

/** One node's open sockets, by creator (a Map: creator ids come from clients). */
export interface LocalStats {
  /** The worker's process id. */
  pid: number;
  total: number;
  /** [creator id, open sockets] pairs. */
  byCreator: Array<[string, number]>;
}

/** The body of GET /api/v1/stats (without `last_check`). Objects without prototypes: keys are client ids. */
export interface ClusterStats {
  total_connections: number;
  connections_by_creator: Record<string, number>;
  /** Open connections by worker (process id, or Redis node id). */
  connections_by_worker: Record<string, number>;
  workers: number;
  workers_answered: number;
}

/** A counts object safe for keys such as `__proto__` or `constructor`. */
export function counts(): Record<string, number> {
  return Object.create(null) as Record<string, number>;
}

/** Adds `n` to `key` in a counts object. */
export function addCount(o: Record<string, number>, key: string, n: number): void {
  o[key] = (o[key] ?? 0) + n;
}

/** Where sockets report their opening and closing. */
export interface ConnectionSink {
  add(c: ConnectionInfo): void;
  remove(c: ConnectionInfo): void;
}

/** Delivers a frame to a connection of this node (the gateway's side of `deliver`). */
export type LocalDeliver = (connectionId: string, payload: Uint8Array) => boolean;

export interface ClusterView extends ConnectionSink {
  /** Whole-cluster connection counts; `local` is this node's own. */
  stats(local: LocalStats): Promise<ClusterStats>;
  /**
   * Delivers `payload` (a JSON frame) to `connectionId` on another node;
   * resolves whether some node holds it. (This node's own connections are
   * the caller's to try first.)
   */
  deliver(connectionId: string, payload: Uint8Array): Promise<boolean>;
  /** Prometheus text for this host (every worker's metrics summed); `local` is this worker's registry. */
  metrics(local: Metrics): Promise<string>;
  /** Every worker of the host is up and, with Redis, every wanted subscription is in place. */
  ready(): boolean;
  /** Attaches how this node delivers to its own connections (what `deliver` on other nodes reaches). */
  serve(localDeliver: LocalDeliver): void;
  close(): Promise<void>;
}

/** What the metrics show of a Redis-mode node (gateway_redis_*). */
export interface RedisHealth {
  /** Bytes of publishes and appends waiting for Redis's answer. */
  pendingBytes: number;
  /** Wanted subscriptions Redis has not confirmed. */
  subscriptionsMissing: number;
  /** Publishes refused (Redis down, or REDIS_MAX_PENDING_BYTES waiting). */
  publishRefused: number;
  /** Failures by kind, since start. */
  failures: Record<'command' | 'subscribe' | 'lease' | 'sweep' | 'registry_write', number>;
  /** Renewals that found the lease gone (the node's entries were rewritten). */
  leaseLapses: number;
  /** Inbox messages for connections that had left. */
  inboxMissed: number;
  /** Messages that left in a batch with others of their turn and channel (one PUBLISH for several). */
  publishBatched: number;
  /** Cluster subscriber clients replaced because their sharded subscribers did not recover (redis/subscriber.ts). */
  subscriberRebuilds: number;
}
