/**
 * In-process bus: several nodes in one process share a `MemoryHub`. Used when
 * the gateway runs as a single process (tests, embedding) and as the
 * reference implementation in the bus contract suite. Delivery is
 * asynchronous (a microtask), as it is for every real transport.
 */
import type { Bus, BusHandler, BusStats, BusStatus } from './bus.js';

export class MemoryHub {
  readonly nodes = new Set<MemoryBus>();
}

export class MemoryBus implements Bus {
  readonly #topics = new Set<string>();
  readonly #stats: BusStats = { published: 0, delivered: 0, dropped: 0 };
  #status: BusStatus = 'ready';

  constructor(
    private readonly hub: MemoryHub,
    private readonly onMessage: BusHandler,
  ) {
    hub.nodes.add(this);
  }

  get status(): BusStatus {
    return this.#status;
  }

  publish(topic: string, payload: Uint8Array): boolean {
    if (this.#status === 'closed') {
      this.#stats.dropped++;
      return false;
    }
    this.#stats.published++;
    for (const node of this.hub.nodes) {
      if (node !== this && node.#topics.has(topic)) {
        queueMicrotask(() => node.#receive(topic, payload));
      }
    }
    return true;
  }

  canPublish(): boolean {
    return this.#status !== 'closed';
  }

  #receive(topic: string, payload: Uint8Array): void {
    if (this.#status === 'closed' || !this.#topics.has(topic)) return;
    this.#stats.delivered++;
    this.onMessage(topic, payload);
  }

  subscribe(topic: string): void {
    this.#topics.add(topic);
  }

  unsubscribe(topic: string): void {
    this.#topics.delete(topic);
  }

  /** In one process a subscription takes effect at once. */
  listening(): undefined {
    return undefined;
  }

  stats(): BusStats {
    return { ...this.#stats };
  }

  async close(): Promise<void> {
    this.#status = 'closed';
    this.#topics.clear();
    this.hub.nodes.delete(this);
  }
}
