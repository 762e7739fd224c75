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
import { Redis } from 'ioredis';
import type { Logger } from '../observability/log.js';
import { GatewayError } from '../errors.js';

export interface RedisClientOptions {
  /** REDIS_COMMAND_TIMEOUT_MS. */
  commandTimeoutMs: number;
  /** Commands issued in one turn leave in one write (a pipeline), not one write each (command connections; never a subscriber). */
  autoPipelining?: boolean;
}

export function createRedis(url: string, name: string, log: Logger, o: RedisClientOptions): Redis {
  const client = new Redis(url, {
    connectionName: name,
    lazyConnect: false,
    enableAutoPipelining: o.autoPipelining === true,
    enableOfflineQueue: false,
    autoResubscribe: false,
    maxRetriesPerRequest: 0,
    commandTimeout: o.commandTimeoutMs,
    socketTimeout: o.commandTimeoutMs,
    connectTimeout: Math.max(1000, o.commandTimeoutMs),
    retryStrategy: (times) => Math.min(100 * 2 ** Math.min(times, 5), 2000),
  });
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

/** QUIT when connected (flushes), else disconnect at once. */
export async function quit(client: Redis): Promise<void> {
  if (client.status === 'ready') {
    try {
      await client.quit();
      return;
    } catch {
      /* fall through */
    }
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
