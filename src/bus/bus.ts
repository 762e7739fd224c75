/**
 * The bus carries frames between gateway nodes (workers, and later hosts).
 *
 * Guarantees, for every implementation:
 *   - at-most-once: a message published while the bus is down, or lost by the
 *     transport, is gone (it is counted in `stats().dropped`);
 *   - no echo: a node never receives its own publishes (it has already
 *     delivered them locally - local delivery is the caller's job);
 *   - order: messages from one node on one topic arrive in publish order.
 *
 * Interest is declared per topic with subscribe/unsubscribe; the caller
 * reference-counts (uWS's `subscription` event tells when the first local
 * socket joins a topic and when the last leaves). Both are idempotent.
 * A subscription takes effect later (a Redis SUBSCRIBE, an IPC message to
 * the primary): `listening` tells when messages other nodes publish reach
 * this node.
 */
export type BusStatus = 'connecting' | 'ready' | 'reconnecting' | 'closed';

/** Called for each message from another node on a subscribed topic. */
export type BusHandler = (topic: string, payload: Uint8Array) => void;

export interface BusStats {
  published: number;
  delivered: number;
  dropped: number;
}

export interface Bus {
  /**
   * Publishes to `topic` on every other node. Never throws; see
   * "at-most-once". False when the transport refused it at once (down, or
   * its outbound bound reached): counted as dropped, the caller answers 503.
   */
  publish(topic: string, payload: Uint8Array): boolean;
  /** Whether a publish of `bytes` would be taken now (checked before any local delivery, so a refusal is all or nothing). */
  canPublish(bytes: number): boolean;
  /** Starts receiving messages published to `topic` by other nodes. */
  subscribe(topic: string): void;
  /** Stops receiving messages for `topic`. */
  unsubscribe(topic: string): void;
  /**
   * For a subscribed topic: undefined when a message another node publishes
   * from now on reaches this node, else a promise that resolves once it
   * does (the transport confirmed the subscription). Never rejects; it may
   * wait as long as the transport is down, so callers bound the wait.
   */
  listening(topic: string): Promise<void> | undefined;
  readonly status: BusStatus;
  stats(): BusStats;
  /** Stops intake and releases the transport. Safe to call twice. */
  close(): Promise<void>;
}
