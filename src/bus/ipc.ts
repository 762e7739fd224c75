/**
 * The embedded-mode bus of a worker: it relays through the primary over
 * cluster IPC (see `primary/relay.ts` for the other end). Subscription
 * changes are batched per event-loop turn (TopicSet), so a connect storm
 * costs one IPC message per turn, not one per socket. The primary handles a
 * worker's messages in order, so a `sync` request sent after a
 * subscription change is answered once the change took effect (`listening`).
 */
import type { Bus, BusHandler, BusStats, BusStatus } from './bus.js';
import { TopicSet } from './topic-set.js';
import { isTagged, type PrimaryToWorker, type WorkerToPrimary } from '../cluster/ipc.js';

/** The worker's end of the IPC channel (`process` in a cluster worker). */
export interface IpcPort {
  send?: (msg: WorkerToPrimary) => boolean;
  connected?: boolean;
  on(event: 'message', fn: (msg: unknown) => void): unknown;
  off(event: 'message', fn: (msg: unknown) => void): unknown;
}

export class IpcBus implements Bus {
  readonly #stats: BusStats = { published: 0, delivered: 0, dropped: 0 };
  readonly #topics = new TopicSet((add, del) => {
    this.#flushes++;
    for (const t of add) this.#addedAt.set(t, this.#flushes);
    for (const t of del) this.#addedAt.delete(t);
    this.#send({ t: 'sub', add, del });
  });
  /** Subscription changes sent so far, and by which one each subscribed topic was added. */
  #flushes = 0;
  readonly #addedAt = new Map<string, number>();
  /** The primary took in every change up to this one (answered `sync`s; the primary answers in order). */
  #heardUpTo = 0;
  /** Waiters asked this turn: one `sync` for all at the end of the turn. */
  #asked: Array<() => void> | undefined;
  #closed = false;
  readonly #listener = (m: unknown): void => {
    if (!isTagged(m) || m.t !== 'msg') return;
    const msg = m as Extract<PrimaryToWorker, { t: 'msg' }>;
    if (this.#closed || !this.#topics.has(msg.topic)) return;
    this.#stats.delivered++;
    this.onMessage(msg.topic, msg.payload);
  };

  /**
   * @param relayed which topics go through the primary at all (the others
   *   are delivered locally only, and subscribe() ignores them).
   * @param sync a `sync` request to the primary over the same ordered
   *   channel (resolves or rejects when answered or timed out); without
   *   it, `listening` does not wait.
   */
  constructor(
    private readonly port: IpcPort,
    private readonly onMessage: BusHandler,
    private readonly relayed: (topic: string) => boolean = () => true,
    private readonly sync?: () => Promise<unknown>,
  ) {
    port.on('message', this.#listener);
  }

  get status(): BusStatus {
    if (this.#closed) return 'closed';
    return this.port.connected === false ? 'reconnecting' : 'ready';
  }

  #send(msg: WorkerToPrimary): boolean {
    if (this.#closed || !this.port.send || this.port.connected === false) return false;
    try {
      // false only means the IPC pipe is backed up; the message is still queued.
      this.port.send(msg);
      return true;
    } catch {
      return false; // channel closed under us (primary gone)
    }
  }

  publish(topic: string, payload: Uint8Array): boolean {
    if (!this.relayed(topic)) return true;
    if (this.#send({ t: 'pub', topic, payload })) {
      this.#stats.published++;
      return true;
    }
    this.#stats.dropped++;
    return false;
  }

  canPublish(): boolean {
    return !this.#closed && this.port.connected !== false;
  }

  subscribe(topic: string): void {
    if (this.relayed(topic)) this.#topics.add(topic);
  }

  unsubscribe(topic: string): void {
    this.#topics.delete(topic);
  }

  listening(topic: string): Promise<void> | undefined {
    if (!this.sync || this.#closed || !this.#topics.has(topic)) return undefined;
    const at = this.#addedAt.get(topic);
    if (at !== undefined && at <= this.#heardUpTo) return undefined;
    return new Promise((resolve) => {
      if (!this.#asked) {
        this.#asked = [];
        setImmediate(() => this.#syncAsked());
      }
      this.#asked.push(resolve);
    });
  }

  /** Sends this turn's subscription changes, then one `sync`; its answer (or failure) settles the turn's waiters. */
  #syncAsked(): void {
    const asked = this.#asked!;
    this.#asked = undefined;
    this.#topics.flushNow();
    const upTo = this.#flushes;
    const done = (ok: boolean) => {
      if (ok) this.#heardUpTo = Math.max(this.#heardUpTo, upTo);
      for (const f of asked) f();
    };
    this.sync!().then(
      () => done(true),
      () => done(false),
    );
  }

  stats(): BusStats {
    return { ...this.#stats };
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#topics.flushNow();
    this.#closed = true;
    this.#topics.clear();
    this.#addedAt.clear();
    this.port.off('message', this.#listener);
  }
}
