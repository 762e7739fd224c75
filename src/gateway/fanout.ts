/**
 * Fan-out: a frame for a topic goes to this worker's subscribers through
 * native uWS pub/sub, and to every other node through the bus. Frames that
 * arrive from the bus are delivered locally only (the bus never echoes).
 *
 * Frames are JSON on the bus and on each topic; sockets that chose the
 * msgpack subprotocol listen on the topic's msgpack twin, and a frame is
 * transcoded for it once per worker, only if such a socket is there.
 */
import type { TemplatedApp } from '@trufflesuite/uws-js-unofficial';
import type { Bus, BusHandler } from '../bus/bus.js';
import { msgpackTopic, toMsgpack } from '../protocol/msgpack.js';

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
    this.bus = busFactory((topic, payload) => void this.#local(topic, payload));
  }

  /** Publishes to this worker's subscribers of `topic`, in both framings; whether it had any. */
  #local(topic: string, bytes: Uint8Array): boolean {
    let had = false;
    if (this.app.numSubscribers(topic) > 0) {
      this.app.publish(topic, bytes, false);
      had = true;
    }
    const twin = msgpackTopic(topic);
    if (this.app.numSubscribers(twin) > 0) {
      try {
        this.app.publish(twin, toMsgpack(bytes), true);
      } catch {
        // Not JSON (cannot happen for our frames): JSON sockets got it, msgpack ones cannot.
      }
      had = true;
    }
    return had;
  }

  /** Publishes a text frame to `topic` on every node. */
  publish(topic: string, frame: string): void {
    const bytes = Buffer.from(frame);
    this.#local(topic, bytes);
    this.bus.publish(topic, bytes);
  }

  /**
   * Publishes to `topic` only if it has a subscriber here or on another node;
   * resolves whether it had. (A connection lives on exactly one node.)
   */
  async publishIfPresent(topic: string, frame: string): Promise<boolean> {
    const bytes = Buffer.from(frame);
    if (this.#local(topic, bytes)) return true;
    return this.remote.deliver(topic, bytes);
  }

  /** Publishes to this worker's subscribers of `topic` if it has any; whether it had. */
  deliverLocal(topic: string, payload: Uint8Array): boolean {
    return this.#local(topic, payload);
  }
}
