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
 * Writes are queued and flushed every BATCH_MS in one pipeline: a connect
 * storm costs one round trip per BATCH_MS per worker, whatever its size. After a Redis restart
 * (PUB/SUB needs no persistence, so Redis may come back empty) the node
 * rewrites all its entries when the connection is ready again.
 */
import os from 'node:os';
import type { Redis, Result } from 'ioredis';
import type { Logger } from '../observability/log.js';
import type { ClusterStats } from '../primary/ipc.js';
import { createRedis } from '../redis/client.js';
import { BATCH_MS, quit } from '../bus/redis.js';
import type { ConnectionInfo, Registry } from './registry.js';

export interface RedisRegistryOptions {
  url: string;
  prefix: string;
  nodeId: string;
  leaseMs: number;
  sweepMs: number;
  log: Logger;
}

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

type Op = { add: true; c: ConnectionInfo } | { add: false; c: ConnectionInfo };

export class RedisRegistry implements Registry {
  readonly #redis: Redis;
  readonly #local = new Map<string, ConnectionInfo>();
  readonly #k: { hash: string; nodes: string; lease: string; conns: string; counts: string };
  #ops: Op[] = [];
  #scheduled = false;
  #closed = false;
  readonly #leaseTimer: NodeJS.Timeout;
  readonly #sweepTimer: NodeJS.Timeout;
  #everReady = false;

  constructor(private readonly o: RedisRegistryOptions) {
    const p = o.prefix;
    this.#k = {
      hash: `${p}active_connections`,
      nodes: `${p}nodes`,
      lease: `${p}node:${o.nodeId}`,
      conns: `${p}node:${o.nodeId}:conns`,
      counts: `${p}node:${o.nodeId}:counts`,
    };
    this.#redis = createRedis(o.url, `${o.nodeId}:registry`, o.log);
    this.#redis.defineCommand('cgwReap', { numberOfKeys: 0, lua: REAP });
    this.#redis.on('ready', () => {
      // First connection, or Redis came back (perhaps empty): (re)write everything we hold.
      void this.#renewLease().then(() => this.#rewriteAll(this.#everReady));
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

  async #flush(): Promise<void> {
    this.#scheduled = false;
    const ops = this.#ops;
    this.#ops = [];
    if (ops.length === 0 || this.#redis.status !== 'ready') return; // rewritten in full on 'ready'
    const hset: string[] = [];
    const hdel: string[] = [];
    const sadd: string[] = [];
    const counts = new Map<string, number>();
    for (const { add, c } of ops) {
      if (add) {
        hset.push(c.connectionId, this.#entry(c));
        sadd.push(c.connectionId);
      } else {
        hdel.push(c.connectionId);
      }
      counts.set(c.creatorId, (counts.get(c.creatorId) ?? 0) + (add ? 1 : -1));
    }
    const m = this.#redis.pipeline();
    const CHUNK = 2000;
    for (let i = 0; i < hset.length; i += CHUNK * 2) m.hset(this.#k.hash, ...hset.slice(i, i + CHUNK * 2));
    for (let i = 0; i < sadd.length; i += CHUNK) m.sadd(this.#k.conns, ...sadd.slice(i, i + CHUNK));
    for (let i = 0; i < hdel.length; i += CHUNK) {
      m.hdel(this.#k.hash, ...hdel.slice(i, i + CHUNK));
      m.srem(this.#k.conns, ...hdel.slice(i, i + CHUNK));
    }
    for (const [creator, n] of counts) if (n !== 0) m.hincrby(this.#k.counts, creator, n);
    try {
      await m.exec();
    } catch (err) {
      this.o.log.warn({ err: (err as Error).message }, 'registry write failed; will rewrite on reconnect');
    }
  }

  async #renewLease(): Promise<void> {
    if (this.#closed || this.#redis.status !== 'ready') return;
    try {
      await this.#redis.multi().set(this.#k.lease, os.hostname(), 'PX', this.o.leaseMs).sadd(this.#k.nodes, this.o.nodeId).exec();
    } catch {
      /* retried on the next tick */
    }
  }

  /** Rewrites this node's whole state from its local map (after a reconnect). */
  async #rewriteAll(log: boolean): Promise<void> {
    if (this.#closed || this.#redis.status !== 'ready') return;
    this.#ops = [];
    const m = this.#redis.pipeline();
    m.cgwReap(this.o.prefix, this.o.nodeId, '1'); // clear what Redis holds for us, if anything
    const counts = new Map<string, number>();
    const all = [...this.#local.values()];
    for (let i = 0; i < all.length; i += 2000) {
      const chunk = all.slice(i, i + 2000);
      m.hset(this.#k.hash, ...chunk.flatMap((c) => [c.connectionId, this.#entry(c)]));
      m.sadd(this.#k.conns, ...chunk.map((c) => c.connectionId));
    }
    for (const c of all) counts.set(c.creatorId, (counts.get(c.creatorId) ?? 0) + 1);
    if (counts.size) m.hset(this.#k.counts, ...[...counts].flat().map(String));
    m.set(this.#k.lease, os.hostname(), 'PX', this.o.leaseMs).sadd(this.#k.nodes, this.o.nodeId);
    try {
      await m.exec();
      if (log) this.o.log.info({ connections: all.length }, 'registry rewritten after reconnect');
    } catch (err) {
      this.o.log.warn({ err: (err as Error).message }, 'registry rewrite failed');
    }
  }

  /** Reaps nodes whose lease has expired. Returns the connection entries removed. */
  async sweep(): Promise<number> {
    if (this.#closed || this.#redis.status !== 'ready') return 0;
    try {
      const nodes = await this.#redis.smembers(this.#k.nodes);
      let removed = 0;
      for (const n of nodes) {
        if (n === this.o.nodeId) continue;
        const r = (await this.#redis.cgwReap(this.o.prefix, n, '0')) as number;
        if (r >= 0) {
          removed += r;
          this.o.log.warn({ node: n, connections: r }, 'reaped a node whose lease expired');
        }
      }
      return removed;
    } catch {
      return 0;
    }
  }

  async locate(connectionId: string): Promise<string | undefined> {
    const v = await this.#redis.hget(this.#k.hash, connectionId);
    if (v === null) return undefined;
    try {
      return (JSON.parse(v) as { node?: string }).node;
    } catch {
      return undefined;
    }
  }

  async stats(): Promise<ClusterStats> {
    const nodes = await this.#redis.smembers(this.#k.nodes);
    const m = this.#redis.pipeline();
    for (const n of nodes) m.exists(`${this.o.prefix}node:${n}`).hgetall(`${this.o.prefix}node:${n}:counts`);
    const res = (await m.exec()) ?? [];
    const out: ClusterStats = { total_connections: 0, connections_by_creator: {}, connections_by_worker: {}, workers: 0, workers_answered: 0 };
    nodes.forEach((n, i) => {
      const alive = res[i * 2]?.[1] === 1;
      const counts = (res[i * 2 + 1]?.[1] ?? {}) as Record<string, string>;
      if (!alive) return;
      out.workers++;
      out.workers_answered++;
      let total = 0;
      for (const [creator, v] of Object.entries(counts)) {
        const k = Number(v);
        if (k <= 0) continue;
        total += k;
        out.connections_by_creator[creator] = (out.connections_by_creator[creator] ?? 0) + k;
      }
      out.connections_by_worker[n] = total;
      out.total_connections += total;
    });
    return out;
  }

  get ready(): boolean {
    return !this.#closed && this.#redis.status === 'ready';
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#leaseTimer);
    clearInterval(this.#sweepTimer);
    this.#ops = [];
    try {
      if (this.#redis.status === 'ready') await this.#redis.cgwReap(this.o.prefix, this.o.nodeId, '1');
    } catch (err) {
      this.o.log.warn({ err: (err as Error).message }, 'could not remove registry entries; the lease will expire');
    }
    await quit(this.#redis);
  }
}

declare module 'ioredis' {
  interface RedisCommander<Context> {
    cgwReap(prefix: string, nodeId: string, force: '0' | '1'): Result<number, Context>;
  }
  interface ChainableCommander {
    cgwReap(prefix: string, nodeId: string, force: '0' | '1'): ChainableCommander;
  }
}
