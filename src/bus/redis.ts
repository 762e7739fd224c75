/**
 * The Redis bus: every worker on every host is a node; a Redis PUB/SUB
 * channel per topic (`<prefix>t:<topic>`), on the worker's RedisLink.
 *
 * - A channel is wanted while at least one local socket is on its topic;
 *   the link's subscriber reconciles wanted with confirmed (after every
 *   change, reconnect or failure), gathering changes per event-loop turn.
 * - Envelopes are msgpackr-encoded `[origin, payload]`, binary end to end
 *   (`messageBuffer` events); a node drops its own echo, having delivered
 *   locally already.
 * - Redis PUB/SUB is at-most-once: a publish refused because Redis is down
 *   or REDIS_MAX_PENDING_BYTES already wait for it returns false and is
 *   counted (`stats().dropped`); the caller answers 503. Nothing is queued
 *   without bound.
 */
import { Packr } from 'msgpackr';
import type { Bus, BusHandler, BusStats, BusStatus } from './bus.js';
import type { Logger } from '../observability/log.js';
import type { RedisLink } from '../redis/link.js';

export interface RedisBusOptions {
  prefix: string;
  nodeId: string;
  log: Logger;
}

const packr = new Packr({ useRecords: false });

export class RedisBus implements Bus {
  readonly #stats: BusStats = { published: 0, delivered: 0, dropped: 0 };
  readonly #channelPrefix: string;
  readonly #topics = new Set<string>();
  #closed = false;

  constructor(
    private readonly link: RedisLink,
    private readonly opts: RedisBusOptions,
    private readonly onMessage: BusHandler,
  ) {
    this.#channelPrefix = `${opts.prefix}t:`;
    link.sub.on(this.#channelPrefix, (channel, message) => this.#receive(channel, message));
  }

  get status(): BusStatus {
    return this.#closed ? 'closed' : this.link.status;
  }

  publish(topic: string, payload: Uint8Array): boolean {
    if (this.#closed) {
      this.#stats.dropped++;
      return false;
    }
    if (!this.link.publish(this.#channelPrefix + topic, packr.pack([this.opts.nodeId, payload]))) {
      this.#stats.dropped++;
      return false;
    }
    this.#stats.published++;
    return true;
  }

  canPublish(bytes: number): boolean {
    return !this.#closed && this.link.canSend(bytes + 64);
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
    if (this.#closed || this.#topics.has(topic)) return;
    this.#topics.add(topic);
    this.link.sub.want(this.#channelPrefix + topic);
  }

  unsubscribe(topic: string): void {
    if (!this.#topics.delete(topic)) return;
    this.link.sub.unwant(this.#channelPrefix + topic);
  }

  /** Once Redis acknowledged the SUBSCRIBE (after a reconnect: again). */
  listening(topic: string): Promise<void> | undefined {
    const ch = this.#channelPrefix + topic;
    return this.link.sub.confirmed(ch) ? undefined : this.link.sub.whenConfirmed(ch);
  }

  stats(): BusStats {
    return { ...this.#stats };
  }

  /** Stops intake and drops this bus's subscriptions; the link itself belongs to the cluster view. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    for (const t of this.#topics) this.link.sub.unwant(this.#channelPrefix + t);
    this.#topics.clear();
  }
}
