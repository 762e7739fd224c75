/**
 * A worker's link to Redis: one command connection (commands, scripts and
 * publishes) and one subscriber connection (RedisSubscriber), shared by the
 * bus, the registry, the rate-limit store and the streams of that worker.
 *
 * Bounds (STYLE: dependencies fail, bound everything):
 * - `run` gives every request a deadline (REDIS_COMMAND_TIMEOUT_MS) and a
 *   coded error (GW_ERR_REDIS_TIMEOUT, GW_ERR_REDIS_UNAVAILABLE);
 * - `publish` keeps what waits for Redis under REDIS_MAX_PENDING_BYTES: the
 *   bytes of every command sent and not yet answered. Beyond it a publish is
 *   refused at once (false, counted), never queued without limit;
 * - `ready` is false while either connection is down or a wanted
 *   subscription is missing.
 *
 * Publishes are gathered per event-loop turn: several messages for one
 * channel in one turn leave as one PUBLISH (SPUBLISH on a Cluster) of a
 * batch envelope (BATCH_MARK, then a MessagePack array of the messages),
 * which the receiving RedisSubscriber splits before dispatch. One message
 * leaves as itself; an idle link adds no delay (no timer: the flush runs
 * in setImmediate, after this turn's I/O).
 */
import type { Redis } from 'ioredis';
import { pack } from 'msgpackr';
import type { Logger } from '../observability/log.js';
import { GatewayError } from '../errors.js';
import { connectDeadlineMs, createRedis, quit, redisError, type RedisTarget } from './client.js';
import { BATCH_MARK, RedisSubscriber } from './subscriber.js';
import { Buffer } from 'node:buffer';


export interface RedisLinkOptions {
  target: RedisTarget;
  /** This node's id: the connections' names. */
  name: string;
  log: Logger;
  commandTimeoutMs: number;
  maxPendingBytes: number;
}

export type LinkStatus = 'connecting' | 'ready' | 'reconnecting' | 'closed';

/** What the metrics show of a link. */
export interface LinkStats {
  pendingBytes: number;
  /** Publishes refused because REDIS_MAX_PENDING_BYTES were waiting, or Redis was down. */
  refused: number;
  subscribeFailures: number;
  /** Cluster subscriber clients replaced because their sharded subscribers did not recover (subscriber.ts). */
  subscriberRebuilds: number;
  /** Requests that failed (time-out or connection), by `run`. */
  failures: number;
}

export class RedisLink {
  readonly cmd: Redis;
  readonly sub: RedisSubscriber;
  #pending = 0;
  #refused = 0;
  #failures = 0;
  #closed = false;
  /** Publishes of this turn, by channel. */
  #batch = new Map<string, Uint8Array[]>();
  #flushing = false;
  /** Messages that left inside a batch envelope with others (a metric: how much batching saves). */
  batched = 0;
  /** A Redis Cluster: publishes are SPUBLISH, subscriptions SSUBSCRIBE. */
  readonly sharded: boolean;

  constructor(private readonly o: RedisLinkOptions) {
    this.sharded = o.target.mode === 'cluster';
    this.cmd = createRedis(o.target, `${o.name}:cmd`, o.log, { ...o, autoPipelining: true });
    // A wedged sharded subscriber group is told from a slow one by the connect deadline (client.ts) and a second.
    this.sub = new RedisSubscriber(() => createRedis(o.target, `${o.name}:sub`, o.log, { ...o, subscriber: true }), o.log, this.sharded, connectDeadlineMs(o.commandTimeoutMs) + 1000);
  }

  get status(): LinkStatus {
    if (this.#closed) return 'closed';
    const a = statusOf(this.cmd);
    const b = statusOf(this.sub.client);
    return a === 'ready' ? b : a;
  }

  /** Both connections up and every wanted subscription confirmed (within the grace). */
  ready(): boolean {
    return this.status === 'ready' && this.sub.inSync();
  }

  /**
   * Runs `fn` against the command connection with a deadline; rejects with
   * a coded error at once when Redis is not connected.
   */
  async run<T>(what: string, fn: (c: Redis) => Promise<T>): Promise<T> {
    if (this.cmd.status !== 'ready') {
      this.#failures++;
      throw new GatewayError('GW_ERR_REDIS_UNAVAILABLE', `Redis is not connected (${what})`);
    }
    try {
      return await fn(this.cmd);
    } catch (err) {
      this.#failures++;
      throw redisError(err, what);
    }
  }

  /**
   * Marks a command (a script defined on `cmd`) whose caller already gathers
   * a turn's work into one: it is written at once instead of through
   * ioredis's auto-pipelining, whose pipeline of one command (a Pipeline,
   * its callbacks and promises) costs more than the write it would share:
   * about 9 µs per answer of widget.v2 chat through one Redis (ad hoc, the
   * history append). On a Cluster the command is one per slot, and stays
   * pipelined: those of one node still leave in one write.
   */
  unpipelined(command: string): void {
    if (this.sharded) return;
    const o = this.cmd.options;
    o.autoPipeliningIgnoredCommands = [...(o.autoPipeliningIgnoredCommands ?? []), command];
  }

  /** Whether `bytes` more may wait for Redis now; a refusal is counted (the caller answers 503). */
  canSend(bytes: number): boolean {
    const ok = !this.#closed && this.cmd.status === 'ready' && this.#pending + bytes <= this.o.maxPendingBytes;
    if (!ok) this.#refused++;
    return ok;
  }

  /**
   * Sends a command whose request holds `bytes` (a publish, an append) within
   * the byte bound; undefined (and counted) when refused.
   */
  send<T>(bytes: number, fn: (c: Redis) => Promise<T>): Promise<T> | undefined {
    if (!this.canSend(bytes)) return undefined;
    this.#pending += bytes;
    const p = fn(this.cmd);
    const release = () => {
      this.#pending -= bytes;
    };
    p.then(release, release);
    return p;
  }

  /**
   * PUBLISH (SPUBLISH on a Cluster) within the byte bound, gathered with the
   * other publishes of this turn; false (counted) when refused. At most once.
   */
  publish(channel: string, payload: Uint8Array): boolean {
    if (!this.canSend(payload.byteLength + channel.length)) return false;
    this.#pending += payload.byteLength + channel.length;
    const list = this.#batch.get(channel);
    if (list) list.push(payload);
    else this.#batch.set(channel, [payload]);
    if (!this.#flushing) {
      this.#flushing = true;
      setImmediate(() => this.#flush());
    }
    return true;
  }

  #flush(): void {
    this.#flushing = false;
    const batch = this.#batch;
    this.#batch = new Map();
    for (const [channel, list] of batch) {
      let bytes = channel.length;
      for (const m of list) bytes += m.byteLength;
      const body = list.length === 1 ? asBuffer(list[0]!) : Buffer.concat([Buffer.of(BATCH_MARK), pack(list.map(asBuffer))]);
      if (list.length > 1) this.batched += list.length;
      const release = () => {
        this.#pending -= bytes;
      };
      const sent = this.#closed || this.cmd.status !== 'ready' ? Promise.reject(new Error('closed')) : this.sharded ? this.cmd.spublish(channel, body) : this.cmd.publish(channel, body);
      sent.then(release, () => {
        release();
        this.#failures++;
      });
    }
  }

  stats(): LinkStats {
    return { pendingBytes: this.#pending, refused: this.#refused, subscribeFailures: this.sub.failures, subscriberRebuilds: this.sub.rebuilds, failures: this.#failures };
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.sub.close();
    await Promise.allSettled([quit(this.sub.client), quit(this.cmd)]);
  }
}

function statusOf(client: Redis): LinkStatus {
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

/** The bytes of `u` as a Buffer, without copying. */
export function asBuffer(u: Uint8Array): Buffer {
  return Buffer.isBuffer(u) ? u : Buffer.from(u.buffer, u.byteOffset, u.byteLength);
}
