/**
 * Fan-out: a frame for a topic goes to this worker's subscribers through
 * native uWS pub/sub, and to every other node through the bus. Frames that
 * arrive from the bus are delivered locally only (the bus never echoes).
 */
import type { TemplatedApp } from '@trufflesuite/uws-js-unofficial';
import type { Bus, BusHandler } from '../bus/bus.js';

/** Reaches the subscribers of a topic that live on other nodes. */
export interface RemoteTopics {
  /**
   * Delivers `payload` to `topic`'s subscribers on other nodes, if any node
   * has one; resolves whether one did. Used for targeted sends, where a
   * missing recipient must be reported (404), not silently dropped.
   */
  deliver(topic: string, payload: Uint8Array): Promise<boolean>;
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

  /**
   * Publishes to `topic` only if it has a subscriber here or on another node;
   * resolves whether it had. (A connection lives on exactly one node.)
   */
  async publishIfPresent(topic: string, frame: string): Promise<boolean> {
    const bytes = Buffer.from(frame);
    if (this.app.numSubscribers(topic) > 0) {
      this.app.publish(topic, bytes, false);
      return true;
    }
    return this.remote.deliver(topic, bytes);
  }

  /** Publishes to this worker's subscribers of `topic` if it has any; whether it had. */
  deliverLocal(topic: string, payload: Uint8Array): boolean {
    if (this.app.numSubscribers(topic) === 0) return false;
    this.app.publish(topic, payload, false);
    return true;
  }
}
