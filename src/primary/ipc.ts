import type { ChargeBatch, RateUpdate } from '../limits/store.js';

/**
 * Messages between the primary and its workers over cluster IPC (advanced
 * serialization, so Uint8Array payloads cross without base64).
 */
export interface LocalStats {
  /** The worker's process id. */
  pid: number;
  total: number;
  byCreator: Record<string, number>;
}

export interface ClusterStats {
  total_connections: number;
  connections_by_creator: Record<string, number>;
  /** Open connections by worker process id. */
  connections_by_worker: Record<string, number>;
  workers: number;
  workers_answered: number;
}

/** Requests a worker may make of the primary, with their results. */
export interface PrimaryOps {
  stats: ClusterStats;
  /** Delivers `payload` to topic `arg` on every other worker; whether any had a subscriber. */
  deliver: boolean;
  /** Prometheus text: every worker's metrics, summed. */
  metrics: string;
  /** Charges `batch` to the primary's rate-limit store (embedded mode); microseconds ahead per key. */
  rate: number[];
}

/** Requests the primary may make of a worker. */
export interface WorkerOps {
  'local-stats': LocalStats;
  /** Publishes `payload` to topic `arg` locally if it has subscribers; whether it had. */
  'local-deliver': boolean;
  /** The worker's registry as prom-client JSON. */
  'local-metrics': object[];
}

export type WorkerToPrimary =
  | { t: 'ready' }
  | { t: 'pub'; topic: string; payload: Uint8Array }
  | { t: 'sub'; add: string[]; del: string[] }
  | { t: 'req'; id: number; op: keyof PrimaryOps; arg?: string; payload?: Uint8Array; batch?: ChargeBatch }
  | { t: 'res'; id: number; result?: unknown; error?: string };

export type PrimaryToWorker =
  | { t: 'msg'; topic: string; payload: Uint8Array }
  | { t: 'shutdown'; code: 1001 | 1012 }
  | { t: 'cluster'; ready: boolean }
  /** Budget keys another worker charged (embedded mode). */
  | { t: 'rate'; update: RateUpdate }
  | { t: 'req'; id: number; op: keyof WorkerOps; arg?: string; payload?: Uint8Array }
  | { t: 'res'; id: number; result?: unknown; error?: string };

/** Type guard for messages that carry a `t` tag (anything else on the channel is ignored). */
export function isTagged(m: unknown): m is { t: string } {
  return typeof m === 'object' && m !== null && typeof (m as { t?: unknown }).t === 'string';
}
