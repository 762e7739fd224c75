/**
 * ioredis clients as the gateway uses them. Redis is a dependency that
 * fails, so every client is bounded:
 *
 * - an `error` listener (an EventEmitter without one crashes the process);
 * - reconnects forever with capped back-off;
 * - no offline queue and no replay: while Redis is down a command fails at
 *   once instead of piling up in memory and running late (or twice);
 * - a deadline on every command (`commandTimeout`) and on the socket
 *   (`socketTimeout`): a Redis that stops answering (DEBUG SLEEP, a paused
 *   process, a dead network) has the connection destroyed after
 *   REDIS_COMMAND_TIMEOUT_MS, which rejects what was waiting and frees its
 *   memory, then reconnects;
 * - a PING every REDIS_COMMAND_TIMEOUT_MS, so a stall is noticed even when
 *   nothing else is being sent;
 * - no automatic resubscription: subscriptions are reconciled by
 *   RedisSubscriber (wanted against confirmed), never left to a one-shot
 *   command that may have failed.
 */
import { Cluster, Redis } from 'ioredis';
import type { Logger } from '../observability/log.js';
import { GatewayError } from '../errors.js';

export interface HostPort {
  host: string;
  port: number;
}

/**
 * Where Redis is (config: REDIS_URL, REDIS_CLUSTER_NODES or REDIS_SENTINELS):
 * - `single`: one server (or a managed endpoint) at a URL;
 * - `cluster`: a Redis Cluster, reached through any of `nodes`; pub/sub is
 *   sharded (SPUBLISH/SSUBSCRIBE: a channel lives on its slot's master),
 *   and every key one script or pipeline touches shares a hash tag;
 * - `sentinel`: a primary with replicas watched by Sentinels, which say
 *   which server is the primary now (after a failover, the promoted one).
 */
export type RedisTarget =
  | { mode: 'single'; url: string }
  | { mode: 'cluster'; nodes: readonly HostPort[]; password?: string }
  | { mode: 'sentinel'; sentinels: readonly HostPort[]; name: string; password?: string };

export interface RedisClientOptions {
  /** REDIS_COMMAND_TIMEOUT_MS. */
  commandTimeoutMs: number;
  /** Commands issued in one turn leave in one write (a pipeline), not one write each (command connections; never a subscriber). */
  autoPipelining?: boolean;
  /** A subscriber connection (cluster mode: the sharded subscribers, one per master). */
  subscriber?: boolean;
}

/** A connection's connect deadline: the command deadline, at least a second. */
export const connectDeadlineMs = (commandTimeoutMs: number): number => Math.max(1000, commandTimeoutMs);

/**
 * A client for `target`. A Cluster is used through the Redis interface: the
 * commands, scripts, pipelines, `status` and events the gateway uses exist
 * on both, and the cluster's differences (sharded pub/sub, one slot per
 * script) are handled where they matter (RedisLink, RedisSubscriber).
 */
export function createRedis(target: RedisTarget, name: string, log: Logger, o: RedisClientOptions): Redis {
  const common = {
    connectionName: name,
    enableOfflineQueue: false,
    autoResubscribe: false,
    maxRetriesPerRequest: 0,
    commandTimeout: o.commandTimeoutMs,
    socketTimeout: o.commandTimeoutMs,
    connectTimeout: connectDeadlineMs(o.commandTimeoutMs),
  };
  const retryStrategy = (times: number) => Math.min(100 * 2 ** Math.min(times, 5), 2000);
  let client: Redis;
  if (target.mode === 'cluster') {
    client = new Cluster(
      target.nodes.map((n) => ({ host: n.host, port: n.port })),
      {
        enableOfflineQueue: false,
        // Not on a Cluster: ioredis groups an auto-pipeline by node, and refuses one whose
        // commands' slots move between nodes mid-flight (a failover); plain commands re-route.
        enableAutoPipelining: false,
        shardedSubscribers: o.subscriber === true,
        clusterRetryStrategy: retryStrategy,
        // A failover moves slots: ask again soon, not after the default 5 s only.
        slotsRefreshInterval: 2000,
        // CLUSTER SLOTS gets the deadline of any command, not ioredis's 1 s: on a loaded
        // host a refresh that reached no node in time makes the client reconnect
        // (ClusterAllFailedError), which is what wedges the sharded subscribers
        // (subscriber.ts); a longer deadline makes that rarer.
        slotsRefreshTimeout: o.commandTimeoutMs,
        retryDelayOnFailover: 200,
        retryDelayOnClusterDown: 200,
        redisOptions: { ...common, lazyConnect: false, ...(target.password ? { password: target.password } : {}) },
      },
    ) as unknown as Redis;
  } else if (target.mode === 'sentinel') {
    client = new Redis({
      ...common,
      sentinels: target.sentinels.map((n) => ({ host: n.host, port: n.port })),
      name: target.name,
      ...(target.password ? { password: target.password } : {}),
      lazyConnect: false,
      enableAutoPipelining: o.autoPipelining === true,
      retryStrategy,
      sentinelRetryStrategy: retryStrategy,
      // After a failover the old primary may come back as a replica: reconnect to the new one on READONLY.
      reconnectOnError: (err) => (/READONLY/.test(err.message) ? 2 : false),
    });
  } else {
    client = new Redis(target.url, { ...common, lazyConnect: false, enableAutoPipelining: o.autoPipelining === true, retryStrategy });
  }
  let lastLog = 0;
  client.on('error', (err: Error) => {
    const now = Date.now();
    if (now - lastLog > 5000) {
      lastLog = now;
      log.warn({ redis: name, err: err.message }, 'redis error');
    }
  });
  client.on('ready', () => log.info({ redis: name }, 'redis ready'));
  const ping = setInterval(() => {
    if (client.status === 'ready') client.ping().catch(() => {});
  }, o.commandTimeoutMs);
  ping.unref();
  client.once('end', () => clearInterval(ping));
  return client;
}

/**
 * QUIT when connected (flushes what was sent), within a second; then
 * disconnect in any case, which also stops every reconnection attempt (a
 * Cluster's sharded subscribers included: after QUIT alone one may still be
 * retrying a node, and keep the process alive).
 */
export async function quit(client: Redis): Promise<void> {
  if (client.status === 'ready') {
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([client.quit().catch(() => {}), new Promise((r) => (timer = setTimeout(r, 1000)))]);
    clearTimeout(timer);
  }
  client.disconnect();
}

/** Rejects at once with GW_ERR_REDIS_UNAVAILABLE unless `client` is connected. */
export function requireReady(client: Redis, what: string): void {
  if (client.status !== 'ready') throw new GatewayError('GW_ERR_REDIS_UNAVAILABLE', `Redis is not connected (${what})`);
}

/** Maps ioredis's time-out and connection errors to coded errors (never by message text elsewhere). */
export function redisError(err: unknown, what: string): GatewayError {
  if (err instanceof GatewayError) return err;
  const message = err instanceof Error ? err.message : String(err);
  // ioredis reports a command time-out only by its message; this is the one place that reads it.
  const code = /timed? ?out/i.test(message) ? 'GW_ERR_REDIS_TIMEOUT' : 'GW_ERR_REDIS_UNAVAILABLE';
  return new GatewayError(code, `Redis ${what} failed: ${message}`, { cause: err });
}
