/**
 * One contract suite for the bus, run against every implementation:
 * in-process (MemoryBus), IPC (IpcBus in real child processes, relayed by
 * the real Relay in this process) and Redis (RedisBus on a real redis-server).
 */
import t from 'tap';
import { fork, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { MemoryBus, MemoryHub } from '../src/bus/memory.js';
import { RedisBus } from '../src/bus/redis.js';
import { RedisLink } from '../src/redis/link.js';
import type { Bus, BusStats, BusStatus } from '../src/bus/bus.js';
import { Relay, type RelayTarget } from '../src/primary/relay.js';
import { createLogger } from '../src/observability/log.js';
import { REDIS_BACKENDS, type RedisBackend } from './helpers/redis-backends.js';
import { sleep, until } from './helpers/net.js';
import { exitWhenDone } from './helpers/linger.js';

/** A bus node as the suite drives it (in this process or another). */
interface Node {
  received: Array<{ topic: string; payload: Buffer }>;
  subscribe(topic: string): Promise<void>;
  unsubscribe(topic: string): Promise<void>;
  /** Waits for bus.listening(topic); whether it had to wait. */
  listening(topic: string): Promise<boolean>;
  publish(topic: string, payload: Uint8Array): Promise<void>;
  status(): Promise<BusStatus>;
  stats(): Promise<BusStats>;
  close(): Promise<void>;
}

/** Makes nodes sharing one transport; `settle` waits until subscriptions have propagated. */
interface Transport {
  node(): Promise<Node>;
  settle(): Promise<void>;
  cleanup(): Promise<void>;
}

function localNode(make: (onMessage: (topic: string, p: Uint8Array) => void) => Bus): Node {
  const received: Node['received'] = [];
  const bus = make((topic, payload) => received.push({ topic, payload: Buffer.from(payload) }));
  return {
    received,
    subscribe: async (x) => bus.subscribe(x),
    unsubscribe: async (x) => bus.unsubscribe(x),
    listening: async (x) => {
      const p = bus.listening(x);
      await p;
      return p !== undefined;
    },
    publish: async (x, p) => void bus.publish(x, p),
    status: async () => bus.status,
    stats: async () => bus.stats(),
    close: () => bus.close(),
  };
}

const log = createLogger('silent');

/** The Redis bus on one backend (one server, or a Cluster: sharded pub/sub). */
async function redisTransport(start: () => Promise<RedisBackend>): Promise<Transport> {
  const server = await start();
  const prefix = `test-${randomBytes(4).toString('hex')}:`;
  const nodes: Node[] = [];
  const links: RedisLink[] = [];
  let n = 0;
  return {
    async node() {
      const nodeId = `node-${n++}`;
      const link = new RedisLink({ target: server.target, name: nodeId, log, commandTimeoutMs: 2000, maxPendingBytes: 1 << 24 });
      links.push(link);
      const node = localNode((h) => new RedisBus(link, { prefix, nodeId, log }, h));
      await until(async () => (await node.status()) === 'ready', 5000, 'redis bus ready');
      nodes.push(node);
      return node;
    },
    settle: () => sleep(100),
    async cleanup() {
      for (const x of nodes) await x.close();
      for (const l of links) await l.close();
      await server.stop();
    },
  };
}

const transports: Record<string, () => Promise<Transport>> = {
  async memory() {
    const hub = new MemoryHub();
    return { node: async () => localNode((h) => new MemoryBus(hub, h)), settle: () => sleep(5), cleanup: async () => {} };
  },

  async ipc() {
    const relay = new Relay();
    const children: ChildProcess[] = [];
    const file = fileURLToPath(new URL('./fixtures/ipc-node.ts', import.meta.url));
    let nextId = 1;
    return {
      async node() {
        const child = fork(file, { execArgv: ['--import', 'tsx'], serialization: 'advanced', stdio: 'inherit' });
        children.push(child);
        const target: RelayTarget = { id: child.pid!, send: (m) => child.connected && child.send(m) };
        const received: Node['received'] = [];
        const acks = new Map<number, (m: any) => void>();
        child.on('message', (m: any) => {
          if (m.t === 'pub') relay.publish(target, m.topic, m.payload);
          else if (m.t === 'sub') relay.update(target, m.add, m.del);
          else if (m.t === 'got') received.push({ topic: m.topic, payload: Buffer.from(m.payload) });
          else if (m.t === 'ack') acks.get(m.id)?.(m);
          else if (m.t === 'sync') child.send({ t: 'synced', id: m.id });
        });
        child.on('exit', () => relay.remove(target));
        await new Promise<void>((r) => child.once('message', () => r()));
        const cmd = (op: string, extra: object = {}) =>
          new Promise<any>((resolve) => {
            const id = nextId++;
            acks.set(id, resolve);
            child.send({ t: 'cmd', id, op, ...extra });
          });
        return {
          received,
          subscribe: async (topic) => void (await cmd('subscribe', { topic })),
          unsubscribe: async (topic) => void (await cmd('unsubscribe', { topic })),
          listening: async (topic) => (await cmd('listening', { topic })).waited,
          publish: async (topic, payload) => void (await cmd('publish', { topic, payload })),
          status: async () => (await cmd('status')).status,
          stats: async () => (await cmd('stats')).stats,
          close: async () => void (await cmd('close')),
        };
      },
      settle: () => sleep(50),
      async cleanup() {
        for (const c of children) c.kill('SIGKILL');
      },
    };
  },

  ...Object.fromEntries(Object.entries(REDIS_BACKENDS).map(([name, start]) => [name, () => redisTransport(start)])),
};

exitWhenDone(t);

for (const [name, make] of Object.entries(transports)) {
  void t.test(`${name} bus`, async (t) => {
    const tr = await make();
    t.teardown(() => tr.cleanup());
    const [a, b, c] = [await tr.node(), await tr.node(), await tr.node()];
    const bytes = (s: string) => new Uint8Array(Buffer.from(s));

    await t.test('delivers to subscribers on other nodes only, without echo', async (t) => {
      await a.subscribe('x');
      await b.subscribe('x');
      await tr.settle();
      await a.publish('x', bytes('hello'));
      await until(() => b.received.length === 1, 3000, 'delivery to b');
      await tr.settle();
      t.same(b.received.map((r) => [r.topic, r.payload.toString()]), [['x', 'hello']]);
      t.same(a.received, [], 'no echo to the publisher');
      t.same(c.received, [], 'nothing for a node without the topic');
      b.received.length = 0;
    });

    await t.test('after unsubscribe nothing more arrives', async (t) => {
      await b.unsubscribe('x');
      await tr.settle();
      await c.publish('x', bytes('again'));
      await until(() => a.received.length === 1, 3000, 'delivery to a');
      await tr.settle();
      t.same(b.received, []);
      a.received.length = 0;
    });

    await t.test('subscribe and unsubscribe are idempotent', async (t) => {
      await b.subscribe('y');
      await b.subscribe('y');
      await tr.settle();
      await a.publish('y', bytes('once'));
      await until(() => b.received.length === 1, 3000);
      await b.unsubscribe('y');
      await b.unsubscribe('y');
      await tr.settle();
      await a.publish('y', bytes('never'));
      await tr.settle();
      t.equal(b.received.length, 1, 'one copy, then none');
      b.received.length = 0;
    });

    await t.test('once listening() settles, a publish from another node arrives (no settling time)', async (t) => {
      await b.subscribe('heard');
      t.equal(await b.listening('heard'), name !== 'memory', name === 'memory' ? 'in one process a subscription takes effect at once' : 'the first time, listening() waits for the transport to confirm the subscription');
      await a.publish('heard', bytes('first'));
      await until(() => b.received.length === 1, 3000, 'delivery to b');
      t.same(b.received.map((r) => r.payload.toString()), ['first']);
      t.equal(await b.listening('heard'), false, 'then listening() does not wait');
      await b.unsubscribe('heard');
      b.received.length = 0;
    });

    await t.test('keeps the order of one publisher on one topic', async (t) => {
      await c.subscribe('order');
      await tr.settle();
      for (let i = 0; i < 200; i++) await a.publish('order', bytes(String(i)));
      await until(() => c.received.length === 200, 5000, '200 messages');
      t.same(c.received.map((r) => Number(r.payload.toString())), Array.from({ length: 200 }, (_, i) => i));
      c.received.length = 0;
    });

    await t.test('binary payloads arrive intact', async (t) => {
      await c.subscribe('bin');
      await tr.settle();
      const payload = randomBytes(4096);
      payload[0] = 0;
      await b.publish('bin', payload);
      await until(() => c.received.length === 1, 3000);
      t.ok(c.received[0]!.payload.equals(payload));
      c.received.length = 0;
    });

    await t.test('stats count publishes and deliveries; ready until closed', async (t) => {
      t.equal(await a.status(), 'ready');
      t.ok((await a.stats()).published >= 3);
      t.ok((await c.stats()).delivered >= 201);
    });

    await t.test('close is idempotent; publishing after close drops and counts', async (t) => {
      await b.close();
      await b.close();
      t.equal(await b.status(), 'closed');
      await b.publish('x', bytes('late'));
      t.equal((await b.stats()).dropped, 1);
      await tr.settle();
      t.same(a.received, [], 'nothing was delivered');
    });
  });
}
