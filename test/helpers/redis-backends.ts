/**
 * The Redis deployments a Redis-mode contract suite runs against: one
 * server, and a Redis Cluster of 3 masters and 3 replicas (sharded pub/sub,
 * hash-tagged keys). Each suite runs its whole contract on both.
 */
import type { RedisTarget } from '../../src/redis/client.js';
import { startRedis } from './redis.js';
import { startRedisCluster } from './redis-cluster.js';

export interface RedisBackend {
  target: RedisTarget;
  stop(): Promise<void>;
}

export const REDIS_BACKENDS: Record<string, () => Promise<RedisBackend>> = {
  async redis() {
    const s = await startRedis();
    return { target: { mode: 'single', url: s.url }, stop: () => s.stop() };
  },
  async 'redis cluster'() {
    const c = await startRedisCluster();
    return { target: { mode: 'cluster', nodes: c.servers.map((s) => ({ host: '127.0.0.1', port: s.port })) }, stop: () => c.stop() };
  },
};
