/**
 * ioredis clients as the gateway uses them: an `error` listener on every
 * client (an EventEmitter without one crashes the process), reconnects with
 * capped back-off forever, and no offline queue - while Redis is down a
 * command fails at once instead of piling up in memory and running late.
 */
import { Redis } from 'ioredis';
import type { Logger } from '../observability/log.js';
import type { BusStatus } from '../bus/bus.js';

export function createRedis(url: string, name: string, log: Logger, opts: { subscriber?: boolean } = {}): Redis {
  const client = new Redis(url, {
    connectionName: name,
    lazyConnect: false,
    // A subscriber must queue its SUBSCRIBEs until connected (and ioredis
    // resubscribes every channel on reconnect); other clients fail fast.
    enableOfflineQueue: opts.subscriber === true,
    autoResubscribe: true,
    maxRetriesPerRequest: 1,
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
  return client;
}

/** ioredis's status as the bus's status union. */
export function busStatus(client: Redis, closed: boolean): BusStatus {
  if (closed) return 'closed';
  switch (client.status) {
    case 'ready':
      return 'ready';
    case 'wait':
    case 'connecting':
    case 'connect':
      return 'connecting';
    case 'end':
      return 'closed';
    default:
      return 'reconnecting';
  }
}
