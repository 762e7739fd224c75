/** Small pure parts: validation, rate limiting, the relay, back-off, the uWS loader. */
import t, { type Test } from 'tap';
import { loadConfig, workerExecArgv } from '../src/config/index.js';
import { decodeFrame, validateMessage } from '../src/pipeline/validate.js';
import { BucketTable, nowUs } from '../src/limits/buckets.js';
import { KeyedBuckets } from '../src/limits/keyed.js';
import { MemoryRateStore, type ChargeBatch, type RateStore, type RateUpdate } from '../src/limits/store.js';
import { RateSync } from '../src/limits/sync.js';
import { Limits, sessionKey } from '../src/limits/index.js';
import { createLogger } from '../src/observability/log.js';
import { Relay, type RelayTarget } from '../src/primary/relay.js';
import { StreamService } from '../src/primary/streams.js';
import { PieceBuffer } from '../src/streams/progress.js';
import type { Chunk } from '../src/streams/streams.js';
import { sleep } from './helpers/net.js';
import { backoffMs } from '../src/primary/supervisor.js';
import { loadUws, UwsLoadError, CANDIDATES } from '../src/uws/loader.js';
import { ERRORS, aiResponse, aiResponseObject, connectionStatus, connectionStatusObject, newMessageId, type Answer } from '../src/protocol/frames.js';
import { eachPut, type PrimaryToWorker, type WorkerToPrimary } from '../src/cluster/ipc.js';
import { EmbeddedCluster } from '../src/cluster/embedded.js';
import { EmbeddedStreams } from '../src/streams/embedded.js';
import { byToken, keyVerifier, KEPT_TOKEN_CHARS, KEPT_TOKENS } from '../src/auth/jwks.js';
import { createSigner } from 'fast-jwt';
import { countFds } from '../src/gateway/fd-guard.js';
import { MemoryStreamStore } from '../src/streams/memory.js';
import { openSync, closeSync, readdirSync } from 'node:fs';
import { AggregatorRegistry, Histogram, Registry } from 'prom-client';
import { FastHistogram, Metrics } from '../src/observability/metrics.js';
import { Conn, SocketSet, type ConnEnv } from '../src/gateway/sockets.js';
import type { StreamHub } from '../src/streams/hub.js';

const enc = (s: string) => new TextEncoder().encode(s);

void t.test('decodeFrame', async (t) => {
  t.same(decodeFrame(enc('{"type":"ping"}'), false), { ok: true, msg: { type: 'ping' } });
  t.same(decodeFrame(enc('{"type":"user_message","content":" hi "}'), false), { ok: true, msg: { type: 'user_message', content: 'hi' } });
  t.same(decodeFrame(new Uint8Array([0xff, 0xfe]), true), { ok: false, error: ERRORS.INVALID_JSON });
  t.same(decodeFrame(enc('{'), false), { ok: false, error: ERRORS.INVALID_JSON });
  t.same(validateMessage({ type: 'user_message', content: null }), { ok: false, error: ERRORS.EMPTY });
  t.same(validateMessage({ type: 'x'.repeat(100) }).ok, false);
  t.same(validateMessage({ type: 'user_message', content: ' abc ', extra: { ignored: true } }, { maxContentChars: 3 }), { ok: true, msg: { type: 'user_message', content: 'abc' } }, 'trimmed length counts; unknown fields are dropped');
  t.same(validateMessage({ type: 'user_message', content: 'abcd' }, { maxContentChars: 3 }), { ok: false, error: ERRORS.TOO_LONG });
});

void t.test('verified tokens kept by token: until they expire or 10 minutes pass, bounded, refusals never kept', async (t) => {
  let now = 1_000_000_000_000;
  let calls = 0;
  const inner = (token: string): Record<string, unknown> => {
    calls++;
    if (token.startsWith('bad')) throw new Error('invalid');
    return token.startsWith('exp') ? { sub: token, exp: Math.floor(now / 1000) + 60 } : { sub: token };
  };
  const verify = byToken(inner, () => now);
  t.same(verify('a'), { sub: 'a' });
  t.same(verify('a'), { sub: 'a' });
  t.equal(calls, 1, 'the second verify of a token is kept');
  now += 600_000;
  verify('a');
  t.equal(calls, 2, 'after 10 minutes it is verified again');
  verify('exp1');
  now += 59_000;
  verify('exp1');
  t.equal(calls, 3, 'kept while it has not expired');
  now += 1_000;
  verify('exp1');
  t.equal(calls, 4, 'verified again once its exp is reached (fast-jwt decides, with its clock tolerance)');
  t.throws(() => verify('bad'));
  t.throws(() => verify('bad'));
  t.equal(calls, 6, 'a refusal is never kept');
  const long = 'L'.repeat(KEPT_TOKEN_CHARS + 1);
  verify(long);
  verify(long);
  t.equal(calls, 8, 'a long token is not kept');
  for (let i = 0; i < KEPT_TOKENS + 1; i++) verify(`n${i}`);
  const before = calls;
  verify('n0');
  t.equal(calls, before + 1, `at most ${KEPT_TOKENS} kept: the oldest went first`);
  verify(`n${KEPT_TOKENS}`);
  t.equal(calls, before + 1, 'the newest is kept');
});

void t.test('the real verifier keeps a verified token and still refuses one differing only in its signature', async (t) => {
  const secret = 'k'.repeat(32);
  const verify = keyVerifier(secret, ['HS256']);
  const a = createSigner({ key: secret, algorithm: 'HS256' })({ creator_id: 'a' });
  t.equal(verify(a).creator_id, 'a');
  t.equal(verify(a).creator_id, 'a', 'again, kept');
  const forged = `${a.slice(0, a.lastIndexOf('.'))}.AAAA`;
  t.throws(() => verify(forged));
  t.throws(() => verify(forged), 'twice');
});

void t.test('shared token buckets (GCRA)', async (t) => {
  await t.test('a burst of the limit, then one per window/limit, never more than the limit', async (t) => {
    const b = new BucketTable(4, 3, 3000); // 3 per 3 s
    let now = 1e15;
    const takes = () => [b.take(1, now), b.take(1, now), b.take(1, now), b.take(1, now)];
    t.same(takes(), [true, true, true, false], 'a burst of 3, then refused');
    t.ok(b.take(2, now), 'slots are independent');
    now += 999_000;
    t.notOk(b.take(1, now), 'not yet refilled');
    now += 1_000;
    t.ok(b.take(1, now), 'one token per second');
    now += 60e6;
    t.same(takes(), [true, true, true, false], 'refills to the limit, no more');
  });

  await t.test('counted tables count takes for the store; adopt only moves forward', async (t) => {
    const b = new BucketTable(2, 10, 1000, true);
    const now = 1e15;
    for (let i = 0; i < 4; i++) b.take(1, now);
    t.equal(b.drainCharged(1), 4);
    t.equal(b.drainCharged(1), 0, 'drained');
    b.adopt(1, now + 1e6);
    t.notOk(b.take(1, now), 'a TAT a whole window ahead (taken elsewhere) refuses');
    b.adopt(1, now);
    t.notOk(b.take(1, now), 'adopting an older TAT changes nothing');
  });

  await t.test('keyed buckets: held keys keep their slot, full idle ones are freed, overflow shares slot 0', async (t) => {
    const k = new KeyedBuckets('session', 2, 1, 60_000);
    t.teardown(() => k.close());
    const a = k.acquire('a');
    t.ok(k.take('a'));
    t.notOk(k.take('a'), 'limit 1');
    k.release('a');
    k.sweep();
    t.equal(k.slotOf('a'), a, 'a released key in debt keeps its bucket (reconnecting does not reset it)');
    t.notOk(k.take('a'));
    t.ok(k.take('b'), 'second key');
    t.ok(k.take('c'), 'the table is full of keys in debt: a new key gets the overflow bucket');
    t.equal(k.slotOf('c'), undefined);
    t.notOk(k.take('d'), 'and every further one shares it: limited together, never let through');
    const idle = new KeyedBuckets('x', 1, 1, 1000);
    t.teardown(() => idle.close());
    idle.acquire('p');
    idle.release('p');
    idle.sweep();
    t.equal(idle.size, 0, 'a released key with a full bucket is freed');
  });

  await t.test('a closing socket gives back its session and its creator, even with takes to report', async (t) => {
    const limits = new Limits(
      { frameRateLimit: 0, connectRatePerIp: 0, rateLimitMessages: 5, rateLimitWindowS: 60, aiBudgetPerMinute: 100, rateLimitSyncMs: 60_000, maxConnections: 8 },
      new MemoryRateStore(),
      createLogger('silent'),
    );
    t.teardown(() => limits.close());
    const slots = limits.acquire('c1', 'creator', sessionKey('creator', 's'));
    t.ok(limits.messages.session!.take(slots.sessionSlot, nowUs()), 'a take on the session only: its creator\'s bucket stays full');
    limits.release('c1', 'creator', sessionKey('creator', 's'));
    limits.creators!.sweep();
    t.equal(limits.creators!.size, 0, 'the creator is no longer held: its full bucket is freed');
    t.equal(limits.sessions!.size, 1, 'the session keeps its bucket while in debt');
  });

  await t.test('the memory store charges one shared TAT per key (the GCRA the Redis script follows)', async (t) => {
    let now = 1e15;
    const s = new MemoryRateStore(() => now);
    t.teardown(() => s.close());
    t.same(await s.charge({ kind: 'session', intervalUs: 1000, keys: ['a', 'b'], counts: [3, 0] }), [3000, 0]);
    t.same(await s.charge({ kind: 'session', intervalUs: 1000, keys: ['a'], counts: [2] }), [5000], 'takes from two workers add up');
    now += 4000;
    t.same(await s.charge({ kind: 'session', intervalUs: 1000, keys: ['a'], counts: [0] }), [1000], 'a read; time pays the debt');
    t.same(await s.charge({ kind: 'creator', intervalUs: 1000, keys: ['a'], counts: [0] }), [0], 'kinds are separate');
  });

  await t.test('a worker adopting another\'s report keeps its own unreported and in-flight takes (exact across a move)', async (t) => {
    // Two workers (X, Y) on one store, a session limited to 5 per minute:
    // nothing refills during the test, so every take admitted is counted.
    const store = new MemoryRateStore();
    /** Y's reports wait for `gate` when it is set: still on their way to the store. */
    let gate: Promise<void> | undefined;
    const delayed: RateStore = {
      charge: async (b: ChargeBatch) => {
        await gate;
        return store.charge(b);
      },
      onUpdate: (l: (u: RateUpdate) => void) => store.onUpdate(l),
      close: async () => {},
    };
    const log = createLogger('silent');
    const worker = (s: RateStore) => {
      const kb = new KeyedBuckets('session', 8, 5, 60_000, true);
      const sync = new RateSync(s, [kb], 60_000, log);
      return { kb, sync, slot: kb.acquire('s'), take: () => kb.table.take(kb.slotOf('s')!, nowUs()) };
    };
    const X = worker(store);
    const Y = worker(delayed);
    t.teardown(async () => {
      for (const w of [X, Y]) { await w.sync.close(); w.kb.close(); }
      await store.close();
    });
    const turn = () => new Promise((r) => setImmediate(r));

    t.same([X.take(), X.take(), X.take()], [true, true, true], 'X admits 3, not yet reported');
    await Y.sync.sync(); // Y fetches the session: nothing charged yet
    t.ok(Y.take(), 'Y admits its 1st');
    await X.sync.sync(); // X's 3 reach the store; Y hears of them
    await turn();
    t.same([Y.take(), Y.take()], [true, false], 'Y counts 3 + its own unreported 1: one more, then refused (5 in all)');

    // In flight: Y's report is on its way when X's arrives at the store first.
    const Y2 = worker(delayed);
    const X2 = worker(store);
    t.teardown(async () => {
      for (const w of [X2, Y2]) { await w.sync.close(); w.kb.close(); }
    });
    X2.kb.acquire('t');
    Y2.kb.acquire('t');
    const takeT = (w: typeof X2) => w.kb.table.take(w.kb.slotOf('t')!, nowUs());
    await Promise.all([X2.sync.sync(), Y2.sync.sync()]); // both fetch the session: nothing charged
    t.same([takeT(X2), takeT(X2), takeT(Y2), takeT(Y2)], [true, true, true, true], 'X admits 2, Y admits 2');
    let open!: () => void;
    gate = new Promise((r) => (open = r));
    const reporting = Y2.sync.sync(); // Y's 2 leave; the store has not got them
    await X2.sync.sync(); // X's 2 reach the store first
    await turn(); // Y hears of them while its own are in flight
    t.same([takeT(Y2), takeT(Y2)], [true, false], 'Y counts X\'s 2 and its 2 in flight: one more, then refused (5 in all)');
    open();
    await reporting;
    gate = undefined;
  });
});

void t.test('Relay forwards to interested workers, never back to the publisher', async (t) => {
  const got: Record<number, string[]> = { 1: [], 2: [], 3: [] };
  const w = (id: number): RelayTarget => ({ id, send: (m: PrimaryToWorker) => m.t === 'msg' && got[id]!.push(m.topic) });
  const [a, b, c] = [w(1), w(2), w(3)];
  const r = new Relay();
  r.update(a, ['x'], []);
  r.update(b, ['x', 'y'], []);
  t.equal(r.publish(a, 'x', new Uint8Array()), 1);
  t.equal(r.publish(c, 'x', new Uint8Array()), 2);
  t.equal(r.publish(c, 'z', new Uint8Array()), 0);
  t.same(got, { 1: ['x'], 2: ['x', 'x'], 3: [] });
  r.update(b, [], ['y']);
  t.equal(r.publish(a, 'y', new Uint8Array()), 0, 'unsubscribed');
  r.remove(a);
  r.remove(b);
  t.equal(r.topics, 0, 'nothing left behind when workers go');
});

void t.test('PieceBuffer: the pieces of one answer merge while held; another answer, a flush or the timer sends them; the final frame drops them', async (t) => {
  const sent: Array<[string, Chunk]> = [];
  const b = new PieceBuffer((stream, c) => sent.push([stream, c]), 30);
  b.hold('s/a/1', { messageId: 'M', index: 0, delta: 'Hel' });
  b.hold('s/a/1', { messageId: 'M', index: 3, delta: 'lo' });
  b.hold('s/a/2', { messageId: 'N', index: 0, delta: 'x' });
  t.same(sent, [], 'held');
  b.flush('s/a/1');
  t.same(sent, [['s/a/1', { messageId: 'M', index: 0, delta: 'Hello' }]], 'one piece: the held ones joined, from the first index');
  b.hold('s/a/1', { messageId: 'M', index: 5, delta: ', w' });
  b.hold('s/a/1', { messageId: 'M2', index: 0, delta: 'new' });
  t.same(sent.at(-1), ['s/a/1', { messageId: 'M', index: 5, delta: ', w' }], 'a piece of another answer sends what was held of the first');
  b.hold('s/a/1', { messageId: 'M2', index: 9, delta: '?' });
  t.same(sent.at(-1), ['s/a/1', { messageId: 'M2', index: 0, delta: 'new' }], 'a piece that does not continue the held text is not merged into it');
  await sleep(80);
  t.same(sent.slice(-2).map(([s, c]) => `${s} ${c.messageId} ${c.index} ${c.delta}`).sort(), ['s/a/1 M2 9 ?', 's/a/2 N 0 x'], 'the timer sends the rest');
  b.hold('s/a/1', { messageId: 'M3', index: 0, delta: 'gone' });
  b.drop('s/a/1', 'other');
  b.drop('s/a/1', 'M3');
  const n = sent.length;
  b.close();
  t.equal(sent.length, n, 'dropped (its final frame has the whole text): nothing left to send');
});

/**
 * Workers' real EmbeddedCluster and EmbeddedStreams, the primary's real
 * StreamService; between them, in-process channels routed as the
 * supervisor routes them: a worker's messages reach the primary at once,
 * the primary's reach a worker in a later turn, each channel in order.
 * `lose`: a worker's messages are dropped from then on (a crash's unsent
 * ones).
 */
function embeddedWorkers(t: Test, n: number) {
  const svc = new StreamService({ size: 10, ttlMs: 1000, maxBytes: 1 << 20 });
  t.teardown(() => svc.close());
  return {
    svc,
    workers: Array.from({ length: n }, (_, i) => {
      let toWorker: (m: unknown) => void = () => {};
      const w = {
        toWorkerLog: [] as PrimaryToWorker[],
        follows: [] as Array<number | undefined>,
        frames: [] as Array<{ stream: string; epoch: string; offset: number; text: string }>,
        lose: false,
        streams: undefined as unknown as EmbeddedStreams,
      };
      const target = {
        id: i + 1,
        send: (m: PrimaryToWorker) => {
          w.toWorkerLog.push(m);
          setImmediate(() => toWorker(m));
        },
      };
      const port = {
        connected: true,
        send: (m: WorkerToPrimary) => {
          if (w.lose) return true;
          if (m.t === 'req' && m.op === 'follow') {
            w.follows.push(m.times);
            const result = svc.follow(target, m.arg!, m.pos, m.times);
            target.send({ t: 'res', id: m.id, result } as PrimaryToWorker);
          } else if (m.t === 'req' && m.op === 'append') svc.appendFor(target, m.id, m.arg!, m.frame!, { cmid: m.cmid, ends: m.ends });
          else if (m.t === 'unfollow') svc.unfollow(target, m.stream);
          else if (m.t === 'puts') eachPut(m.p, (stream, epoch, offset, payload, cmid, ends, fwd) => svc.put(target, stream, epoch, offset, payload, { cmid, ends }, fwd));
          else if (m.t === 'decline') svc.decline(target, m.stream, m.fwd);
          return true;
        },
        on: (_e: 'message', fn: (m: unknown) => void) => (toWorker = fn),
        off: () => {},
      };
      w.streams = new EmbeddedStreams(new EmbeddedCluster(port), {
        frame: (stream, epoch, f) => w.frames.push({ stream, epoch, offset: f.offset, text: Buffer.from(f.payload).toString() }),
        chunk: () => {},
      });
      t.teardown(() => w.streams.close());
      return Object.assign(w, { target });
    }),
  };
}

function embeddedPair(t: Test) {
  const { svc, workers } = embeddedWorkers(t, 1);
  return { svc, ...workers[0]! };
}

void t.test('EmbeddedStreams: follows of one turn asking the same read share one request, counted as many by the primary', async (t) => {
  const { svc, streams, follows } = embeddedPair(t);
  const first = svc.append('b/c', '{"n":1}', {});
  svc.append('b/c', '{"n":2}', {});
  const from0 = { epoch: first.epoch, offset: 0 };
  const reads = await Promise.all([streams.follow('b/c', from0), streams.follow('b/c', from0), streams.follow('b/c', from0), streams.follow('b/c')]);
  t.same(follows, [3, undefined], 'two requests for four follows: one per stream and position, the shared one counted 3 times');
  t.same(reads.map((r) => r.frames.map((f) => f.offset)), [[1, 2], [1, 2], [1, 2], []], 'each follow got its read');
  await streams.follow('b/c', from0);
  t.same(follows, [3, undefined, undefined], 'a follow of a later turn asks again');
  for (let i = 0; i < 4; i++) streams.unfollow('b/c');
  await sleep(10);
  svc.store.expire(Date.now() + 5000);
  t.equal(svc.store.read('b/c').epoch, first.epoch, 'one follow of the five is left: the stream is kept past its TTL');
  streams.unfollow('b/c');
  await sleep(10);
  svc.store.expire(Date.now() + 5000);
  t.not(svc.store.read('b/c').epoch, first.epoch, 'all five unfollowed: it expires (a new epoch)');
});

void t.test('EmbeddedStreams: an append to a session this worker alone follows is numbered here (a lease): delivered at once, put to the primary, no answer awaited', async (t) => {
  const { svc, streams, toWorkerLog, frames } = embeddedPair(t);
  const read = await streams.follow('s/c/1');
  t.equal(read.lease, true, 'the only worker following the session holds its offsets');
  await sleep(5);
  toWorkerLog.length = 0;
  const pending = streams.append('s/c/1', '{"type":"ai_response"}');
  t.same(frames.map((f) => f.offset), [1], 'delivered before append returned (no round trip)');
  t.match(await pending, { epoch: read.epoch, offset: 1 }, 'resolved with its position');
  await sleep(5);
  t.same(toWorkerLog, [], 'the primary sent nothing back');
  const stored = svc.store.read('s/c/1', { epoch: read.epoch, offset: 0 });
  t.same([stored.top, Buffer.from(stored.frames[0]!.payload).toString()], [1, '{"type":"ai_response"}'], 'and stored it at the offset the worker gave');
  const other = await streams.append('s/c/2', '{"type":"error"}');
  t.match(other, { offset: 1 }, 'a session this worker does not follow (its socket left): appended through the primary');
  t.same(toWorkerLog.map((m) => m.t), ['res'], 'and answered by a res alone');
  streams.unfollow('s/c/1');
});

void t.test('EmbeddedStreams: a leased session\'s appends made on another worker are numbered by the holder; one order for all', async (t) => {
  const { svc, workers } = embeddedWorkers(t, 2);
  const [a, b] = workers as [(typeof workers)[0], (typeof workers)[0]];
  t.equal((await a.streams.follow('s/c/1')).lease, true, 'a: the lease');
  t.equal((await b.streams.follow('s/c/1')).lease, undefined, 'b follows too: no lease for it');
  await sleep(5);
  b.toWorkerLog.length = 0;
  const fromB = b.streams.append('s/c/1', '{"n":"b1"}');
  const fromA = a.streams.append('s/c/1', '{"n":"a1"}');
  t.match(await fromB, { offset: 2 }, "b's append, forwarded to a, was numbered after a's own (made first at the holder)");
  t.match(await fromA, { offset: 1 });
  await sleep(5);
  const texts = (w: typeof a) => w.frames.map((f) => `${f.offset} ${f.text}`);
  t.same(texts(a), ['1 {"n":"a1"}', '2 {"n":"b1"}'], 'a delivered both at once, in offset order');
  t.same(texts(b), ['1 {"n":"a1"}', '2 {"n":"b1"}'], 'b got both from the primary, in the same order');
  const stored = svc.store.read('s/c/1', { epoch: a.frames[0]!.epoch, offset: 0 });
  t.same(stored.frames.map((f) => Buffer.from(f.payload).toString()), ['{"n":"a1"}', '{"n":"b1"}'], 'stored the same');
  t.equal(b.toWorkerLog.filter((m) => m.t === 'res').length, 0, "b's append was answered by its copy of the frame");
});

void t.test('EmbeddedStreams: when the holder stops following, appends forwarded to it and not made are made by the primary, once', async (t) => {
  const { svc, workers } = embeddedWorkers(t, 2);
  const [a, b] = workers as [(typeof workers)[0], (typeof workers)[0]];
  const read = await a.streams.follow('s/c/1');
  await b.streams.follow('s/c/1');
  const fromB = b.streams.append('s/c/1', '{"n":"b1"}'); // forwarded to a, which has not read it yet
  a.streams.unfollow('s/c/1'); // the lease ends: the primary makes it
  t.match(await fromB, { offset: 1 }, 'answered once');
  await sleep(5);
  t.ok(a.toWorkerLog.some((m) => m.t === 'fwd'), 'the forward reached a after it left (declined, ignored)');
  t.equal(svc.store.read('s/c/1', { epoch: read.epoch, offset: 0 }).top, 1, 'stored once');
  t.match(await b.streams.append('s/c/1', '{"n":"b2"}'), { offset: 2 }, 'the next append: the primary numbers it (b follows, no lease)');
});

void t.test('EmbeddedStreams: a holder that dies may have delivered frames it never put: its sessions start a new epoch, resumes are told', async (t) => {
  const { svc, workers } = embeddedWorkers(t, 2);
  const [a, b] = workers as [(typeof workers)[0], (typeof workers)[0]];
  const read = await a.streams.follow('s/c/1');
  await a.streams.append('s/c/1', '{"n":1}');
  a.lose = true; // the crash: what it sends from now on never arrives
  await a.streams.append('s/c/1', '{"n":2}');
  t.same(a.frames.map((f) => f.offset), [1, 2], 'its socket was sent offsets 1 and 2');
  t.equal(svc.store.read('s/c/1').top, 1, 'the primary has 1');
  svc.remove(a.target);
  const resumed = await b.streams.follow('s/c/1', { epoch: read.epoch, offset: 2 });
  t.equal(resumed.lost, true, 'a resume from offset 2 of that epoch: continuity lost, not a silent gap');
  t.not(resumed.epoch, read.epoch, 'a new epoch');
  t.equal(resumed.lease, true, 'b follows alone now: it holds the session');
  t.match(await b.streams.append('s/c/1', '{"n":3}'), { epoch: resumed.epoch, offset: 1 }, 'offset 2 is never given again in the old epoch');
});

void t.test("EmbeddedStreams: a put that does not fit the stream (it was evicted or started again) ends the lease: a new epoch, told to every follower", async (t) => {
  const { svc, workers } = embeddedWorkers(t, 1);
  const a = workers[0]!;
  const read = await a.streams.follow('s/c/1');
  svc.store.rebase('s/c/1'); // as if evicted and begun again
  const moved = svc.store.read('s/c/1').epoch;
  const puts = [a.streams.append('s/c/1', '{"n":1}'), a.streams.append('s/c/1', '{"n":2}')]; // the second put leaves before the worker hears of the first's fate
  t.same((await Promise.all(puts)).map((p) => p.epoch), [read.epoch, read.epoch], 'numbered here, in the lease\'s epoch');
  await sleep(5);
  t.equal(a.toWorkerLog.filter((m) => m.t === 'unlease').length, 1, 'the lease ended, once');
  const relayed = a.frames.filter((f) => f.epoch !== read.epoch);
  t.same(relayed.map((f) => `${f.offset} ${f.text}`), ['1 {"n":1}', '2 {"n":2}'], 'both frames came back from the primary, stored once each, in order');
  t.not(relayed[0]!.epoch, moved, 'in a new epoch, so the readers are told');
  t.not(relayed[0]!.epoch, read.epoch);
  t.equal(relayed[1]!.epoch, relayed[0]!.epoch, 'one new epoch: the late put did not start another');
  t.match(await a.streams.append('s/c/1', '{"n":3}'), { epoch: relayed[0]!.epoch, offset: 3 }, 'the next append goes through the primary');
});

void t.test('EmbeddedStreams: a lease granted to a following this worker already ended is not taken', async (t) => {
  const { svc, streams, toWorkerLog } = embeddedPair(t);
  const reading = streams.follow('s/c/9');
  streams.unfollow('s/c/9'); // same turn: the follow is asked first, then the unfollow
  const read = await reading;
  t.equal(read.lease, true, 'the primary granted it');
  await sleep(5);
  toWorkerLog.length = 0;
  const pos = await streams.append('s/c/9', '{"n":1}');
  t.match(pos, { offset: 1 }, 'not taken: the append went through the primary (which ended the lease at the unfollow)');
  t.same(toWorkerLog.map((m) => m.t), ['res'], 'answered by the primary');
  await sleep(5);
  svc.store.expire(Date.now() + 5000);
  t.not(svc.store.read('s/c/9').epoch, read.epoch, 'and the primary counts no follow left (the stream expired)');
});

void t.test('StreamService tells the workers following a session when another worker follows it too, and when none does any more', async (t) => {
  const got: Record<number, string[]> = { 1: [], 2: [], 3: [] };
  const w = (id: number) => ({ id, send: (m: PrimaryToWorker) => m.t === 'shared' && got[id]!.push(`${m.stream} ${m.shared}`) });
  const [a, b, c] = [w(1), w(2), w(3)];
  const s = new StreamService({ size: 10, ttlMs: 60_000, maxBytes: 1 << 20 });
  t.teardown(() => s.close());
  s.follow(a, 's/x/1', undefined);
  s.follow(a, 's/x/1', undefined);
  s.follow(a, 'b/x', undefined);
  s.follow(b, 'b/x', undefined);
  t.same(got, { 1: [], 2: [], 3: [] }, 'one worker, however many follows; broadcast streams are never "shared"');
  s.follow(b, 's/x/1', undefined);
  t.same(got, { 1: ['s/x/1 true'], 2: ['s/x/1 true'], 3: [] }, 'a second worker: both are told');
  s.follow(c, 's/x/1', undefined);
  t.same(got[3], ['s/x/1 true'], 'a third: it is told');
  t.equal(got[1]!.length + got[2]!.length, 2, 'the others knew already');
  s.unfollow(c, 's/x/1');
  s.unfollow(a, 's/x/1');
  t.equal(got[2]!.length, 1, 'two workers still follow (a follows twice)');
  s.unfollow(a, 's/x/1');
  t.same(got[2], ['s/x/1 true', 's/x/1 false'], 'the one left is told it is alone');
  s.follow(a, 's/x/1', undefined);
  s.remove(b);
  t.same(got[1]!.slice(-2), ['s/x/1 true', 's/x/1 false'], 'a worker that exits counts as leaving');
});

void t.test('respawn back-off grows and is capped', async (t) => {
  t.same([0, 1, 2, 3, 8, 20].map(backoffMs), [0, 250, 500, 1000, 30000, 30000]);
});

void t.test("the workers' Node flags: WORKER_SEMI_SPACE_MB and WORKER_GC, unless 0 or given already", async (t) => {
  const flags = (argv: string[], semiSpaceMb: number, gc: 'single' | 'parallel' = 'parallel') => workerExecArgv(argv, { semiSpaceMb, gc });
  t.same(flags(['--enable-source-maps'], 4), ['--enable-source-maps', '--max-semi-space-size=4']);
  t.same(flags(['--enable-source-maps'], 0), ['--enable-source-maps'], '0: V8 decides');
  t.same(flags(['--max_semi_space_size=8'], 4), ['--max_semi_space_size=8'], "the primary's own flag wins, either spelling");
  t.same(flags(['--max-semi-space-size-x=2'], 4), ['--max-semi-space-size-x=2', '--max-semi-space-size=4'], 'a flag that only starts the same does not count');
  t.same(flags([], 4, 'single'), ['--max-semi-space-size=4', '--single-threaded-gc'], 'WORKER_GC=single');
  t.same(flags(['--no-single-threaded-gc'], 0, 'single'), ['--no-single-threaded-gc'], "the primary's own GC-threading flag wins");
  t.same(flags(['--single_threaded_gc'], 0, 'single'), ['--single_threaded_gc'], 'either spelling, not added twice');
  const cfg = (env: Record<string, string>) => loadConfig({ JWT_SECRET: 'x'.repeat(32), ...env });
  const semi = (env: Record<string, string>) => cfg(env).workerSemiSpaceMb;
  t.equal(semi({}), 4, 'the default');
  t.equal(semi({ WORKER_SEMI_SPACE_MB: '0' }), 0);
  t.equal(semi({ NODE_OPTIONS: '--trace-gc --max-semi-space-size=8' }), 0, 'NODE_OPTIONS sets it: nothing is added');
  t.throws(() => semi({ WORKER_SEMI_SPACE_MB: '-1' }), /WORKER_SEMI_SPACE_MB/, 'a bad value names the variable');
  t.equal(cfg({}).workerGc, 'single', 'the default: one GC thread per worker');
  t.equal(cfg({ WORKER_GC: 'parallel' }).workerGc, 'parallel');
  t.equal(cfg({ NODE_OPTIONS: '--no-parallel-scavenge' }).workerGc, 'parallel', 'NODE_OPTIONS chooses: nothing is added');
  t.equal(cfg({ NODE_OPTIONS: '--parallel-scavenge-x' }).workerGc, 'single', 'a flag that only starts the same does not count');
  t.throws(() => cfg({ WORKER_GC: 'threads' }), /WORKER_GC/, 'a bad value names the variable');
});

void t.test('uWS loader', async (t) => {
  const u = loadUws();
  t.equal(u.source, '@trufflesuite/uws-js-unofficial');
  t.match(u.binary, /uws_linux_x64_\d+\.node$/);
  t.equal(typeof u.uws.App, 'function');
  t.equal(CANDIDATES[0]!.source, 'uWebSockets.js', 'the official package is preferred where installed');

  const missing = [
    { source: 'uWebSockets.js' as const, pkgJson: () => { throw new Error('nope'); }, dir: '.' },
    { source: '@trufflesuite/uws-js-unofficial' as const, pkgJson: () => CANDIDATES[1]!.pkgJson(), dir: 'no-such-dir' },
  ];
  let err: unknown;
  try {
    loadUws(missing);
  } catch (e) {
    err = e;
  }
  t.ok(err instanceof UwsLoadError, 'no JS fallback: a UwsLoadError');
  t.match((err as Error).message, /uWebSockets\.js.*package not installed/);
  t.match((err as Error).message, /no-such-dir.*Cannot find module/);
});

void t.test('GuardedEngine: circuit breaker and per-creator bound', async (t) => {
  const { GuardedEngine } = await import('../src/ai/guard.js');
  let now = 0;
  let fail = true;
  let calls = 0;
  let release: (() => void) | undefined;
  const inner = {
    async ask(q: { query: string }) {
      calls++;
      if (q.query === 'hold') await new Promise<void>((r) => (release = r));
      if (fail) throw new Error('AI engine answered HTTP 500');
      return { response: q.query, confidence: 1, sources: [] };
    },
    async close() {},
  };
  const g = new GuardedEngine(inner, { maxInflightPerCreator: 1, failureThreshold: 3, cooldownMs: 1000 }, () => now);
  const q = (query = 'x', creator_id = 'c') => g.ask({ query, creator_id, session_id: 's' });
  for (let i = 0; i < 3; i++) await t.rejects(q(), /HTTP 500/);
  t.equal(g.state, 'open', 'opens after 3 consecutive failures');
  await t.rejects(q(), /circuit open/);
  t.equal(calls, 3, 'an open circuit does not call the engine');
  now += 1000;
  t.equal(g.state, 'half-open');
  await t.rejects(q(), /HTTP 500/);
  t.equal(g.state, 'open', 'a failed probe opens it again');
  now += 1000;
  fail = false;
  t.same(await q('ok'), { response: 'ok', confidence: 1, sources: [] });
  t.equal(g.state, 'closed', 'a good probe closes it');
  const held = q('hold', 'busy');
  await t.rejects(q('more', 'busy'), /saturated for creator/, 'one in flight per creator');
  t.same((await q('other', 'other-creator')).response, 'other', 'other creators are not affected');
  release!();
  await held;
  t.equal(g.state, 'closed', 'saturation does not count against the engine');
});

void t.test('BatchingPort over a real IPC channel: one turn, few IPC messages, order kept both ways', async (t) => {
  const { fork } = await import('node:child_process');
  const { BatchingPort, MAX_BATCH } = await import('../src/cluster/ipc-port.js');
  const child = fork(new URL('./fixtures/batch-echo.ts', import.meta.url).pathname, { execArgv: ['--import', 'tsx'], serialization: 'advanced' });
  t.teardown(() => void child.kill());
  // A send racing the child's exit fails later with EPIPE, as an 'error' event (the primary listens the same way: supervisor.ts).
  child.on('error', () => {});
  let raw = 0;
  child.on('message', () => raw++);
  const port = new BatchingPort<{ t: string; i?: number; payload?: Uint8Array }>({
    send: (m) => child.send(m as never),
    get connected() {
      return child.connected;
    },
    on: (_e, fn) => child.on('message', fn),
  });
  const got: number[] = [];
  let count = -1;
  const up = new Promise<void>((r) => port.on('message', (m) => (m as { t: string }).t === 'up' && r()));
  port.on('message', (m) => {
    const x = m as { t: string; i?: number; raw?: number; payload?: Uint8Array };
    if (x.t === 'n') got.push(x.i!);
    if (x.t === 'count') count = x.raw!;
  });
  await up;
  raw = 0;
  const n = MAX_BATCH * 2 + 5;
  for (let i = 0; i < n; i++) port.send({ t: 'n', i, payload: new Uint8Array([i & 255]) });
  port.send({ t: 'count' });
  while (count < 0) await new Promise((r) => setTimeout(r, 10));
  t.same(got, Array.from({ length: n }, (_, i) => i), 'every message back, in order');
  t.equal(count, 3, `the ${n + 1} messages of one turn crossed as 3 IPC messages (batches of at most ${MAX_BATCH})`);
  t.ok(raw <= 4, `and came back as few (${raw})`);
  child.kill();
  t.equal(port.send({ t: 'n', i: 0 }) || !child.connected, true, 'a send after the other end is gone does not throw');
});

void t.test("a worker's puts of one turn leave as one flat `puts` message, and a message sent between them keeps its place", async (t) => {
  const { BatchingPort } = await import('../src/cluster/ipc-port.js');
  const sent: WorkerToPrimary[] = [];
  const port = new BatchingPort<WorkerToPrimary>({ send: (m) => (sent.push(structuredClone(m) as WorkerToPrimary), true), connected: true, on: () => {} });
  const cluster = new EmbeddedCluster(port);
  cluster.put('s/c/1', 'e1', 1, '{"a":1}', 'm1', undefined, undefined);
  cluster.put('s/c/2', 'e2', 7, '{"b":2}', undefined, 'x', 3);
  cluster.send({ t: 'unfollow', stream: 's/c/1' });
  cluster.put('s/c/2', 'e2', 8, '{"c":3}', undefined, undefined, undefined);
  port.flush();
  t.equal(sent.length, 1, 'one IPC message for the turn');
  const batch = (sent[0] as unknown as { t: string; m: WorkerToPrimary[] }).m;
  t.same(batch.map((m) => m.t), ['puts', 'unfollow', 'puts'], 'the unfollow between the puts keeps its place');
  const frames: unknown[][] = [];
  for (const m of batch) if (m.t === 'puts') eachPut(m.p, (...put) => frames.push(put));
  t.same(frames, [
    ['s/c/1', 'e1', 1, '{"a":1}', 'm1', undefined, undefined],
    ['s/c/2', 'e2', 7, '{"b":2}', undefined, 'x', 3],
    ['s/c/2', 'e2', 8, '{"c":3}', undefined, undefined, undefined],
  ], 'every frame, with its fields, in the order put');
  cluster.put('s/c/3', 'e3', 1, '{}', undefined, undefined, undefined);
  port.flush();
  t.same(sent[1], { t: 'puts', p: ['s/c/3', 'e3', 1, '{}', undefined, undefined, undefined] }, 'a lone put leaves as itself');
  for (let i = 1; i <= 1000; i++) cluster.put('s/c/4', 'e4', i, '{}', undefined, undefined, undefined);
  port.flush();
  const many = (sent[2] as unknown as { m: Array<Extract<WorkerToPrimary, { t: 'puts' }>> }).m;
  t.same(many.map((m) => m.p.length / 7), [512, 488], 'a turn of 1,000 puts: two messages, at most 512 frames each');
});

void t.test('countFds: the descriptors this process holds, as listing /proc/self/fd says, following opens and closes', async (t) => {
  const listed = () => readdirSync('/proc/self/fd').length - 1; // the listing's own descriptor
  const before = await countFds();
  t.ok(Math.abs(before - listed()) <= 1, `${before} counted, ${listed()} listed`);
  const opened = Array.from({ length: 50 }, () => openSync('/dev/null', 'r'));
  const during = await countFds();
  t.ok(during - before >= 49 && during - before <= 51, `50 more descriptors counted (${before} -> ${during})`);
  for (const fd of opened) closeSync(fd);
  t.ok(Math.abs((await countFds()) - before) <= 1, 'and fewer again once they are closed');
});

void t.test('the memory store keeps a frame\'s text exactly, and counts its UTF-8 bytes against HISTORY_MAX_BYTES', async (t) => {
  const texts = ['{"type":"ai_response","content":"d\u00e9j\u00e0 vu \u4f60\u597d \ud83d\ude00","s":"\\ud800"}', '{"type":"message"}'];
  // Kept as strings; with a bound too large for the V8 heap, as UTF-8 copies off the heap.
  for (const maxBytes of [1 << 20, 64 * 2 ** 30]) {
    const store = new MemoryStreamStore({ size: 10, ttlMs: 60_000, maxBytes });
    t.teardown(() => store.close());
    for (const x of texts) store.append('s/x/y', x);
    const epoch = store.read('s/x/y').epoch;
    const { frames } = store.read('s/x/y', { epoch, offset: 0 });
    t.same(frames.map((f) => f.payload), texts, `every character kept exactly (HISTORY_MAX_BYTES ${maxBytes})`);
    t.equal(store.frameAt('s/x/y', { epoch, offset: 1 })?.payload, texts[0], 'frameAt reads the same text');
    t.equal(store.bytes, Buffer.byteLength(texts[0]!) + 18, 'the bound counts the frames\' UTF-8 bytes');
    t.ok(Buffer.byteLength(texts[0]!) > texts[0]!.length, '(more than its characters)');
  }
});

void t.test('the memory store keeps the last HISTORY_SIZE frames of a stream, in order, across many wraps of its ring', async (t) => {
  const store = new MemoryStreamStore({ size: 5, ttlMs: 60_000, maxBytes: 1 << 20 });
  t.teardown(() => store.close());
  const text = (f: { payload: string }) => f.payload;
  for (let n = 1; n <= 23; n++) {
    const { epoch, offset } = store.append('s/c/a', `f${n}`);
    t.equal(offset, n);
    const kept = Math.min(n, 5);
    const { frames, lost } = store.read('s/c/a', { epoch, offset: n - kept });
    t.notOk(lost);
    t.same(frames.map((f) => [f.offset, text(f)]), Array.from({ length: kept }, (_, i) => [n - kept + 1 + i, `f${n - kept + 1 + i}`]), `after ${n} appends: frames ${n - kept + 1}..${n}`);
    if (n > 5) t.ok(store.read('s/c/a', { epoch, offset: n - 6 }).lost, 'the one before them is no longer kept');
    t.equal(store.frameAt('s/c/a', { epoch, offset: n - kept + 1 }) && text(store.frameAt('s/c/a', { epoch, offset: n - kept + 1 })!), `f${n - kept + 1}`, 'frameAt the oldest kept');
    t.equal(store.frameAt('s/c/a', { epoch, offset: n - kept }), undefined, 'and not below it');
    t.equal(store.bytes, Array.from({ length: kept }, (_, i) => `f${n - kept + 1 + i}`.length).reduce((a, b) => a + b), 'bytes: the kept frames\' only');
  }
  const off = new MemoryStreamStore({ size: 0, ttlMs: 60_000, maxBytes: 1 << 20 });
  t.teardown(() => off.close());
  t.equal(off.append('s/c/a', 'x').offset, 1, 'HISTORY_SIZE 0: offsets still given');
  t.equal(off.bytes, 0, 'and nothing kept');
});

void t.test('over HISTORY_MAX_BYTES the memory store drops whole streams, least recently appended first, followed ones last, never the one appended', async (t) => {
  const store = new MemoryStreamStore({ size: 10, ttlMs: 60_000, maxBytes: 100 });
  t.teardown(() => store.close());
  const frame = 'x'.repeat(20);
  const epochs = new Map<string, string>();
  for (const s of ['a', 'b', 'c', 'd']) epochs.set(s, store.append(`s/c/${s}`, frame).epoch);
  store.follow('s/c/a'); // followed: dropped after the others
  store.append('s/c/b', frame); // b appended again: now the most recent but for what comes next
  t.equal(store.bytes, 100, 'at the bound: nothing dropped');
  store.append('s/c/e', frame);
  t.equal(store.evicted, 1, 'one stream dropped');
  const epochOf = (s: string) => store.read(`s/c/${s}`).epoch;
  t.equal(store.bytes, 100, 'its bytes are no longer counted');
  t.not(epochOf('c'), epochs.get('c'), 'c, the least recently appended one nobody follows, went first: it starts again in a new epoch');
  for (const s of ['a', 'b', 'd']) t.equal(epochOf(s), epochs.get(s), `${s} is kept`);
  store.append('s/c/big', 'y'.repeat(70));
  t.equal(store.evicted, 4, 'then b, d and e went, oldest first, until under the bound');
  t.equal(store.bytes, 90);
  t.equal(epochOf('a'), epochs.get('a'), 'the followed stream stays while the others are enough');
  store.append('s/c/big', 'y'.repeat(70));
  t.equal(store.read('s/c/big').top, 2, 'the one just appended stays, even over the bound alone');
  t.not(epochOf('a'), epochs.get('a'), 'then the followed one too');
});

void t.test("FastHistogram exports what prom-client's Histogram does, per worker and summed over workers", async (t) => {
  const bounds = [0.005, 0.01, 0.1, 1];
  const workers = [
    [0.001, 0.005, 0.0051, 0.2, 3, 1],
    [0.01, 0.5, 7],
  ];
  const fast: Registry[] = [];
  const slow: Registry[] = [];
  for (const obs of workers) {
    const rf = new Registry();
    const rs = new Registry();
    const f = new FastHistogram(rf, 'x_seconds', 'help text', bounds);
    const h = new Histogram({ name: 'x_seconds', help: 'help text', buckets: bounds, registers: [rs] });
    for (const v of obs) {
      f.observe(v);
      h.observe(v);
    }
    t.equal(await rf.metrics(), await rs.metrics(), `one worker: the same text (${obs.length} observations)`);
    fast.push(rf);
    slow.push(rs);
  }
  const sum = async (rs: Registry[]) => AggregatorRegistry.aggregate(await Promise.all(rs.map((r) => r.getMetricsAsJSON())) as never).metrics();
  const summed = await sum(fast);
  t.equal(summed, await sum(slow), 'summed over workers as the primary does: the same text');
  t.match(summed, /x_seconds_bucket\{le="0.01"\} 4\n/, 'buckets are cumulative: 0.001, 0.005 and 0.0051 of one worker, 0.01 of the other');
  t.match(summed, /x_seconds_count 9/);
  const f = new FastHistogram(new Registry(), 'y', 'h', bounds);
  f.observe(0.2);
  f.reset();
  t.match(f.get().values.at(-1), { metricName: 'y_count', value: 0 }, 'reset empties it');
});

void t.test('ai_response as text is JSON.stringify of its object, byte for byte', async (t) => {
  const answers: Array<[Answer, string | undefined]> = [
    [{ response: 'hello', confidence: 1, sources: [] }, undefined],
    [{ response: 'quote " backslash \\ newline \n tab \t \u0001 é 😀 lone \ud800', confidence: 0.875, sources: [{ url: 'https://x/"y"', n: 1 }, 'z', null] }, 'c-1'],
    [{ response: '', confidence: -0, sources: [], messageId: newMessageId(), cancelled: true }, undefined],
    [{ response: 'x', confidence: 1e21, sources: [[1, [2]]], messageId: newMessageId(), cancelled: true }, 'q "2"'],
    [{ response: 'y', confidence: 0.1 + 0.2, sources: [], cancelled: false }, ''],
    [{ response: 'not finite', confidence: Number.NaN, sources: [] }, undefined],
    [{ response: 'not finite', confidence: -Infinity, sources: [undefined, () => 1] }, undefined],
  ];
  for (const [a, cmid] of answers) {
    const text = aiResponse(a, cmid);
    const o = JSON.parse(text) as { timestamp: string; message_id: string };
    t.equal(text, JSON.stringify({ ...aiResponseObject(a, cmid), timestamp: o.timestamp, message_id: o.message_id }));
    if (a.messageId === undefined) t.match(o.message_id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/, 'a new UUID');
    else t.equal(o.message_id, a.messageId);
  }
});

void t.test('connection_status as text is JSON.stringify of its object, byte for byte', async (t) => {
  for (const [session, conn] of [
    ['s-1', '0b8f9c1e-7d7a-4c3e-9a55-3f1c2b6d8e90'],
    ['a.b:c_d-E', 'x'],
  ] as const) {
    const text = connectionStatus(session, conn);
    const o = JSON.parse(text) as { timestamp: string };
    t.equal(text, JSON.stringify({ ...connectionStatusObject(session, conn), timestamp: o.timestamp }));
    t.match(o.timestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  }
});

void t.test('widget.v2: an answer the session stream cannot take goes to its socket alone, without an offset, counted (a store that throws at once, or rejects later)', async (t) => {
  for (const [how, append] of [
    ['throws', (): never => {
      throw new Error('lease lost');
    }],
    ['rejects', (): Promise<never> => Promise.reject(new Error('store down'))],
  ] as const) {
    const metrics = new Metrics({ connections: () => 0, bus: () => undefined, poolQueued: () => 0, limits: () => undefined });
    const env: ConnEnv = { backpressure: { soft: 1 << 20, hard: 1 << 21, checkEvery: 1 << 16 }, metrics, log: createLogger('silent'), streams: { store: { append } } as unknown as StreamHub };
    const conn = new Conn('c1', 's1', 'k1', env, '127.0.0.1');
    conn.v2 = true;
    const sent: string[] = [];
    conn.ws = { send: (f: string) => (sent.push(f), 1), getBufferedAmount: () => 0, cork: (fn: () => void) => fn() } as unknown as Conn['ws'];
    await conn.answer({ response: 'hi', confidence: 1, sources: [], messageId: newMessageId() });
    t.equal(sent.length, 1, `${how}: the answer went to the socket`);
    t.match(JSON.parse(sent[0]!), { type: 'ai_response', content: 'hi' }, `${how}: the whole answer`);
    t.notOk('offset' in JSON.parse(sent[0]!), `${how}: without an offset`);
    t.equal((await metrics.historyFailures.get()).values[0]?.value, 1, `${how}: counted`);
  }
});

void t.test('SocketSet: a refused socket counts for 16 s, second by second, then leaves the count', async (t) => {
  let now = 5_000_500;
  const s = new SocketSet({ now: () => now });
  t.equal(s.refused, 0);
  s.noteRefused();
  s.noteRefused();
  now += 1000;
  s.noteRefused();
  t.equal(s.refused, 3);
  t.equal(s.held, 3, 'they hold descriptors');
  now += 14_499;
  t.equal(s.refused, 3, 'the first two still count to the end of their 16th second');
  now += 1;
  t.equal(s.refused, 1, 'then they leave; the third is a second younger');
  now += 1000;
  t.equal(s.refused, 0);
  s.noteRefused();
  now += 60_000;
  t.equal(s.refused, 0, 'after a long quiet spell, none');
  s.noteRefused();
  t.equal(s.refused, 1, 'and counting starts again');
});

void t.test('Metrics: the gateway\'s event-loop lag gauge reads the p99 of prom-client\'s monitor, since the last scrape', async (t) => {
  const metrics = new Metrics({ connections: () => 0, bus: () => undefined, poolQueued: () => 0, limits: () => undefined });
  t.teardown(() => metrics.close());
  const lag = async (): Promise<{ ours: number; theirs: number }> => {
    const all = await metrics.registry.getMetricsAsJSON();
    const value = (name: string) => Number(all.find((m) => m.name === name)?.values[0]?.value);
    return { ours: value('gateway_event_loop_lag_p99_seconds'), theirs: value('nodejs_eventloop_lag_p99_seconds') };
  };
  await lag(); // starts a fresh window
  await sleep(100);
  const stall = Date.now() + 120;
  while (Date.now() < stall); // the loop blocked for 120 ms
  await sleep(100);
  const after = await lag();
  t.ok(after.ours >= 0.08, `a 120 ms stall is seen (${after.ours} s)`);
  t.equal(after.ours, after.theirs, 'the same figure as prom-client\'s');
  await sleep(200);
  t.ok((await lag()).ours < 0.08, 'and is gone from the next scrape\'s window');
});
