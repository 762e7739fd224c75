/**
 * One contract suite for the stream stores (streams/streams.ts), run against
 * every implementation: in this process (LocalStreams, the reference) and
 * Redis (RedisStreams on a real redis-server, with two nodes). The embedded
 * store (the primary's, over IPC) runs in the cluster suites.
 */
import t from 'tap';
import { randomBytes } from 'node:crypto';
import { LocalStreamHub, LocalStreams } from '../src/streams/local.js';
import { Redis } from 'ioredis';
import { RedisStreams } from '../src/streams/redis.js';
import { RedisLink } from '../src/redis/link.js';
import { RedisCluster } from '../src/cluster/redis.js';
import { EmbeddedCluster } from '../src/cluster/embedded.js';
import type { Chunk, StoredFrame, StreamSink, StreamStore } from '../src/streams/streams.js';
import { createLogger } from '../src/observability/log.js';
import { REDIS_BACKENDS, type RedisBackend } from './helpers/redis-backends.js';
import { sleep, until } from './helpers/net.js';

const log = createLogger('silent');
const OPTS = { size: 5, ttlMs: 60_000, maxBytes: 1 << 20, checkMs: 5000 };

interface Node {
  store: StreamStore;
  frames: Array<{ stream: string; epoch: string; offset: number; text: string }>;
  chunks: Chunk[];
}

function sink(n: Node): StreamSink {
  return {
    frame: (stream: string, epoch: string, f: StoredFrame) => n.frames.push({ stream, epoch, offset: f.offset, text: Buffer.from(f.payload).toString() }),
    chunk: (_stream: string, c: Chunk) => n.chunks.push(c),
  };
}

/** Redis streams on one backend (one server, or a Cluster: each stream's keys and live channel share its hash tag). */
async function redisImpl(start: () => Promise<RedisBackend>): Promise<Impl> {
  const server = await start();
  const prefix = `sc${randomBytes(3).toString('hex')}:`;
  const parts: Array<{ close(): Promise<void> }> = [];
  let i = 0;
  return {
    async node() {
      const nodeId = `node-${i++}`;
      const link = new RedisLink({ target: server.target, name: nodeId, log, commandTimeoutMs: 2000, maxPendingBytes: 1 << 24 });
      const host = new EmbeddedCluster({ connected: false, on: () => {}, off: () => {} });
      const view = new RedisCluster(host, link, { prefix, nodeId, leaseMs: 10_000, log });
      const n = { frames: [], chunks: [] } as unknown as Node;
      n.store = new RedisStreams(link, view, sink(n), { ...OPTS, prefix, nodeId, log, partialTtlMs: 30_000 }, () => [], () => {});
      parts.push({
        close: async () => {
          await n.store.close();
          await view.close();
        },
      });
      await until(() => link.status === 'ready' && link.sub.inSync(0), 5000, 'redis link');
      return n;
    },
    async cleanup() {
      for (const p of parts) await p.close();
      await server.stop();
    },
    async followers(stream: string) {
      if (server.target.mode !== 'single') return undefined;
      const c = new Redis(server.target.url);
      try {
        return (await c.smembers(`${prefix}{${stream}}:n`)).sort();
      } finally {
        c.disconnect();
      }
    },
    async scripts() {
      const t = server.target;
      const clients = t.mode === 'single' ? [new Redis(t.url)] : t.mode === 'cluster' ? t.nodes.map((n) => new Redis({ host: n.host, port: n.port })) : [];
      let n = 0;
      for (const c of clients) {
        const m = /cmdstat_evalsha:calls=(\d+)/.exec(await c.info('commandstats'));
        n += Number(m?.[1] ?? 0);
        c.disconnect();
      }
      return n;
    },
  };
}

/** `scripts`: Lua scripts run so far (Redis): how many reads a test made. */
type Impl = { node(): Promise<Node>; cleanup(): Promise<void>; scripts?(): Promise<number>; followers?(stream: string): Promise<string[] | undefined> };

const impls: Record<string, () => Promise<Impl>> = {
  async local() {
    const hub = new LocalStreamHub(OPTS);
    return {
      async node() {
        const n = { frames: [], chunks: [] } as unknown as Node;
        n.store = new LocalStreams(hub, sink(n));
        return n;
      },
      cleanup: async () => hub.store.close(),
    };
  },
  ...Object.fromEntries(Object.entries(REDIS_BACKENDS).map(([name, start]) => [name, () => redisImpl(start)])),
};

for (const [name, make] of Object.entries(impls)) {
  void t.test(`${name} streams`, async (t) => {
    const impl = await make();
    t.teardown(() => impl.cleanup());
    const [a, b] = [await impl.node(), await impl.node()];
    const enc = (s: string) => s;

    await t.test('follow creates a stream with an epoch at offset 0; appends count from 1, contiguous', async (t) => {
      const r = await a.store.follow('b/c1');
      t.match(r, { epoch: /^[0-9a-f]{16}[0-9a-z]+$/, top: 0, lost: false, frames: [] });
      const p1 = await b.store.append('b/c1', enc('{"n":1}'));
      const p2 = await b.store.append('b/c1', enc('{"n":2}'));
      t.same([p1.offset, p2.offset], [1, 2]);
      t.equal(p1.epoch, r.epoch, 'the same epoch');
      await until(() => a.frames.length === 2, 3000, 'live delivery');
      t.same(a.frames.map((f) => [f.stream, f.offset, f.text]), [['b/c1', 1, '{"n":1}'], ['b/c1', 2, '{"n":2}']], 'a following node gets both, in order');
      t.equal(b.frames.length, 0, 'a node that does not follow gets nothing');
      a.store.unfollow('b/c1');
    });

    await t.test('history: frames after a position, the kept window, and lost positions', async (t) => {
      const { epoch } = await a.store.follow('s/c2/x');
      for (let i = 1; i <= 8; i++) await a.store.append('s/c2/x', enc(`{"i":${i}}`));
      const r = await b.store.follow('s/c2/x', { epoch, offset: 5 });
      t.same(r.frames.map((f) => [f.offset, Buffer.from(f.payload).toString()]), [[6, '{"i":6}'], [7, '{"i":7}'], [8, '{"i":8}']]);
      t.equal(r.top, 8);
      t.notOk(r.lost);
      t.ok((await b.store.follow('s/c2/x', { epoch, offset: 3 })).lost === false, 'the oldest kept position (frames 4-8 kept: size 5)');
      t.ok((await b.store.follow('s/c2/x', { epoch, offset: 2 })).lost, 'below the window');
      t.ok((await b.store.follow('s/c2/x', { epoch: 'ffffffffffffffff', offset: 8 })).lost, 'another epoch');
      t.ok((await b.store.follow('s/c2/x', { epoch, offset: 9 })).lost, 'from the future');
      t.same((await b.store.follow('s/c2/x', { epoch, offset: 8 })).frames, [], 'at the top: nothing to send, not lost');
      const f = await b.store.frameAt('s/c2/x', { epoch, offset: 7 });
      t.equal(Buffer.from(f!.payload).toString(), '{"i":7}');
      t.equal(await b.store.frameAt('s/c2/x', { epoch, offset: 1 }), undefined, 'trimmed');
      for (let i = 0; i < 5; i++) b.store.unfollow('s/c2/x');
      a.store.unfollow('s/c2/x');
    });

    await t.test('frames are kept and delivered byte for byte (UTF-8 text)', async (t) => {
      const { epoch } = await a.store.follow('s/c10/u');
      a.frames.length = 0;
      const text = '{"type":"message","data":{"t":"grüße ✓ 你好 🎉"}}';
      await b.store.append('s/c10/u', enc(text));
      await until(() => a.frames.length === 1, 3000, 'live delivery');
      t.equal(a.frames[0]!.text, text, 'live');
      const r = await b.store.follow('s/c10/u', { epoch, offset: 0 });
      t.equal(Buffer.from(r.frames[0]!.payload).toString(), text, 'from history');
      b.store.unfollow('s/c10/u');
      a.store.unfollow('s/c10/u');
    });

    await t.test('follows of one turn from one position share one read, and each still counts as a follow', async (t) => {
      const { epoch } = await a.store.follow('b/c9');
      for (let i = 1; i <= 3; i++) await a.store.append('b/c9', enc(`{"i":${i}}`));
      const before = await impl.scripts?.();
      const from1 = { epoch, offset: 1 };
      const reads = await Promise.all([b.store.follow('b/c9', from1), b.store.follow('b/c9', from1), b.store.follow('b/c9', from1), b.store.follow('b/c9')]);
      t.same(reads.map((r) => r.frames.map((f) => f.offset)), [[2, 3], [2, 3], [2, 3], []], 'each follow got its read');
      if (before !== undefined) t.equal((await impl.scripts!()) - before, 2, 'two reads for four follows: one per position');
      for (let i = 0; i < 3; i++) b.store.unfollow('b/c9');
      b.frames.length = 0;
      await a.store.append('b/c9', enc('{"i":4}'));
      await until(() => b.frames.length === 1, 3000, 'live delivery to b');
      t.same(b.frames.map((f) => f.offset), [4], 'one of the four follows is left: b still gets the stream live (fails if the shared read counted once)');
      b.store.unfollow('b/c9');
      a.store.unfollow('b/c9');
    });

    await t.test('session frames reach every node that follows the session', async (t) => {
      await a.store.follow('s/c3/y');
      await b.store.follow('s/c3/y');
      a.frames.length = 0;
      b.frames.length = 0;
      await a.store.append('s/c3/y', enc('{"type":"ai_response"}'));
      await until(() => a.frames.length === 1 && b.frames.length === 1, 3000, 'both nodes');
      t.same([a.frames[0]!.offset, b.frames[0]!.offset], [1, 1]);
      a.store.unfollow('s/c3/y');
      b.store.unfollow('s/c3/y');
    });

    await t.test('appends of one turn to several streams: each stream in order, contiguous, delivered; on one Redis a single script run', async (t) => {
      const streams = ['b/c11', 's/c11/z', 's/c11/w'];
      for (const s of streams) await a.store.follow(s);
      a.frames.length = 0;
      const before = await impl.scripts?.();
      const appended: Array<Promise<[string, number, number]>> = [];
      for (let i = 1; i <= 4; i++) for (const s of streams) appended.push(b.store.append(s, enc(`{"i":${i}}`)).then((p): [string, number, number] => [s, i, p.offset]));
      const got = await Promise.all(appended);
      t.ok(got.every(([, i, offset]) => offset === i), 'each frame at its place in its own stream');
      if (before !== undefined) {
        const runs = (await impl.scripts!()) - before;
        if (name === 'redis') t.equal(runs, 1, 'twelve appends, one script run');
        else t.ok(runs <= streams.length, `twelve appends, ${runs} script runs (one per slot)`);
      }
      await until(() => a.frames.length === 12, 3000, 'live delivery');
      for (const s of streams) t.same(a.frames.filter((f) => f.stream === s).map((f) => [f.offset, f.text]), [1, 2, 3, 4].map((i) => [i, `{"i":${i}}`]), `${s}: in order, once`);
      for (const s of streams) a.store.unfollow(s);
    });

    await t.test('150 appends of one turn to one stream: in order; on one Redis in runs of at most 64 (a script blocks Redis while it runs)', async (t) => {
      const before = await impl.scripts?.();
      const offsets = await Promise.all(Array.from({ length: 150 }, (_, i) => b.store.append('b/c13', enc(`{"i":${i}}`)).then((p) => p.offset)));
      t.same(offsets, Array.from({ length: 150 }, (_, i) => i + 1), 'offsets 1..150, in the order appended');
      if (before !== undefined && name === 'redis') t.equal((await impl.scripts!()) - before, 3, 'three script runs: 64, 64 and 22 frames');
    });

    await t.test('a session followed and left in the same turn: the node is not left among its followers', async (t) => {
      await a.store.follow('s/c12/q');
      const left = b.store.follow('s/c12/q');
      b.store.unfollow('s/c12/q');
      await left;
      const followers = await impl.followers?.('s/c12/q');
      if (followers !== undefined) t.same(followers, ['node-0'], 'only the node that still follows');
      a.frames.length = 0;
      b.frames.length = 0;
      await a.store.append('s/c12/q', enc('{"n":1}'));
      await sleep(100);
      t.same([a.frames.length, b.frames.length], [1, 0], 'a frame reaches the follower only');
      a.store.unfollow('s/c12/q');
    });

    await t.test('claims: first come new, then pending, then answered with its position', async (t) => {
      t.same(await a.store.claim('s/c4/z', 'm1'), { state: 'new' });
      t.same(await b.store.claim('s/c4/z', 'm1'), { state: 'pending' });
      const pos = await a.store.append('s/c4/z', enc('{"type":"ai_response"}'), { cmid: 'm1' });
      t.same(await b.store.claim('s/c4/z', 'm1'), { state: 'answered', epoch: pos.epoch, offset: pos.offset });
      t.same(await b.store.claim('s/c4/z', 'm2'), { state: 'new' }, 'another id');
    });

    await t.test('a streamed answer: pieces reach the other followers; a reader that joins gets the text so far; the final answer clears it', async (t) => {
      await a.store.follow('s/c5/w');
      await b.store.follow('s/c5/w');
      b.chunks.length = 0;
      a.store.chunk('s/c5/w', { messageId: 'M', index: 0, delta: 'Hel' });
      await sleep(50);
      a.store.chunk('s/c5/w', { messageId: 'M', index: 3, delta: 'lo' });
      await until(() => b.chunks.length >= 1, 3000, 'pieces on the other node');
      t.ok(b.chunks.every((c) => c.messageId === 'M'));
      const joined = await b.store.follow('s/c5/w');
      t.same(joined.partial, { messageId: 'M', text: 'Hello' }, 'the text so far');
      await a.store.append('s/c5/w', enc('{"type":"ai_response","message_id":"M"}'), { ends: 'M' });
      t.equal((await b.store.follow('s/c5/w')).partial, undefined, 'gone once answered');
    });

    await t.test('the socket that asked left mid-answer: its pieces and answer still reach the other follower, and the node forgets the session after', async (t) => {
      await a.store.follow('s/c11/v');
      await b.store.follow('s/c11/v');
      a.store.unfollow('s/c11/v'); // a's socket left; its answer goes on
      const knownBefore = (a.store as { knownReaders?: number }).knownReaders;
      b.chunks.length = 0;
      b.frames.length = 0;
      a.store.chunk('s/c11/v', { messageId: 'M', index: 0, delta: 'Hi' });
      await until(() => b.chunks.length >= 1, 3000, 'the piece on the other node');
      await a.store.append('s/c11/v', enc('{"type":"ai_response","message_id":"M"}'), { ends: 'M' });
      await until(() => b.frames.length === 1, 3000, 'the answer on the other node');
      const known = (a.store as { knownReaders?: number }).knownReaders;
      if (known !== undefined) t.equal(known, knownBefore, 'a keeps nothing of a session it neither follows nor streams for any more (fails if the answer leaves its readers behind)');
      b.store.unfollow('s/c11/v');
    });
  });
}
