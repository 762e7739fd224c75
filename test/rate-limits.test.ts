/**
 * Session and creator budgets: their answers, recovery after the window,
 * and one budget per session (and per creator) across the workers of a
 * host (embedded mode: the primary's store) and across hosts (Redis), with
 * the overshoot bound of limits/sync.ts.
 */
import t, { type Test } from 'tap';
import { randomBytes } from 'node:crypto';
import { Redis } from 'ioredis';
import { startGateway } from './helpers/gateway.js';
import { startCluster, type RunningCluster } from './helpers/cluster.js';
import { Client, connectWidget, widgetUrl } from './helpers/client.js';
import { widgetToken } from './helpers/tokens.js';
import { startRedis } from './helpers/redis.js';
import { sleep, until } from './helpers/net.js';
import { ERRORS } from '../src/protocol/frames.js';
import { CLOSE } from '../src/protocol/close-codes.js';
import { MAX_HELD_FRAMES } from '../src/gateway/sockets.js';
import { MemoryRateStore, type RateStore } from '../src/limits/store.js';

/** What a burst of user messages got. */
interface Tally {
  ok: number;
  session: number;
  creator: number;
}

/** Sends `n` user messages at once and reads their `n` answers (an ai_response or an error frame each). */
async function burst(c: Client, n: number): Promise<Tally> {
  for (let i = 0; i < n; i++) c.send({ type: 'user_message', content: `m${i}` });
  const tally: Tally = { ok: 0, session: 0, creator: 0 };
  for (let got = 0; got < n; ) {
    const f = await c.next((x) => x.type === 'ai_response' || x.type === 'error');
    got++;
    if (f.type === 'ai_response') tally.ok++;
    else if (f.error === ERRORS.RATE_LIMITED) tally.session++;
    else if (f.error === ERRORS.AI_BUDGET) tally.creator++;
    else throw new Error(`unexpected error frame: ${String(f.error)}`);
  }
  return tally;
}

const tab = (host: { port: number }, creator: string, session: string) => connectWidget(host.port, creator, widgetToken(creator), session);

void t.test('one process: each limit answers with its documented error, and recovers after its window', async (t) => {
  const g = await startGateway({ RATE_LIMIT_MESSAGES: '2', RATE_LIMIT_WINDOW_S: '1', AI_BUDGET_PER_MINUTE: '3' });
  t.teardown(() => g.close());

  await t.test('session: "Rate limit exceeded" over the limit, one message back every window/limit', async (t) => {
    const c = await tab(g, 'alice', 'recover');
    t.same(await burst(c, 3), { ok: 2, session: 1, creator: 0 });
    const emptied = Date.now();
    await sleep(600); // one token per 500 ms
    const r = await burst(c, 2);
    // Bounds from the time that really passed (a stalled machine gives more back, never fewer or more than earned).
    const earned = Math.min(2, Math.floor((Date.now() - emptied) / 500));
    t.ok(r.ok >= 1 && r.ok <= earned && r.ok + r.session === 2 && r.creator === 0, `after ${Date.now() - emptied} ms, ${r.ok} of 2 admitted (earned: 1 to ${earned})`);
    c.close();
  });

  await t.test('creator: "AI request budget exceeded" once the creator has used its budget, whatever the session', async (t) => {
    const a = await tab(g, 'shop', 's1');
    const b = await tab(g, 'shop', 's2');
    t.same(await burst(a, 2), { ok: 2, session: 0, creator: 0 });
    t.same(await burst(b, 2), { ok: 1, session: 0, creator: 1 }, 'the third AI request of the minute is refused');
    const other = await tab(g, 'other-shop', 's1');
    t.same(await burst(other, 1), { ok: 1, session: 0, creator: 0 }, 'other creators are not affected');
    const m = await fetch(`http://127.0.0.1:${g.port}/metrics`).then((r) => r.text());
    t.match(m, /gateway_rate_limited_total\{limit="creator"\} 1/);
    t.match(m, /gateway_rate_limited_total\{limit="session"\} 2/);
    for (const c of [a, b, other]) c.close();
  });
});

/** Opens tabs of one session until the host's workers all hold one (SO_REUSEPORT picks the worker). */
async function tabsOnEveryWorker(t: Test, host: RunningCluster, creator: string, session: string): Promise<Client[]> {
  const tabs: Client[] = [];
  for (let i = 0; i < 32; i++) {
    tabs.push(await tab(host, creator, session));
    const byWorker = (await host.get('/api/v1/stats')).body.connections_by_worker as Record<string, number>;
    if (tabs.length >= 4 && Object.keys(byWorker).length === 2 && Object.values(byWorker).every((n) => n > 0)) return tabs;
  }
  t.fail('32 sockets all landed on one worker');
  return tabs;
}

void t.test('embedded cluster (2 workers, no Redis): a session has one budget on every worker of the host', async (t) => {
  const host = await startCluster({ RATE_LIMIT_MESSAGES: '4', RATE_LIMIT_WINDOW_S: '60' });
  t.teardown(() => host.stop('SIGKILL'));
  const tabs = await tabsOnEveryWorker(t, host, 'alice', 'two-workers');
  t.same(await burst(tabs[0]!, 4), { ok: 4, session: 0, creator: 0 }, 'the first tab spends the budget');
  await sleep(400); // a few RATE_LIMIT_SYNC_MS periods
  let refused = 0;
  for (const c of tabs.slice(1)) refused += (await burst(c, 1)).session;
  t.equal(refused, tabs.length - 1, `every other tab, on both workers, is refused (${tabs.length - 1} tabs)`);
  for (const c of tabs) c.close();
  await Promise.all(tabs.map((c) => c.closed));
  const again = await tabsOnEveryWorker(t, host, 'alice', 'two-workers');
  refused = 0;
  for (const c of again) refused += (await burst(c, 1)).session;
  t.equal(refused, again.length, 'reconnecting, to either worker, does not reset the budget');
  for (const c of again) c.close();
  await Promise.all(again.map((c) => c.closed));

  // The budgets live in the primary: workers that crash take nothing with them.
  const pids = Object.keys((await host.get('/api/v1/stats')).body.connections_by_worker as Record<string, number>).map(Number);
  for (const pid of pids) process.kill(pid, 'SIGKILL');
  await until(async () => {
    const s = (await host.get('/api/v1/stats')).body;
    return (await host.get('/readyz')).status === 200 && Object.keys(s.connections_by_worker).every((p) => !pids.includes(Number(p)));
  }, 20_000, 'both workers replaced').catch((err) => {
    t.comment(host.output().split('\n').slice(-15).join('\n'));
    throw err;
  });
  const after = await tabsOnEveryWorker(t, host, 'alice', 'two-workers');
  refused = 0;
  for (const c of after) refused += (await burst(c, 1)).session;
  t.equal(refused, after.length, 'after kill -9 of both workers, the replacements still refuse the session');
  for (const c of after) c.close();
});

void t.test('Redis, two hosts: one budget per session and per creator across hosts', async (t) => {
  const redis = await startRedis();
  const prefix = `t${randomBytes(3).toString('hex')}:`;
  const env = { REDIS_URL: redis.url, REDIS_PREFIX: prefix, WORKERS: '1', RATE_LIMIT_MESSAGES: '5', RATE_LIMIT_WINDOW_S: '6', AI_BUDGET_PER_MINUTE: '12' };
  const [A, B] = await Promise.all([startCluster(env), startCluster(env)]);
  t.teardown(async () => {
    await Promise.all([A.stop('SIGKILL'), B.stop('SIGKILL')]);
    await redis.stop();
  });

  await t.test('a second tab on the other host shares the budget; reconnecting does not reset it', async (t) => {
    const a = await tab(A, 'c1', 'shared');
    const b = await tab(B, 'c1', 'shared');
    t.same(await burst(a, 5), { ok: 5, session: 0, creator: 0 });
    await sleep(300);
    t.same(await burst(b, 2), { ok: 0, session: 2, creator: 0 }, 'the tab on host B has nothing left');
    a.close();
    b.close();
    await Promise.all([a.closed, b.closed]);
    for (const host of [A, B]) {
      const c = await tab(host, 'c1', 'shared');
      t.same(await burst(c, 1), { ok: 0, session: 1, creator: 0 }, `a new socket on host ${host === A ? 'A' : 'B'} still has nothing`);
      c.close();
    }
  });

  await t.test('limits recover after the window', async (t) => {
    const a = await tab(A, 'c2', 'recover');
    t.same(await burst(a, 5), { ok: 5, session: 0, creator: 0 });
    const emptied = Date.now();
    await sleep(1400); // 6 s / 5 = one token per 1.2 s
    const b = await tab(B, 'c2', 'recover');
    const r = await burst(b, 2);
    const earned = Math.min(2, Math.floor((Date.now() - emptied) / 1200));
    t.ok(r.ok >= 1 && r.ok <= earned && r.ok + r.session === 2, `on the other host after ${Date.now() - emptied} ms: ${r.ok} of 2 admitted (earned: 1 to ${earned})`);
    a.close();
    b.close();
  });

  await t.test('overshoot: tabs on 2 hosts bursting at the same moment get at most limit + (2 - 1) x limit, and the excess is paid back', async (t) => {
    const a = await tab(A, 'c3', 'race');
    const b = await tab(B, 'c3', 'race');
    const t0 = Date.now();
    const [ta, tb] = await Promise.all([burst(a, 10), burst(b, 10)]);
    const ok = ta.ok + tb.ok;
    t.ok(ok >= 5 && ok <= 10, `admitted ${ok} of 20 (budget 5, bound 10)`);
    await sleep(300);
    t.same(await burst(a, 1), { ok: 0, session: 1, creator: 0 });
    // Every admitted message was charged. One token comes back per 1.2 s, and
    // after 5 takes the bucket is full again 6 s later; each take beyond the
    // budget delays that by 1.2 s. So 6.5 s after the burst (0.5 s from either
    // edge), B gets all 5 if nothing was overshot, one fewer per extra take.
    await sleep(6500 - (Date.now() - t0));
    const owed = Math.min(5, 10 - ok);
    t.same(await burst(b, 5), { ok: owed, session: 5 - owed, creator: 0 }, `6.5 s later: ${owed} of 5 (the ${ok - 5} extra are being paid back)`);
    a.close();
    b.close();
  });

  await t.test('Redis down: each worker limits on its own, and reports the takes when Redis returns', async (t) => {
    await redis.kill();
    const a = await tab(A, 'c4', 'offline'); // the upgrade does not wait for an unreachable store
    t.same(await burst(a, 7), { ok: 5, session: 2, creator: 0 }, "still limited, on host A's own bucket");
    const spent = Date.now();
    await sleep(300);
    const m = await fetch(`http://127.0.0.1:${A.port}/metrics`).then((r) => r.text());
    t.match(m, /gateway_rate_limit_sync_failures_total [1-9]/, 'the failed reports are counted');
    await redis.restart(); // empty: no persistence
    await sleep(2500); // ioredis reconnects with back-off (at most 2 s), then the next report
    const b = await tab(B, 'c4', 'offline');
    // A's 5 takes emptied the bucket; since then one token per 1.2 s came back.
    const back = Math.floor((Date.now() - spent) / 1200) + 1;
    const got = await burst(b, 5);
    t.ok(got.ok <= back && got.session >= 5 - back, `host B gets ${got.ok} of 5: only what came back since (at most ${back}), not a fresh budget`);
    a.close();
    b.close();
  });

  await t.test('the creator budget is shared by every session on every host', async (t) => {
    const x = await tab(A, 'shop', 'x');
    const y = await tab(B, 'shop', 'y');
    t.same(await burst(x, 5), { ok: 5, session: 0, creator: 0 });
    await sleep(300);
    t.same(await burst(y, 5), { ok: 5, session: 0, creator: 0 });
    await sleep(300);
    const z = await tab(A, 'shop', 'z');
    t.same(await burst(z, 3), { ok: 2, session: 0, creator: 1 }, '12 AI requests per minute for the creator, across both hosts');
    const w = await tab(B, 'shop', 'w');
    await sleep(300);
    t.same(await burst(w, 1), { ok: 0, session: 0, creator: 1 });
    for (const c of [x, y, z, w]) c.close();
  });
});

void t.test('start-up window: right after two hosts start on one Redis, sessions are limited exactly at the budget', async (t) => {
  // A 60 s window: no token comes back during the test, so any message
  // admitted beyond the budget would be a lost take, not a refill.
  const redis = await startRedis();
  const prefix = `w${randomBytes(3).toString('hex')}:`;
  const env = { REDIS_URL: redis.url, REDIS_PREFIX: prefix, WORKERS: '2', RATE_LIMIT_MESSAGES: '5', RATE_LIMIT_WINDOW_S: '60' };
  const [A, B] = await Promise.all([startCluster(env), startCluster(env)]);
  const store = new Redis(redis.url, { lazyConnect: false });
  t.teardown(async () => {
    store.disconnect();
    await Promise.all([A.stop('SIGKILL'), B.stop('SIGKILL')]);
    await redis.stop();
  });
  /** One message at a time, each answer awaited: 'ok' or the error. */
  const oneByOne = async (c: Client, n: number) => {
    const out: string[] = [];
    for (let i = 0; i < n; i++) {
      c.send({ type: 'user_message', content: `m${i}` });
      const f = await c.next((x) => x.type === 'ai_response' || x.type === 'error');
      out.push(f.type === 'ai_response' ? 'ok' : String(f.error));
    }
    return out;
  };
  /** Takes the store has charged for a session: its TAT is 12 s (60 s / 5) ahead per take, less the seconds since. */
  const charged = async (creator: string, session: string) => {
    const [tat, [s, us]] = await Promise.all([store.get(`${prefix}rl:session:${creator}\u0000${session}`), store.time()]);
    return tat === null ? 0 : Math.ceil((Number(tat) - (Number(s) * 1e6 + Number(us))) / 12e6);
  };
  const R = ERRORS.RATE_LIMITED;
  /**
   * 24 sessions at once, each: 3 messages on one host, then (a reload, a
   * network switch) on the other host for 4 more; `settled` waits for the
   * first host's report before the move.
   */
  const moves = (name: string, settled: boolean) =>
    Promise.all(
      Array.from({ length: 24 }, async (_, i) => {
        const [first, second] = i % 2 ? [A, B] : [B, A];
        const creator = `start${i % 3}`;
        const session = `${name}-${i}`;
        const a = await tab(first, creator, session);
        const got = await oneByOne(a, 3);
        a.close();
        await a.closed;
        if (settled) await until(async () => (await charged(creator, session)) >= 3, 5000, 'the first host\'s report');
        const b = await tab(second, creator, session);
        got.push(...(await oneByOne(b, 4)));
        b.close();
        await b.closed;
        return { creator, session, got };
      }),
    );
  // Once the first host's takes are in the store, the second starts from them: exact.
  const settled = await moves('settled', true);
  t.same(settled.filter((r) => r.got.join() !== ['ok', 'ok', 'ok', 'ok', 'ok', R, R].join()), [], 'every session: exactly 5 admitted, then "Rate limit exceeded", across the move between hosts');
  // A move faster than the first host's report (the socket closed while its
  // takes were on their way): the second host learns of them when they land
  // (limits/sync.ts), so at most those 3 are admitted again, and nothing is
  // lost: the store ends up charged once per admitted message.
  const raced = await moves('raced', false);
  await sleep(500); // the last reports
  for (const r of raced) {
    const admitted = r.got.filter((x) => x === 'ok').length;
    const refusedFrom = r.got.indexOf(R);
    const ok = admitted >= 5 && admitted <= 8 && (refusedFrom === -1 || r.got.slice(refusedFrom).every((x) => x === R)) && (await charged(r.creator, r.session)) === admitted;
    if (!ok) t.fail(`${r.session}: ${r.got.join()}; charged ${await charged(r.creator, r.session)}`);
  }
  t.pass('a move that beats the report: 5 to 8 admitted, each charged once');
  // And one socket, one message at a time, on each host.
  for (const host of [A, B]) {
    const c = await tab(host, 'single', `one-${host.port}`);
    t.same(await oneByOne(c, 7), ['ok', 'ok', 'ok', 'ok', 'ok', R, R], `one socket on host ${host === A ? 'A' : 'B'}: refused exactly at the 6th`);
    c.close();
  }
});

void t.test('a socket whose session budget is still being fetched opens at once and holds its frames', async (t) => {
  // The store answers after 150 ms (a slow Redis): the socket is upgraded at
  // once (never later: uWS.js v20.30 can drop a socket upgraded after an
  // await), sends nothing until the budget is in, and handles what the
  // client sent meanwhile in order.
  const store = new MemoryRateStore();
  const slow: RateStore = {
    charge: async (b) => {
      await sleep(150);
      return store.charge(b);
    },
    onUpdate: (l) => store.onUpdate(l),
    close: () => store.close(),
  };
  const g = await startGateway({ RATE_LIMIT_MESSAGES: '5', RATE_LIMIT_WINDOW_S: '60' }, undefined, slow);
  t.teardown(() => g.close());
  const early = new Client(widgetUrl(g.port, 'held', widgetToken('held'), 'held-1'));
  early.ws.once('open', () => ['a', 'b', 'c'].forEach((content) => early.send({ type: 'user_message', content })));
  const first = await early.next((f) => f.type !== 'typing_indicator');
  t.equal(first.type, 'connection_status', 'connection_status comes first, after the budget');
  const answers = [];
  for (let i = 0; i < 3; i++) answers.push(await early.next((f) => f.type === 'ai_response' || f.type === 'error'));
  t.same(answers.map((f) => f.type), ['ai_response', 'ai_response', 'ai_response'], 'the 3 frames sent before it, each answered, in order');
  early.close();

  const flood = new Client(widgetUrl(g.port, 'held', widgetToken('held'), 'held-2'));
  flood.ws.once('open', () => {
    for (let i = 0; i < MAX_HELD_FRAMES + 1; i++) flood.send({ type: 'ping' });
  });
  const closed = await flood.closed;
  t.equal(closed.code, CLOSE.FRAME_RATE.code, `more than ${MAX_HELD_FRAMES} frames before connection_status: 4008`);
  t.notOk(flood.inbox.some((f) => f.type === 'connection_status'), 'and nothing was sent to it');
  await until(() => g.gw.sockets.pending === 0 && g.gw.sockets.all.size === 0, 3000, 'sockets gone');
  t.pass('no socket left counted as pending or open');
});
