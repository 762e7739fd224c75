/**
 * The Redis connection registry.
 *
 * Keys (all under the configured prefix):
 *   active_connections          hash: connection id -> JSON {creator_id, session_id, connected_at, node}
 *                               (the seed's hash, plus the node)
 *   nodes                       set of node ids that have registered
 *   node:<id>                   the node's lease: a key with a TTL, renewed every leaseMs/3
 *   node:<id>:conns             set of the node's connection ids
 *   node:<id>:counts            hash: creator id -> open connections on the node
 *
 * Every node sweeps `nodes` every `sweepMs`: a node whose lease key has
 * expired is reaped by a Lua script (atomic, idempotent), so a host that
 * died without cleaning up (kill -9, power loss) disappears within
 * leaseMs + sweepMs. A clean close() reaps itself at once.
 *
 * The wanted state is this node's local map; Redis is made to match it:
 * - writes are gathered for BATCH_MS and sent in one pipeline (a connect
 *   storm costs one round trip per BATCH_MS per worker, whatever its size);
 * - after a reconnect (Redis may be back empty) everything is rewritten;
 * - a renewal that finds its lease gone (this node stalled past it, e.g. a
 *   SIGSTOP, and may have been reaped) rewrites everything too;
 * - a failed write, renewal or sweep is logged and counted, and the next
 *   renewal or reconnect repairs it.
 */
import os from 'node:os';
import type { Result } from 'ioredis';
import type { Logger } from '../observability/log.js';
import type { RedisLink } from '../redis/link.js';
import { addCount, counts, type ClusterStats, type ConnectionInfo, type ConnectionSink } from './view.js';

export interface RedisRegistryOptions {
  prefix: string;
  nodeId: string;
  leaseMs: number;
  sweepMs: number;
  log: Logger;
}

/** How long registry writes are gathered into one pipeline. */
export const BATCH_MS = 25;

/** KEYS[1]: the nodes set (routes the script to the registry's slot on a Cluster). ARGV: prefix, node, force. */
const REAP = `
local p, n = ARGV[1], ARGV[2]
if ARGV[3] ~= '1' and redis.call('EXISTS', p .. 'node:' .. n) == 1 then return -1 end
local ids = redis.call('SMEMBERS', p .. 'node:' .. n .. ':conns')
for i = 1, #ids, 1000 do
  redis.call('HDEL', p .. 'active_connections', unpack(ids, i, math.min(i + 999, #ids)))
end
redis.call('DEL', p .. 'node:' .. n .. ':conns', p .. 'node:' .. n .. ':counts', p .. 'node:' .. n)
redis.call('SREM', p .. 'nodes', n)
return #ids
`;

type Op = { add: boolean; c: ConnectionInfo };

/** Failures and repairs, for the metrics. */
export interface RegistryCounters {
  lease_lapses: number;
  lease_failures: number;
  sweep_failures: number;
  write_failures: number;
}

export class RedisRegistry implements ConnectionSink {
  readonly #local = new Map<string, ConnectionInfo>();
  readonly #k: { hash: string; nodes: string; lease: string; conns: string; counts: string };
  /** The key prefix (with the hash tag on a Cluster). */
  readonly #p: string;

  /** The lease key of `nodeId`: it exists while that node is alive. */
  leaseKey(nodeId: string): string {
    return `${this.#p}node:${nodeId}`;
  }
  #ops: Op[] = [];
  #scheduled = false;
  #closed = false;
  readonly #leaseTimer: NodeJS.Timeout;
  readonly #sweepTimer: NodeJS.Timeout;
  #everReady = false;
  #lastWarn = 0;
  readonly counters: RegistryCounters = { lease_lapses: 0, lease_failures: 0, sweep_failures: 0, write_failures: 0 };

  constructor(
    private readonly link: RedisLink,
    private readonly o: RedisRegistryOptions,
  ) {
    // On a Cluster every registry key shares the {reg} hash tag: one slot, so the scripts and pipelines below never cross slots.
    const p = (this.#p = link.sharded ? `${o.prefix}{reg}:` : o.prefix);
    this.#k = {
      hash: `${p}active_connections`,
      nodes: `${p}nodes`,
      lease: `${p}node:${o.nodeId}`,
      conns: `${p}node:${o.nodeId}:conns`,
      counts: `${p}node:${o.nodeId}:counts`,
    };
    link.cmd.defineCommand('cgwReap', { numberOfKeys: 1, lua: REAP });
    link.cmd.on('ready', () => {
      // First connection, or Redis came back (perhaps empty): (re)write everything we hold.
      void this.#rewriteAll(this.#everReady ? 'reconnect' : undefined);
      this.#everReady = true;
    });
    this.#leaseTimer = setInterval(() => void this.#renewLease(), Math.max(250, Math.floor(o.leaseMs / 3)));
    this.#sweepTimer = setInterval(() => void this.sweep(), o.sweepMs);
    this.#leaseTimer.unref();
    this.#sweepTimer.unref();
  }

  get nodeId(): string {
    return this.o.nodeId;
  }

  add(c: ConnectionInfo): void {
    if (this.#closed) return;
    this.#local.set(c.connectionId, c);
    this.#queue({ add: true, c });
  }

  remove(c: ConnectionInfo): void {
    if (!this.#local.delete(c.connectionId) || this.#closed) return;
    this.#queue({ add: false, c });
  }

  #queue(op: Op): void {
    this.#ops.push(op);
    if (this.#scheduled) return;
    this.#scheduled = true;
    setTimeout(() => void this.#flush(), BATCH_MS);
  }

  #entry(c: ConnectionInfo): string {
    return JSON.stringify({ creator_id: c.creatorId, session_id: c.sessionId, connected_at: new Date(c.connectedAt).toISOString(), node: this.o.nodeId });
  }

  #warn(msg: string, err: unknown): void {
    const now = Date.now();
    if (now - this.#lastWarn < 5000) return;
    this.#lastWarn = now;
    this.o.log.warn({ err: (err as Error).message }, msg);
  }

  async #flush(): Promise<void> {
    this.#scheduled = false;
    const ops = this.#ops;
    this.#ops = [];
    if (ops.length === 0 || this.link.cmd.status !== 'ready') return; // rewritten in full on 'ready'
    const hset: string[] = [];
    const hdel: string[] = [];
    const sadd: string[] = [];
    const byCreator = new Map<string, number>();
    for (const { add, c } of ops) {
      if (add) {
        hset.push(c.connectionId, this.#entry(c));
        sadd.push(c.connectionId);
      } else {
        hdel.push(c.connectionId);
      }
      byCreator.set(c.creatorId, (byCreator.get(c.creatorId) ?? 0) + (add ? 1 : -1));
    }
    try {
      await this.link.run('registry write', (r) => {
        const m = r.pipeline();
        const CHUNK = 2000;
        for (let i = 0; i < hset.length; i += CHUNK * 2) m.hset(this.#k.hash, ...hset.slice(i, i + CHUNK * 2));
        for (let i = 0; i < sadd.length; i += CHUNK) m.sadd(this.#k.conns, ...sadd.slice(i, i + CHUNK));
        for (let i = 0; i < hdel.length; i += CHUNK) {
          m.hdel(this.#k.hash, ...hdel.slice(i, i + CHUNK));
          m.srem(this.#k.conns, ...hdel.slice(i, i + CHUNK));
        }
        for (const [creator, n] of byCreator) if (n !== 0) m.hincrby(this.#k.counts, creator, n);
        return m.exec();
      });
    } catch (err) {
      this.counters.write_failures++;
      this.#warn('registry write failed; the node\'s entries are rewritten on the next renewal', err);
      this.#dirty = true;
    }
  }

  /** A write failed: the next renewal rewrites everything. */
  #dirty = false;

  async #renewLease(): Promise<void> {
    if (this.#closed || this.link.cmd.status !== 'ready') return;
    try {
      // SET ... GET answers the lease as it was: null means it had lapsed (this
      // node stalled past it, and may have been reaped), so rewrite everything.
      const [[, before]] = ((await this.link.run('lease renewal', (r) =>
        r.multi().set(this.#k.lease, os.hostname(), 'PX', this.o.leaseMs, 'GET').sadd(this.#k.nodes, this.o.nodeId).exec(),
      )) ?? [[null, null]]) as Array<[unknown, unknown]>;
      if (before === null) {
        this.counters.lease_lapses++;
        await this.#rewriteAll('lease lapsed');
      } else if (this.#dirty) {
        await this.#rewriteAll('a write had failed');
      }
    } catch (err) {
      this.counters.lease_failures++;
      this.#warn('registry lease renewal failed', err);
    }
  }

  /** Rewrites this node's whole state from its local map. `why`: logged, unless the first write. */
  async #rewriteAll(why: string | undefined): Promise<void> {
    if (this.#closed || this.link.cmd.status !== 'ready') return;
    this.#ops = [];
    this.#dirty = false;
    const all = [...this.#local.values()];
    try {
      await this.link.run('registry rewrite', (r) => {
        const m = r.pipeline();
        m.cgwReap(this.#k.nodes, this.#p, this.o.nodeId, '1'); // clear what Redis holds for us, if anything
        const byCreator = new Map<string, number>();
        for (let i = 0; i < all.length; i += 2000) {
          const chunk = all.slice(i, i + 2000);
          m.hset(this.#k.hash, ...chunk.flatMap((c) => [c.connectionId, this.#entry(c)]));
          m.sadd(this.#k.conns, ...chunk.map((c) => c.connectionId));
        }
        for (const c of all) byCreator.set(c.creatorId, (byCreator.get(c.creatorId) ?? 0) + 1);
        if (byCreator.size) m.hset(this.#k.counts, ...[...byCreator].flat().map(String));
        m.set(this.#k.lease, os.hostname(), 'PX', this.o.leaseMs).sadd(this.#k.nodes, this.o.nodeId);
        return m.exec();
      });
      if (why) this.o.log.info({ connections: all.length, why }, 'registry rewritten');
    } catch (err) {
      this.counters.write_failures++;
      this.#dirty = true;
      this.#warn('registry rewrite failed; retried on the next renewal', err);
    }
  }

  /** Reaps nodes whose lease has expired. Returns the connection entries removed. */
  async sweep(): Promise<number> {
    if (this.#closed || this.link.cmd.status !== 'ready') return 0;
    try {
      const nodes = await this.link.run('registry sweep', (r) => r.smembers(this.#k.nodes));
      let removed = 0;
      for (const n of nodes) {
        if (n === this.o.nodeId) continue;
        const r = (await this.link.run('registry reap', (c) => c.cgwReap(this.#k.nodes, this.#p, n, '0'))) as number;
        if (r >= 0) {
          removed += r;
          this.o.log.warn({ node: n, connections: r }, 'reaped a node whose lease expired');
        }
      }
      return removed;
    } catch (err) {
      this.counters.sweep_failures++;
      this.#warn('registry sweep failed', err);
      return 0;
    }
  }

  /** The node holding `connectionId`, or undefined. Rejects (coded) when Redis cannot answer in time. */
  async locate(connectionId: string): Promise<string | undefined> {
    const v = await this.link.run('connection look-up', (r) => r.hget(this.#k.hash, connectionId));
    if (v === null) return undefined;
    try {
      return (JSON.parse(v) as { node?: string }).node;
    } catch {
      return undefined;
    }
  }

  /** Connection counts over every live node. Rejects (coded) when Redis cannot answer in time. */
  async stats(): Promise<ClusterStats> {
    const nodes = await this.link.run('stats', (r) => r.smembers(this.#k.nodes));
    const res =
      (await this.link.run('stats', (r) => {
        const m = r.pipeline();
        for (const n of nodes) m.exists(`${this.#p}node:${n}`).hgetall(`${this.#p}node:${n}:counts`);
        return m.exec();
      })) ?? [];
    const out: ClusterStats = { total_connections: 0, connections_by_creator: counts(), connections_by_worker: counts(), workers: 0, workers_answered: 0 };
    nodes.forEach((n, i) => {
      const alive = res[i * 2]?.[1] === 1;
      const byCreator = (res[i * 2 + 1]?.[1] ?? {}) as Record<string, string>;
      if (!alive) return;
      out.workers++;
      out.workers_answered++;
      let total = 0;
      for (const [creator, v] of Object.entries(byCreator)) {
        const k = Number(v);
        if (k <= 0) continue;
        total += k;
        addCount(out.connections_by_creator, creator, k);
      }
      out.connections_by_worker[n] = total;
      out.total_connections += total;
    });
    return out;
  }

  /** Removes this node's entries (a clean stop) and stops the lease. Safe to call twice. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#leaseTimer);
    clearInterval(this.#sweepTimer);
    this.#ops = [];
    try {
      await this.link.run('registry removal', (r) => r.cgwReap(this.#k.nodes, this.#p, this.o.nodeId, '1'));
    } catch (err) {
      this.o.log.warn({ err: (err as Error).message }, 'could not remove registry entries; the lease will expire');
    }
  }
}

declare module 'ioredis' {
  interface RedisCommander<Context> {
    cgwReap(nodesKey: string, prefix: string, nodeId: string, force: '0' | '1'): Result<number, Context>;
  }
  interface ChainableCommander {
    cgwReap(nodesKey: string, prefix: string, nodeId: string, force: '0' | '1'): ChainableCommander;
  }
}
