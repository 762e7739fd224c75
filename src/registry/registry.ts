/**
 * The connection registry: which connections exist, of which creator and
 * session, on which node - across every worker and host.
 *
 * Guarantees: writes are batched (one pipeline per event-loop turn); a node
 * that stops cleanly removes its entries at once (`close()`); a node that
 * dies without cleaning up has its entries removed by the survivors within
 * `leaseMs + sweepMs`.
 */
import type { ClusterStats } from '../primary/ipc.js';

export interface ConnectionInfo {
  connectionId: string;
  creatorId: string;
  sessionId: string;
  /** When the socket opened (epoch ms). */
  readonly connectedAt: number;
}

/** Where sockets report their opening and closing. */
export interface ConnectionSink {
  add(c: ConnectionInfo): void;
  remove(c: ConnectionInfo): void;
}

export interface Registry extends ConnectionSink {
  /** The node holding `connectionId`, or undefined when none does. */
  locate(connectionId: string): Promise<string | undefined>;
  /** Connection counts over every live node. */
  stats(): Promise<ClusterStats>;
  /** Removes this node's entries and stops its lease. Safe to call twice. */
  close(): Promise<void>;
}
