/**
 * One Redis subscriber connection, driven by what is wanted rather than by
 * one-shot commands: callers say which channels they want (`want`,
 * `unwant`), and a reconcile loop compares wanted with confirmed (what
 * Redis acknowledged) and sends the difference, after every change, after
 * every reconnect (a new connection has no subscriptions), and again after
 * a failure. So every wanted subscription is made once Redis is reachable,
 * whatever happened meanwhile; `missing` tells readiness what is not yet.
 *
 * Changes are gathered per event-loop turn into one SUBSCRIBE and one
 * UNSUBSCRIBE (5000 channels per command at most).
 *
 * Sharded (a Redis Cluster): SSUBSCRIBE / SUNSUBSCRIBE instead, one command
 * per slot (a sharded channel lives on its slot's master, and ioredis sends
 * each command to the sharded subscriber of that master); after a failover
 * or a slot move ioredis reconnects those subscribers, and every wanted
 * channel is made again here.
 *
 * One fault of ioredis 6.0.0 is worked around here: when the Cluster client
 * reconnects (it does so by itself, e.g. after a slots refresh that reached
 * no node in time, which a loaded box sees) while its subscriber group waits
 * for a sharded subscriber to connect, the group stops that subscriber and
 * drops its listeners, so the connect promise it waits for never settles;
 * the group stays "resetting" forever and makes no subscriber again: every
 * SSUBSCRIBE fails with "No sharded subscriber for slot" while the client
 * says it is ready. So when sharded (S)SUBSCRIBEs have failed on a ready
 * client for `wedgedAfterMs` with that error (a group that is not wedged
 * makes its subscribers within the connect deadline, so the constructor is
 * given that deadline plus a second), or for REBUILD_AFTER_MS with any
 * other, the client is replaced by a new one (`make`), counted in
 * `rebuilds` and logged; every wanted channel is then made on the new one.
 * (The wedge is seen at start-up too, on a loaded box: a worker must not
 * wait 15 s to be ready for it.)
 *
 * A message starting with BATCH_MARK (link.ts) is a batch: its messages are
 * dispatched one by one, in order.
 */
import type { Redis } from 'ioredis';
import calculateSlot from 'cluster-key-slot';
import { unpack } from 'msgpackr';
import type { Logger } from '../observability/log.js';
import { Buffer } from 'node:buffer';

/**
 * The first byte of a batch envelope (link.ts): 0xc1 is never used by
 * MessagePack, so no single message (all MessagePack) starts with it.
 */
export const BATCH_MARK = 0xc1;

/** How long a wanted channel may be unconfirmed before readiness fails. */
export const SUBSCRIBE_GRACE_MS = 1000;
const RETRY_MS = 250;
const CHUNK = 5000;
/** How long sharded subscription changes may fail on a ready Cluster client before it is replaced. */
export const REBUILD_AFTER_MS = 15_000;
/** The error of a wedged subscriber group (see the top of this file). */
const WEDGED = /No sharded subscriber for slot/;

type Handler = (channel: Buffer, message: Buffer) => void;

export class RedisSubscriber {
  #client: Redis;
  /** This subscriber's listeners on the current client (removed from a replaced one). */
  readonly #listeners: Array<[string, (...args: Buffer[]) => void]>;
  readonly #wanted = new Set<string>();
  readonly #confirmed = new Set<string>();
  /** Wanted channels not (yet) confirmed, with since when. */
  readonly #unconfirmed = new Map<string, number>();
  readonly #handlers: Array<{ prefix: string; fn: Handler }> = [];
  readonly #waiters = new Map<string, Array<() => void>>();
  #running = false;
  #scheduled = false;
  #retry: NodeJS.Timeout | undefined;
  #closed = false;
  #lastWarn = 0;
  /** Since when subscription changes have failed without a success between (undefined: the last one worked). */
  #failingSince: number | undefined;
  /** SUBSCRIBE / UNSUBSCRIBE batches that failed (a metric). */
  failures = 0;
  /** Cluster clients replaced because their sharded subscribers did not recover (a metric). */
  rebuilds = 0;
  /** Batch envelopes received (link.ts). */
  batches = 0;

  /** `make` creates the connection (again, when sharded and it has to be replaced). */
  constructor(
    private readonly make: () => Redis,
    private readonly log: Logger,
    readonly sharded = false,
    /** How long "No sharded subscriber" may last on a ready Cluster client before it is replaced (the client's connect deadline and a second). */
    private readonly wedgedAfterMs = REBUILD_AFTER_MS,
  ) {
    // A new connection holds no subscriptions: everything wanted is missing again.
    const lost = () => {
      this.#confirmed.clear();
      const now = Date.now();
      for (const c of this.#wanted) if (!this.#unconfirmed.has(c)) this.#unconfirmed.set(c, now);
      this.#schedule();
    };
    const gone = () => this.#confirmed.clear();
    this.#listeners = [
      [sharded ? 'smessageBuffer' : 'messageBuffer', (channel: Buffer, message: Buffer) => this.#dispatch(channel, message)],
      ['ready', lost],
      ['close', gone],
    ];
    // A Cluster's sharded subscribers come and go with the masters (a failover, a slot move).
    if (sharded) this.#listeners.push(['-subscriber', gone], ['+subscriber', lost], ['subscribersReady', lost]);
    this.#client = this.#attach(make());
  }

  /** The current connection (a Cluster client when sharded; replaced after a lasting sharded failure). */
  get client(): Redis {
    return this.#client;
  }

  #attach(client: Redis): Redis {
    for (const [event, fn] of this.#listeners) client.on(event, fn);
    return client;
  }

  /** Replaces a Cluster client whose sharded subscribers did not come back (see the top of this file). */
  #rebuild(failingMs: number): void {
    const old = this.#client;
    for (const [event, fn] of this.#listeners) old.removeListener(event, fn);
    old.disconnect();
    this.rebuilds++;
    this.log.warn({ failing_ms: failingMs, channels: this.#wanted.size }, 'redis sharded subscriptions kept failing on a ready cluster client: replaced it');
    this.#confirmed.clear();
    this.#failingSince = undefined;
    this.#client = this.#attach(this.make());
  }

  /** Routes messages on channels starting with `prefix` to `fn`. */
  on(prefix: string, fn: Handler): void {
    this.#handlers.push({ prefix, fn });
  }

  want(channel: string): void {
    if (this.#closed || this.#wanted.has(channel)) return;
    this.#wanted.add(channel);
    if (!this.#confirmed.has(channel)) this.#unconfirmed.set(channel, Date.now());
    this.#schedule();
  }

  unwant(channel: string): void {
    if (!this.#wanted.delete(channel)) return;
    this.#unconfirmed.delete(channel);
    this.#wake(channel);
    this.#schedule();
  }

  /** Whether Redis acknowledged the subscription to `channel` on the current connection. */
  confirmed(channel: string): boolean {
    return this.#confirmed.has(channel);
  }

  wants(channel: string): boolean {
    return this.#wanted.has(channel);
  }

  /** Resolves once `channel` is confirmed (at once if it is) or no longer wanted; never rejects (readiness reports a lasting failure). */
  whenConfirmed(channel: string): Promise<void> {
    if (this.#confirmed.has(channel)) return Promise.resolve();
    return new Promise((resolve) => {
      const list = this.#waiters.get(channel) ?? [];
      list.push(resolve);
      this.#waiters.set(channel, list);
    });
  }

  /** Wanted channels that Redis has not acknowledged. */
  get missing(): number {
    return this.#unconfirmed.size;
  }

  /** True when no wanted channel has waited longer than `graceMs` for Redis. */
  inSync(graceMs = SUBSCRIBE_GRACE_MS, now = Date.now()): boolean {
    for (const since of this.#unconfirmed.values()) if (now - since > graceMs) return false;
    return true;
  }

  #dispatch(channel: Buffer, message: Buffer): void {
    if (this.#closed) return;
    const name = channel.toString('latin1');
    if (message[0] === BATCH_MARK) {
      let list: Uint8Array[];
      try {
        list = unpack(message.subarray(1)) as Uint8Array[];
      } catch {
        return; // not ours: nothing on a gateway channel starts with the mark otherwise
      }
      this.batches++;
      for (const m of list) for (const h of this.#handlers) if (name.startsWith(h.prefix)) h.fn(channel, Buffer.from(m.buffer, m.byteOffset, m.byteLength));
      return;
    }
    for (const h of this.#handlers) if (name.startsWith(h.prefix)) h.fn(channel, message);
  }

  /** Sends (UN)SUBSCRIBE, or per slot (S)(UN)SUBSCRIBE when sharded, for `channels`. */
  async #command(kind: 'add' | 'del', channels: string[]): Promise<void> {
    if (!this.sharded) {
      await (kind === 'add' ? this.client.subscribe(...channels) : this.client.unsubscribe(...channels));
      return;
    }
    const bySlot = new Map<number, string[]>();
    for (const c of channels) {
      const slot = calculateSlot(c);
      const l = bySlot.get(slot);
      if (l) l.push(c);
      else bySlot.set(slot, [c]);
    }
    await Promise.all([...bySlot.values()].map((l) => (kind === 'add' ? this.client.ssubscribe(...l) : this.client.sunsubscribe(...l))));
  }

  #schedule(): void {
    if (this.#scheduled || this.#closed) return;
    this.#scheduled = true;
    setImmediate(() => {
      this.#scheduled = false;
      void this.#reconcile();
    });
  }

  async #reconcile(): Promise<void> {
    if (this.#running || this.#closed) return;
    if (this.client.status !== 'ready') return; // the 'ready' event schedules the next run
    const add = [...this.#wanted].filter((c) => !this.#confirmed.has(c));
    const del = [...this.#confirmed].filter((c) => !this.#wanted.has(c));
    if (add.length === 0 && del.length === 0) return;
    this.#running = true;
    try {
      for (let i = 0; i < add.length; i += CHUNK) {
        const chunk = add.slice(i, i + CHUNK);
        await this.#command('add', chunk);
        for (const c of chunk) this.#confirm(c);
      }
      for (let i = 0; i < del.length; i += CHUNK) {
        const chunk = del.slice(i, i + CHUNK);
        await this.#command('del', chunk);
        for (const c of chunk) this.#confirmed.delete(c);
      }
      this.#failingSince = undefined;
    } catch (err) {
      this.failures++;
      const now = Date.now();
      this.#failingSince ??= now;
      if (now - this.#lastWarn > 5000) {
        this.#lastWarn = now;
        this.log.warn({ err: (err as Error).message, channels: add.length + del.length }, 'redis subscription change failed; retrying');
      }
      const after = WEDGED.test((err as Error).message) ? Math.min(this.wedgedAfterMs, REBUILD_AFTER_MS) : REBUILD_AFTER_MS;
      if (this.sharded && now - this.#failingSince >= after && this.client.status === 'ready') this.#rebuild(now - this.#failingSince);
      clearTimeout(this.#retry);
      this.#retry = setTimeout(() => {
        this.#retry = undefined;
        this.#schedule();
      }, RETRY_MS);
      this.#retry.unref();
    } finally {
      this.#running = false;
    }
    // Changes made while this run was in flight.
    if ([...this.#wanted].some((c) => !this.#confirmed.has(c)) || [...this.#confirmed].some((c) => !this.#wanted.has(c))) {
      if (this.client.status === 'ready' && this.#retry === undefined) this.#schedule();
    }
  }

  #confirm(channel: string): void {
    this.#confirmed.add(channel);
    if (!this.#wanted.has(channel)) return;
    this.#unconfirmed.delete(channel);
    this.#wake(channel);
  }

  #wake(channel: string): void {
    const w = this.#waiters.get(channel);
    if (w) {
      this.#waiters.delete(channel);
      for (const f of w) f();
    }
  }

  /** Stops reconciling; the connection is closed by its owner. */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#retry);
    this.#wanted.clear();
    this.#unconfirmed.clear();
    for (const w of this.#waiters.values()) for (const f of w) f();
    this.#waiters.clear();
  }
}
