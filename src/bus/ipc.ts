/**
 * The embedded-mode bus of a worker: it relays through the primary over
 * cluster IPC (see `primary/relay.ts` for the other end). Subscription
 * changes are batched per event-loop turn (TopicSet), so a connect storm
 * costs one IPC message per turn, not one per socket.
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
  readonly #topics = new TopicSet((add, del) => this.#send({ t: 'sub', add, del }));
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
   */
  constructor(
    private readonly port: IpcPort,
    private readonly onMessage: BusHandler,
    private readonly relayed: (topic: string) => boolean = () => true,
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

  stats(): BusStats {
    return { ...this.#stats };
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#topics.flushNow();
    this.#closed = true;
    this.#topics.clear();
    this.port.off('message', this.#listener);
  }
}
