/**
 * The cluster view of a worker in Redis mode: stats and connection look-ups
 * come from the registry (every host); readiness needs this host's workers
 * all up (from the primary) and Redis reachable.
 */
import type { ClusterView } from '../gateway/gateway.js';
import type { ClusterStats } from '../primary/ipc.js';
import type { RedisRegistry } from './redis.js';
import type { Metrics } from '../observability/metrics.js';

export class RedisClusterView implements ClusterView {
  constructor(
    private readonly local: Pick<ClusterView, 'ready' | 'metrics'>,
    private readonly registry: RedisRegistry,
    /** Publishes on the Redis bus (the gateway's bus, created after this view). */
    private readonly publish: (topic: string, payload: Uint8Array) => void,
  ) {}

  stats(): Promise<ClusterStats> {
    return this.registry.stats();
  }

  /** This host's workers (the primary sums them). */
  metrics(local: Metrics): Promise<string> {
    return this.local.metrics(local);
  }

  ready(): boolean {
    return this.local.ready() && this.registry.ready;
  }

  /** Connection topics: publishes on the bus when the registry knows another node holds the connection. */
  async deliver(topic: string, payload: Uint8Array): Promise<boolean> {
    if (!topic.startsWith('k/')) return false;
    const node = await this.registry.locate(topic.slice(2));
    if (node === undefined || node === this.registry.nodeId) return false;
    this.publish(topic, payload);
    return true;
  }
}
