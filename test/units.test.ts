/** Small pure parts: validation, rate limiting, the relay, back-off, the uWS loader. */
import t from 'tap';
import { decodeFrame, validateMessage } from '../src/pipeline/validate.js';
import { TokenBucketLimiter } from '../src/pipeline/rate-limit.js';
import { Relay, type RelayTarget } from '../src/primary/relay.js';
import { backoffMs } from '../src/primary/supervisor.js';
import { loadUws, UwsLoadError, CANDIDATES } from '../src/uws/loader.js';
import { ERRORS } from '../src/protocol/frames.js';
import type { PrimaryToWorker } from '../src/primary/ipc.js';

const enc = (s: string) => new TextEncoder().encode(s);

t.test('decodeFrame', async (t) => {
  t.same(decodeFrame(enc('{"type":"ping"}'), false), { ok: true, msg: { type: 'ping' } });
  t.same(decodeFrame(enc('{"type":"user_message","content":" hi "}'), false), { ok: true, msg: { type: 'user_message', content: 'hi' } });
  t.same(decodeFrame(new Uint8Array([0xff, 0xfe]), true), { ok: false, error: ERRORS.INVALID_JSON });
  t.same(decodeFrame(enc('{'), false), { ok: false, error: ERRORS.INVALID_JSON });
  t.same(validateMessage({ type: 'user_message', content: null }), { ok: false, error: ERRORS.EMPTY });
  t.same(validateMessage({ type: 'x'.repeat(100) }).ok, false);
});

t.test('TokenBucketLimiter', async (t) => {
  let now = 0;
  const l = new TokenBucketLimiter(3, 3, () => now);
  t.teardown(() => l.close());
  t.same([l.take('a'), l.take('a'), l.take('a'), l.take('a')], [true, true, true, false], 'a burst of capacity, then refused');
  t.ok(l.take('b'), 'keys are independent');
  now += 999;
  t.notOk(l.take('a'), 'not yet refilled');
  now += 1;
  t.ok(l.take('a'), 'one token per window/capacity');
  now += 60_000;
  t.same([l.take('a'), l.take('a'), l.take('a'), l.take('a')], [true, true, true, false], 'refills to capacity, no more');
  t.equal(l.size, 2);
});

t.test('Relay forwards to interested workers, never back to the publisher', async (t) => {
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

t.test('respawn back-off grows and is capped', async (t) => {
  t.same([0, 1, 2, 3, 8, 20].map(backoffMs), [0, 250, 500, 1000, 30000, 30000]);
});

t.test('uWS loader', async (t) => {
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

t.test('GuardedEngine: circuit breaker and per-creator bound', async (t) => {
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
