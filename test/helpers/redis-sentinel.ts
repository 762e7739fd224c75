/**
 * A real Redis Sentinel group for the tests: a primary, one replica and one
 * sentinel (quorum 1, down after 1 s), on free ports; stop() removes its files.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Redis } from 'ioredis';
import { reap } from './reaper.js';
import { freePort, until } from './net.js';
import { startRedis, type RedisServer } from './redis.js';

export interface SentinelGroup {
  primary: RedisServer;
  replica: RedisServer;
  /** REDIS_SENTINELS for a gateway. */
  sentinels: string;
  name: string;
  /** The port of the server the sentinel calls primary now. */
  primaryPort(): Promise<number>;
  stop(): Promise<void>;
}

export async function startSentinelGroup(name = 'gw'): Promise<SentinelGroup> {
  const dir = mkdtempSync(path.join(tmpdir(), 'cgw-sentinel-'));
  const primary = await startRedis();
  const replica = await startRedis({ args: ['--replicaof', '127.0.0.1', String(primary.port)] });
  const port = await freePort();
  const conf = path.join(dir, 'sentinel.conf');
  writeFileSync(
    conf,
    [
      `port ${port}`,
      'bind 127.0.0.1',
      `dir ${dir}`,
      `sentinel monitor ${name} 127.0.0.1 ${primary.port} 1`,
      `sentinel down-after-milliseconds ${name} 1000`,
      `sentinel failover-timeout ${name} 5000`,
      `sentinel parallel-syncs ${name} 1`,
      '',
    ].join('\n'),
  );
  const proc: ChildProcess = spawn('redis-server', [conf, '--sentinel'], { stdio: 'ignore' });
  proc.once('exit', reap(proc.pid!));
  const ask = async (): Promise<number> => {
    const c = new Redis({ port, lazyConnect: true, maxRetriesPerRequest: 0, retryStrategy: () => null });
    c.on('error', () => {});
    try {
      await c.connect();
      const [, p] = (await c.call('SENTINEL', 'get-master-addr-by-name', name)) as [string, string];
      return Number(p);
    } finally {
      c.disconnect();
    }
  };
  await until(async () => (await ask().catch(() => 0)) === primary.port, 10_000, 'the sentinel to know the primary');
  // The replica is in sync before a test relies on a failover.
  await until(async () => /master_link_status:up/.test(await replica.client().info('replication')), 10_000, 'the replica in sync');
  return {
    primary,
    replica,
    sentinels: `127.0.0.1:${port}`,
    name,
    primaryPort: ask,
    async stop() {
      proc.kill('SIGKILL');
      await Promise.all([primary.stop(), replica.stop()]);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
