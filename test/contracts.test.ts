/**
 * Contract suites for two interfaces, each run against every implementation
 * that can run in this process:
 *   - the rate-limit store (limits/store.ts): the memory store (the
 *     primary's, and the reference) and the Redis Lua script;
 *   - the cluster view (cluster/view.ts): standalone and Redis (two nodes on
 *     a real redis-server, and on a real Redis Cluster). The embedded view (through the primary) runs the
 *     same checks through the real cluster in test/cluster.test.ts.
 */
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { MemoryRateStore, type RateStore, type RateUpdate } from '../src/limits/store.js';
import { RedisRateStore } from '../src/limits/redis-store.js';
import { RedisLink } from '../src/redis/link.js';
import { RedisCluster } from '../src/cluster/redis.js';
import { EmbeddedCluster } from '../src/cluster/embedded.js';
import { StandaloneCluster } from '../src/cluster/standalone.js';
import type { ClusterView, ConnectionInfo } from '../src/cluster/view.js';
import { createLogger } from '../src/observability/log.js';
import { REDIS_BACKENDS } from './helpers/redis-backends.js';
import type { RedisTarget } from '../src/redis/client.js';
import { sleep, until } from './helpers/net.js';

const log = createLogger('silent');
const link = (target: RedisTarget, name: string) => new RedisLink({ target, name, log, commandTimeoutMs: 2000, maxPendingBytes: 1 << 24 });
const ready = (l: RedisLink) => until(() => l.ready(), 5000, 'redis link');

// ---- the rate-limit store

const stores: Record<string, () => Promise<{ a: RateStore; b: RateStore; cleanup(): Promise<void> }>> = {
  async memory() {
    const s = new MemoryRateStore();
    return { a: s, b: s, cleanup: () => s.close() };
  },
  ...Object.fromEntries(
    Object.entries(REDIS_BACKENDS).map(([name, start]) => [
      name,
      async () => {
        const server = await start();
        const prefix = `rs${randomBytes(3).toString('hex')}:`;
        const [la, lb] = [link(server.target, 'rate-a'), link(server.target, 'rate-b')];
        await Promise.all([ready(la), ready(lb)]);
        return {
          a: new RedisRateStore(la, prefix, 'node-a'),
          b: new RedisRateStore(lb, prefix, 'node-b'),
          cleanup: async () => {
            await la.close();
            await lb.close();
            await server.stop();
          },
        };
      },
    ]),
  ),
};

for (const [name, make] of Object.entries(stores)) {
  void t.test(`${name} rate store`, async (t) => {
    const { a, b, cleanup } = await make();
    t.teardown(cleanup);
    const updates: RateUpdate[] = [];
    b.onUpdate((u) => updates.push(u));
    await sleep(100); // the subscription (Redis)

    await t.test('a charge adds counts x interval to one shared TAT per key, from now', async (t) => {
      // "Ahead" counts from the store's now: each answer is its expected value less the time since the first charge (a loaded machine's round trips included), within 50 ms.
      const batch = { kind: 'session', intervalUs: 1_000_000, keys: ['k1', 'k2'], counts: [3, 0] };
      const start = performance.now();
      const sinceUs = () => (performance.now() - start) * 1000;
      const near = (got: number, expected: number) => got <= expected && got >= expected - sinceUs() - 50_000;
      const [ahead1, ahead2] = await a.charge(batch);
      t.ok(near(ahead1!, 3_000_000), `3 takes put k1 3 s ahead (${ahead1})`);
      t.equal(ahead2, 0, 'a count of 0 only reads: a full bucket');
      const [again] = await b.charge({ kind: 'session', intervalUs: 1_000_000, keys: ['k1'], counts: [2] });
      t.ok(near(again!, 5_000_000), `another worker's 2 takes add on top (${again}, ${sinceUs().toFixed(0)} µs after the first charge began)`);
      const [read] = await a.charge({ kind: 'session', intervalUs: 1_000_000, keys: ['k1'], counts: [0] });
      t.ok(near(read!, 5_000_000), `a read sees both (${read})`);
    });

    await t.test('kinds do not share keys', async (t) => {
      const [s] = await a.charge({ kind: 'session', intervalUs: 1000, keys: ['same'], counts: [5] });
      const [c] = await a.charge({ kind: 'creator', intervalUs: 1000, keys: ['same'], counts: [0] });
      t.ok(s! > 0);
      t.equal(c, 0);
    });

    await t.test('other workers hear of a charge (not of a read)', async (t) => {
      updates.length = 0;
      await a.charge({ kind: 'creator', intervalUs: 1000, keys: ['told', 'read-only'], counts: [1, 0] });
      await until(() => updates.some((u) => u.keys.includes('told')), 3000, 'the update');
      t.notOk(updates.some((u) => u.keys.includes('read-only')), 'a key only read is not told');
    });
  });
}

// ---- the cluster view

interface ViewNode {
  view: ClusterView;
  delivered: Array<[string, string]>;
  /** This node's own connections (its local deliver knows them). */
  local: Set<string>;
}

function node(view: ClusterView): ViewNode {
  const n: ViewNode = { view, delivered: [], local: new Set() };
  view.serve((id, payload) => {
    if (!n.local.has(id)) return false;
    n.delivered.push([id, Buffer.from(payload).toString()]);
    return true;
  });
  return n;
}

/** What a failed wait shows of each Redis-mode node: its link, the registry's failure counters and Redis's health. */
const diagnose = (nodes: ViewNode[]): string =>
  JSON.stringify(nodes.map(({ view }) => (view instanceof RedisCluster ? { link: view.link.status, ready: view.link.ready(), registry: view.registry.counters, health: view.health() } : 'not Redis')));

const conn = (id: string, creatorId: string): ConnectionInfo => ({ connectionId: id, creatorId, sessionId: `s-${id}`, connectedAt: Date.now() });
const noHost = () => new EmbeddedCluster({ connected: false, on: () => {}, off: () => {} });

const views: Record<string, () => Promise<{ nodes: ViewNode[]; cleanup(): Promise<void> }>> = {
  async standalone() {
    return { nodes: [node(new StandaloneCluster())], cleanup: async () => {} };
  },
  ...Object.fromEntries(
    Object.entries(REDIS_BACKENDS).map(([name, start]) => [
      name,
      async () => {
        const server = await start();
        const prefix = `cv${randomBytes(3).toString('hex')}:`;
        const nodes = [0, 1].map((i) => node(new RedisCluster(noHost(), link(server.target, `view-${i}`), { prefix, nodeId: `view-${i}`, leaseMs: 3000, log })));
        await Promise.all(nodes.map((n) => ready((n.view as RedisCluster).link)));
        return {
          nodes,
          cleanup: async () => {
            await Promise.all(nodes.map((n) => n.view.close()));
            await server.stop();
          },
        };
      },
    ]),
  ),
};

for (const [name, make] of Object.entries(views)) {
  void t.test(`${name} cluster view`, async (t) => {
    const { nodes, cleanup } = await make();
    t.teardown(cleanup);
    const [a, b] = [nodes[0]!, nodes.at(-1)!];
    const local = (n: ViewNode) => ({ pid: 1, total: n.local.size, byCreator: [...n.local].reduce<Array<[string, number]>>((acc) => acc, []) });

    await t.test('stats count every live node\'s connections, creator ids of any spelling included', async (t) => {
      for (const [n, id, creator] of [[a, 'c1', '__proto__'], [a, 'c2', 'constructor'], [b, 'c3', 'constructor']] as const) {
        n.local.add(id);
        n.view.add(conn(id, creator));
      }
      const expect = nodes.length === 1 ? 3 : 3;
      const statsOf = async () => {
        if (name === 'standalone') return a.view.stats({ pid: 1, total: 3, byCreator: [['__proto__', 1], ['constructor', 2]] });
        return a.view.stats(local(a));
      };
      await until(async () => (await statsOf()).total_connections === expect, 5000, 'counted').catch(async (err: Error) => {
        throw new Error(`${err.message}; last stats ${JSON.stringify(await statsOf().catch((e: Error) => e.message))}; nodes ${diagnose(nodes)}`);
      });
      const s = await statsOf();
      t.same(Object.entries(s.connections_by_creator).sort(), [['__proto__', 1], ['constructor', 2]]);
      t.equal(Object.getPrototypeOf(s.connections_by_creator), null, 'keys of an object without a prototype');
    });

    await t.test('deliver reaches a connection on another node, once; false when no node holds it', async (t) => {
      if (nodes.length === 1) {
        t.equal(await a.view.deliver('c1', Buffer.from('{"x":1}')), false, 'alone: there is no other node');
        return;
      }
      const sent = await a.view.deliver('c3', Buffer.from('{"x":1}'));
      t.equal(sent, true, 'a live node holds c3', sent ? {} : { nodes: diagnose(nodes) });
      await until(() => b.delivered.length === 1, 3000, 'delivered').catch((err: Error) => {
        throw new Error(`${err.message}; nodes ${diagnose(nodes)}`);
      });
      t.same(b.delivered, [['c3', '{"x":1}']]);
      t.equal(await a.view.deliver('nobody', Buffer.from('{}')), false, 'unknown: false (the API answers 404)');
    });

    await t.test('close removes this node\'s entries at once', async (t) => {
      if (nodes.length === 1) return;
      await b.view.close();
      const s = await a.view.stats(local(a));
      t.equal(s.total_connections, 2, 'only node a\'s remain');
      t.equal(await a.view.deliver('c3', Buffer.from('{}')), false);
    });
  });
}
