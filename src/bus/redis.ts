/**
 * The Redis bus: every worker on every host is a node; a Redis PUB/SUB
 * channel per topic (`<prefix>t:<topic>`).
 *
 * - Separate publisher and subscriber connections.
 * - A channel is subscribed while at least one local socket is on its topic;
 *   subscribe/unsubscribe calls are gathered for BATCH_MS into one
 *   SUBSCRIBE / UNSUBSCRIBE command with many channels, so a connect storm
 *   costs one command per BATCH_MS per worker, whatever its size.
 * - Envelopes are msgpackr-encoded `[origin, payload]`, binary end to end
 *   (`messageBuffer` events); a node drops its own echo, having delivered
 *   locally already.
 * - Redis PUB/SUB is at-most-once: a publish while Redis is down is dropped
 *   and counted (`stats().dropped`), never queued. ioredis resubscribes every
 *   channel after a reconnect, so delivery resumes without any client
 *   reconnecting.
 */
import { Packr } from 'msgpackr';
import type { Redis } from 'ioredis';
import type { Bus, BusHandler, BusStats, BusStatus } from './bus.js';
import type { Logger } from '../observability/log.js';
import { busStatus, createRedis } from '../redis/client.js';
import { TopicSet } from './topic-set.js';

export interface RedisBusOptions {
  url: string;
  prefix: string;
  nodeId: string;
  log: Logger;
}

const packr = new Packr({ useRecords: false });

/**
 * How long subscription changes and registry writes are gathered before one
 * Redis command carries them all. A connection is reachable from other nodes
 * this much later than from its own (PUB/SUB is at-most-once anyway).
 */
export const BATCH_MS = 25;

export class RedisBus implements Bus {
  readonly #pub: Redis;
  readonly #sub: Redis;
  readonly #stats: BusStats = { published: 0, delivered: 0, dropped: 0 };
  readonly #topics = new TopicSet((add, del) => this.#flush(add, del), BATCH_MS);
  readonly #channelPrefix: string;
  #closed = false;

  constructor(
    private readonly opts: RedisBusOptions,
    private readonly onMessage: BusHandler,
  ) {
    this.#channelPrefix = `${opts.prefix}t:`;
    this.#pub = createRedis(opts.url, `${opts.nodeId}:pub`, opts.log);
    this.#sub = createRedis(opts.url, `${opts.nodeId}:sub`, opts.log, { subscriber: true });
    this.#sub.on('messageBuffer', (channel: Buffer, message: Buffer) => this.#receive(channel, message));
  }

  get status(): BusStatus {
    const p = busStatus(this.#pub, this.#closed);
    const s = busStatus(this.#sub, this.#closed);
    return p === 'ready' ? s : p;
  }

  publish(topic: string, payload: Uint8Array): void {
    if (this.#closed || this.#pub.status !== 'ready') {
      this.#stats.dropped++;
      return;
    }
    this.#stats.published++;
    const envelope = packr.pack([this.opts.nodeId, payload]);
    this.#pub.publish(this.#channelPrefix + topic, envelope).catch(() => {
      this.#stats.published--;
      this.#stats.dropped++;
    });
  }

  #receive(channel: Buffer, message: Buffer): void {
    if (this.#closed) return;
    let origin: unknown;
    let payload: unknown;
    try {
      [origin, payload] = packr.unpack(message) as [unknown, unknown];
    } catch {
      this.opts.log.warn({ channel: channel.toString() }, 'undecodable bus envelope dropped');
      return;
    }
    if (origin === this.opts.nodeId || !(payload instanceof Uint8Array)) return;
    const topic = channel.toString('latin1', this.#channelPrefix.length);
    if (!this.#topics.has(topic)) return;
    this.#stats.delivered++;
    this.onMessage(topic, payload);
  }

  subscribe(topic: string): void {
    if (!this.#closed) this.#topics.add(topic);
  }

  unsubscribe(topic: string): void {
    this.#topics.delete(topic);
  }

  /** One SUBSCRIBE and one UNSUBSCRIBE (per 5000 channels) for a batch of changes. */
  #flush(topicsAdded: string[], topicsDeleted: string[]): void {
    if (this.#closed) return;
    const CHUNK = 5000;
    const add = topicsAdded.map((t) => this.#channelPrefix + t);
    const del = topicsDeleted.map((t) => this.#channelPrefix + t);
    for (let i = 0; i < add.length; i += CHUNK) {
      this.#sub.subscribe(...add.slice(i, i + CHUNK)).catch((err: Error) => this.opts.log.warn({ err: err.message }, 'subscribe failed'));
    }
    for (let i = 0; i < del.length; i += CHUNK) {
      this.#sub.unsubscribe(...del.slice(i, i + CHUNK)).catch(() => {});
    }
  }

  stats(): BusStats {
    return { ...this.#stats };
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#topics.clear();
    await Promise.allSettled([quit(this.#sub), quit(this.#pub)]);
  }
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
