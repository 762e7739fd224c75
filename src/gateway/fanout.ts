/**
 * Fan-out: a frame for a topic goes to this worker's subscribers through
 * native uWS pub/sub, and to every other node through the bus. Frames that
 * arrive from the bus are delivered locally only (the bus never echoes).
 * A targeted send goes to the connection here if this worker holds it, else
 * through the cluster view to the one node that does.
 *
 * Frames are JSON on the bus and on each topic; sockets that chose the
 * msgpack subprotocol listen on the topic's msgpack twin, and a frame is
 * transcoded for it once per worker, only if such a socket is there.
 */
import type { TemplatedApp } from '@trufflesuite/uws-js-unofficial';
import type { Bus, BusHandler } from '../bus/bus.js';
import type { ClusterView, LocalDeliver } from '../cluster/view.js';
import { msgpackTopic, toMsgpack } from '../protocol/msgpack.js';
import { Buffer } from 'node:buffer';

export class Fanout {
  readonly bus: Bus;

  constructor(
    private readonly app: TemplatedApp,
    busFactory: (onMessage: BusHandler) => Bus,
    private readonly cluster: Pick<ClusterView, 'deliver'>,
    private readonly localDeliver: LocalDeliver,
    /** Called before each local publish to a topic (the slow-consumer check), with the frame's size. */
    private readonly beforePublish: (topic: string, bytes: number) => void = () => {},
  ) {
    this.bus = busFactory((topic, payload) => void this.#local(topic, payload));
  }

  /** Publishes to this worker's subscribers of `topic` (a JSON frame: text, or its UTF-8 bytes), in both framings; whether it had any. */
  #local(topic: string, bytes: string | Uint8Array): boolean {
    let had = false;
    if (this.app.numSubscribers(topic) > 0) {
      this.beforePublish(topic, typeof bytes === 'string' ? bytes.length : bytes.byteLength);
      this.app.publish(topic, bytes, false);
      had = true;
    }
    const twin = msgpackTopic(topic);
    if (this.app.numSubscribers(twin) > 0) {
      try {
        const packed = toMsgpack(bytes);
        this.beforePublish(topic, packed.byteLength);
        this.app.publish(twin, packed, true);
      } catch {
        // Not JSON (cannot happen for our frames): JSON sockets got it, msgpack ones cannot.
      }
      had = true;
    }
    return had;
  }

  /**
   * Publishes a text frame to `topic` on every node. False, with nothing
   * delivered anywhere, when the bus cannot take it now (down, or its
   * outbound bound reached): the caller answers 503.
   */
  publish(topic: string, frame: string): boolean {
    const bytes = Buffer.from(frame);
    if (!this.bus.canPublish(bytes.byteLength)) return false;
    this.#local(topic, bytes);
    this.bus.publish(topic, bytes);
    return true;
  }

  /**
   * Sends a JSON frame to one connection, here or on another node; resolves
   * whether some node holds it (rejects, coded, when the cluster cannot be
   * asked in time).
   */
  async sendTo(connectionId: string, frame: string): Promise<boolean> {
    const bytes = Buffer.from(frame);
    if (this.localDeliver(connectionId, bytes)) return true;
    return this.cluster.deliver(connectionId, bytes);
  }

  /** Publishes to this worker's subscribers of `topic` if it has any; whether it had. */
  deliverLocal(topic: string, payload: string | Uint8Array): boolean {
    return this.#local(topic, payload);
  }
}
