/**
 * The cluster view of a worker in Redis mode: every worker of every host is
 * a node. Stats and connection look-ups come from the registry; a targeted
 * send goes to the one node that holds the connection, through that node's
 * inbox channel (`<prefix>n:<node id>`, one SUBSCRIBE per node for its
 * whole life: a connect costs no subscription). Readiness needs this host's
 * workers all up (from the primary), Redis reachable and every wanted
 * subscription confirmed.
 *
 * Inbox envelopes are msgpackr arrays tagged by their first element:
 * `['k', connection id, payload]` (a targeted send), and the streams' `'s'`
 * (a session stream frame) and `'h'` (a streamed answer's text so far).
 */
import { Packr } from 'msgpackr';
import { GatewayError } from '../errors.js';
import type { Metrics } from '../observability/metrics.js';
import type { Logger } from '../observability/log.js';
import type { RedisLink } from '../redis/link.js';
import type { EmbeddedCluster } from './embedded.js';
import { RedisRegistry } from './registry-redis.js';
import type { ClusterStats, ClusterView, ConnectionInfo, LocalDeliver, RedisHealth } from './view.js';

const packr = new Packr({ useRecords: false });

export interface RedisClusterOptions {
  prefix: string;
  nodeId: string;
  leaseMs: number;
  log: Logger;
}

export class RedisCluster implements ClusterView {
  readonly registry: RedisRegistry;
  readonly #inbox: string;
  #localDeliver: LocalDeliver = () => false;
  readonly #handlers = new Map<string, (m: unknown[]) => void>();
  #closed = false;
  /** Inbox messages for connections no longer here (they closed meanwhile). */
  missed = 0;

  constructor(
    /** This host's primary: readiness of the workers, and the host's metrics. */
    private readonly host: EmbeddedCluster,
    readonly link: RedisLink,
    private readonly o: RedisClusterOptions,
  ) {
    this.registry = new RedisRegistry(link, { ...o, sweepMs: Math.max(250, o.leaseMs / 3) });
    this.#inbox = this.inboxOf(o.nodeId);
    link.sub.on(this.#inbox, (_channel, message) => this.#receive(message));
    link.sub.want(this.#inbox);
  }

  inboxOf(nodeId: string): string {
    return `${this.o.prefix}n:${nodeId}`;
  }

  /** Attaches how this node delivers to its own connections. */
  serve(localDeliver: LocalDeliver): void {
    this.#localDeliver = localDeliver;
  }

  add(c: ConnectionInfo): void {
    this.registry.add(c);
  }

  remove(c: ConnectionInfo): void {
    this.registry.remove(c);
  }

  stats(): Promise<ClusterStats> {
    return this.registry.stats();
  }

  /** This host's workers (the primary sums them). */
  metrics(local: Metrics): Promise<string> {
    return this.host.metrics(local);
  }

  /** Every worker of the host reports its link ready (the primary aggregates), this one included. */
  ready(): boolean {
    return !this.#closed && this.host.ready() && this.link.ready();
  }

  /**
   * Looks the connection up in the registry and publishes to its node's
   * inbox. Resolves false when no live node holds it; rejects (coded) when
   * Redis cannot answer within its deadline or refuses the bytes.
   */
  async deliver(connectionId: string, payload: Uint8Array): Promise<boolean> {
    const node = await this.registry.locate(connectionId);
    if (node === undefined || node === this.o.nodeId) return false;
    if (!this.toInbox(node, ['k', connectionId, payload])) {
      throw new GatewayError('GW_ERR_OVERLOADED', 'Redis is unreachable or too much waits for it; targeted send refused');
    }
    return true;
  }

  /** Publishes a tagged message to `nodeId`'s inbox; false when Redis cannot take it now. */
  toInbox(nodeId: string, message: unknown[]): boolean {
    return this.link.publish(this.inboxOf(nodeId), packr.pack(message));
  }

  /** Routes inbox messages tagged `tag` to `handler`. */
  onInbox(tag: string, handler: (m: unknown[]) => void): void {
    this.#handlers.set(tag, handler);
  }

  #receive(message: Buffer): void {
    let m: unknown;
    try {
      m = packr.unpack(message);
    } catch {
      this.o.log.warn('undecodable inbox envelope dropped');
      return;
    }
    if (!Array.isArray(m) || typeof m[0] !== 'string') return;
    if (m[0] === 'k') {
      const [, connectionId, payload] = m as [string, unknown, unknown];
      if (typeof connectionId !== 'string' || !(payload instanceof Uint8Array)) return;
      if (!this.#localDeliver(connectionId, payload)) this.missed++;
      return;
    }
    this.#handlers.get(m[0])?.(m);
  }

  /** What the metrics show of Redis (cluster/view.ts RedisHealth). */
  health(): RedisHealth {
    const l = this.link.stats();
    const r = this.registry.counters;
    return {
      pendingBytes: l.pendingBytes,
      subscriptionsMissing: this.link.sub.missing,
      publishRefused: l.refused,
      failures: { command: l.failures, subscribe: l.subscribeFailures, lease: r.lease_failures, sweep: r.sweep_failures, registry_write: r.write_failures },
      leaseLapses: r.lease_lapses,
      inboxMissed: this.missed,
      publishBatched: this.link.batched,
      subscriberRebuilds: l.subscriberRebuilds,
    };
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.registry.close();
    await this.link.close();
  }
}
