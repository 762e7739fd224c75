/**
 * A real Redis Cluster for the tests (and the benchmarks): `masters` masters
 * with one replica each, redis-server `--cluster-enabled yes` on free ports,
 * joined by `redis-cli --cluster create`, stopped (and its files removed)
 * by stop().
 */
import { execFile } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { Cluster, Redis } from 'ioredis';
import { freePort, until } from './net.js';
import { startRedis, type RedisServer } from './redis.js';

const run = promisify(execFile);

export interface RedisClusterHandle {
  servers: RedisServer[];
  /** REDIS_CLUSTER_NODES for a gateway. */
  nodes: string;
  /** The servers that are masters now, by CLUSTER NODES. */
  masters(): Promise<RedisServer[]>;
  /** A cluster client for assertions (closed by stop()). */
  client(): Cluster;
  /**
   * Resolves once every live node reports cluster_state:ok, every slot has a
   * master that is up, and every live replica has finished its sync (a
   * replica that never synced cannot be promoted: its data counts as too old).
   */
  healthy(ms?: number): Promise<void>;
  stop(): Promise<void>;
}

export async function startRedisCluster(o: { masters?: number; nodeTimeoutMs?: number } = {}): Promise<RedisClusterHandle> {
  const n = (o.masters ?? 3) * 2;
  const dir = mkdtempSync(path.join(tmpdir(), 'cgw-cluster-'));
  const ports = await Promise.all(Array.from({ length: n }, () => freePort()));
  // The cluster bus port is checked free too (by default it is the port + 10000, which nobody checked).
  const busPorts = await Promise.all(Array.from({ length: n }, () => freePort()));
  const servers = await Promise.all(
    ports.map((port, i) =>
      startRedis({
        port,
        args: ['--cluster-enabled', 'yes', '--cluster-port', String(busPorts[i]), '--cluster-config-file', path.join(dir, `nodes-${port}.conf`), '--cluster-node-timeout', String(o.nodeTimeoutMs ?? 1000), '--dir', dir,
          // A replica's first sync at once, not after Redis 7's default 5 s wait for more replicas.
          '--repl-diskless-sync-delay', '0'],
      }),
    ),
  );
  await run('redis-cli', ['--cluster', 'create', ...ports.map((p) => `127.0.0.1:${p}`), '--cluster-replicas', '1', '--cluster-yes'], { timeout: 30_000 });
  const clients: Cluster[] = [];
  const info = async (s: RedisServer, cmd: string[]): Promise<string> => {
    const c = new Redis({ port: s.port, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null, connectTimeout: 500 });
    c.on('error', () => {});
    try {
      await c.connect();
      return String(await c.call(cmd[0]!, ...cmd.slice(1)));
    } finally {
      c.disconnect();
    }
  };
  const handle: RedisClusterHandle = {
    servers,
    nodes: ports.map((p) => `127.0.0.1:${p}`).join(','),
    async masters() {
      for (const s of servers) {
        try {
          const text = await info(s, ['CLUSTER', 'NODES']);
          const up = text
            .split('\n')
            .filter((l) => / master /.test(` ${l} `.replace('myself,', '')) || /[ ,]master[ ,]/.test(l))
            .filter((l) => !/fail/.test(l.split(' ')[2] ?? ''))
            .map((l) => Number(/:(\d+)@/.exec(l)?.[1]));
          return servers.filter((x) => up.includes(x.port));
        } catch {
          /* that one is down: ask another */
        }
      }
      throw new Error('no cluster node answers');
    },
    client() {
      const c = new Cluster(ports.map((port) => ({ host: '127.0.0.1', port })), { redisOptions: { maxRetriesPerRequest: 1 }, clusterRetryStrategy: () => 200 });
      c.on('error', () => {});
      clients.push(c);
      return c;
    },
    async healthy(ms = 20_000) {
      await until(async () => {
        const live: string[] = [];
        for (const s of servers) {
          try {
            live.push((await info(s, ['CLUSTER', 'INFO'])) + (await info(s, ['INFO', 'replication'])));
          } catch {
            /* down */
          }
        }
        return live.length > 0 && live.every((t) => /cluster_state:ok/.test(t) && /cluster_slots_ok:16384/.test(t) && (/role:master/.test(t) || /master_link_status:up/.test(t)));
      }, ms, 'the Redis Cluster to be healthy (every replica synced)');
    },
    async stop() {
      for (const c of clients) c.disconnect();
      await Promise.all(servers.map((s) => s.stop()));
      rmSync(dir, { recursive: true, force: true });
    },
  };
  await handle.healthy();
  return handle;
}
