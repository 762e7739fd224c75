/**
 * Fan-out: a frame for a topic goes to this worker's subscribers through
 * native uWS pub/sub, and to every other node through the bus. Frames that
 * arrive from the bus are delivered locally only (the bus never echoes).
 */
import type { TemplatedApp } from '@trufflesuite/uws-js-unofficial';
import type { Bus, BusHandler } from '../bus/bus.js';

/** Tells whether some other node has a subscriber for a topic. */
export interface RemoteTopics {
  has(topic: string): Promise<boolean>;
}

export class Fanout {
  readonly bus: Bus;

  constructor(
    private readonly app: TemplatedApp,
    busFactory: (onMessage: BusHandler) => Bus,
    private readonly remote: RemoteTopics,
  ) {
    this.bus = busFactory((topic, payload) => this.app.publish(topic, payload, false));
  }

  /** Publishes a text frame to `topic` on every node. */
  publish(topic: string, frame: string): void {
    const bytes = Buffer.from(frame);
    this.app.publish(topic, bytes, false);
    this.bus.publish(topic, bytes);
  }

  /** Whether `topic` has a subscriber on this node or another. */
  async exists(topic: string): Promise<boolean> {
    return this.app.numSubscribers(topic) > 0 || (await this.remote.has(topic));
  }

  /** Local subscribers of `topic` on this worker. */
  localSubscribers(topic: string): number {
    return this.app.numSubscribers(topic);
  }
}
