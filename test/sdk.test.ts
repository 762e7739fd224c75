/**
 * The widget SDK (src/sdk/) without a browser: its close-code policy agrees
 * with the gateway's table, its back-off, and the client itself (the same
 * code the bundle holds, given the `ws` package as its WebSocket) against
 * real gateways: resume and dedupe, the offline queue answered once, token
 * refresh on 4001, no loop on 4003, a dead link noticed by the heartbeat,
 * and 200 clients spreading their reconnects after a rolling restart.
 */
import t from 'tap';
import net from 'node:net';
import { gzipSync } from 'node:zlib';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import WebSocket from 'ws';
import { CLOSE } from '../src/protocol/close-codes.js';
import { backoff, policyOf, POLICY } from '../src/sdk/policy.js';
import { createWidgetClient, type WidgetClient, type WidgetEvents, type WsCtor } from '../src/sdk/client.js';
import { startGateway } from './helpers/gateway.js';
import { startCluster, ROOT } from './helpers/cluster.js';
import { serviceToken, signWith, SECRET, widgetToken } from './helpers/tokens.js';
import { freePort, sleep, until } from './helpers/net.js';

const Ws = WebSocket as unknown as WsCtor;

void t.test('the SDK\'s close-code policy is the gateway\'s table', async (t) => {
  const letter = { soon: 's', backoff: 'b', token: 't', stop: 'x', none: 'n' } as const;
  for (const c of Object.values(CLOSE)) t.equal(policyOf(c.code), letter[c.client], `${c.code} ${c.reason}: ${c.client}`);
  for (const code of Object.keys(POLICY).map(Number)) t.ok(Object.values(CLOSE).some((c) => c.code === code), `${code} is in the table`);
});

void t.test('full-jitter back-off: within [0, min(cap, base x 2^attempt)), capped', async (t) => {
  t.equal(backoff(0, 500, 30_000, () => 0.999), 499);
  t.equal(backoff(3, 500, 30_000, () => 0.5), 2000);
  t.equal(backoff(20, 500, 30_000, () => 0.999), 29_970, 'capped at 30 s');
  t.equal(backoff(5, 500, 30_000, () => 0), 0, 'full jitter reaches 0');
});

void t.test('the bundle: at most 6 KiB minified and gzipped, a global and an ES module', async (t) => {
  const iife = readFileSync(path.join(ROOT, 'dist/sdk/widget.js'));
  const esm = readFileSync(path.join(ROOT, 'dist/sdk/widget.mjs'));
  const gz = gzipSync(iife, { level: 9 }).length;
  t.ok(gz <= 6 * 1024, `widget.js is ${iife.length} bytes, ${gz} gzipped`);
  t.match(iife.toString(), /^(?:"use strict";)?var ChannelWidget=/, 'a <script> tag defines ChannelWidget');
  t.match(esm.toString(), /export\{/, 'an ES module');
  t.ok(readFileSync(path.join(ROOT, 'dist/sdk/types/index.d.ts'), 'utf8').includes('createWidgetClient'), 'with typings');
});

/** Records a client's events. */
function watch(c: WidgetClient) {
  const e = { status: [] as Array<WidgetEvents['status']>, answers: [] as Array<Record<string, unknown>>, broadcasts: [] as unknown[], lost: [] as unknown[], errors: [] as unknown[] };
  c.on('status', (s) => e.status.push(s));
  c.on('answer', (a) => e.answers.push(a));
  c.on('broadcast', (b) => e.broadcasts.push(b));
  c.on('continuity_lost', (l) => e.lost.push(l));
  c.on('error', (x) => e.errors.push(x));
  return e;
}

void t.test('against a gateway: the token never in the URL; send and answer; resume after a cut; the queue answered once', async (t) => {
  const g = await startGateway({ RATE_LIMIT_MESSAGES: '100000' });
  t.teardown(() => g.close());
  const urls: string[] = [];
  class Spy extends WebSocket {
    constructor(url: string, protocols: string[]) {
      urls.push(url);
      super(url, protocols);
    }
  }
  const c = createWidgetClient({ url: `ws://127.0.0.1:${g.port}`, creatorId: 'sdk', token: widgetToken('sdk'), WebSocket: Spy as unknown as WsCtor });
  const e = watch(c);
  await until(() => c.status === 'open', 3000, 'open');
  t.equal(c.protocol, 'widget.v2');
  t.notMatch(urls[0], /token|eyJ/, 'no token in the URL');
  c.send('hello');
  await until(() => e.answers.length === 1, 3000, 'the answer');
  t.match(e.answers[0], { content: 'hello', offset: 1 });

  // Cut the link under it; meanwhile a broadcast; the client resumes by itself.
  const post = (body: unknown) => fetch(`http://127.0.0.1:${g.port}/api/v1/creators/sdk/broadcast`, { method: 'POST', headers: { authorization: `Bearer ${serviceToken()}` }, body: JSON.stringify(body) });
  for (const s of g.gw.sockets.byCreator.get('sdk') ?? []) s.close(); // no close frame: 1006 for the client
  await post({ n: 1 });
  c.send('while away'); // queued: sent after the reconnect
  await until(() => e.broadcasts.length === 1 && e.answers.length === 2, 5000, 'the broadcast and the queued answer after the resume');
  t.same(e.broadcasts, [{ n: 1 }]);
  t.ok(e.status.some((s) => s.status === 'reconnecting'), 'it reconnected');
  t.match(urls.at(-1), /resume_session=[0-9a-f]+%3A\d+&resume_broadcast=[0-9a-f]+%3A0|resume_session=.*resume_broadcast=/, 'with its positions');
  t.match(urls.at(-1), /&replay=batch$/, 'asking for the replay in `replay` frames (the broadcast came in one, and was seen)');
  await sleep(200);
  t.equal(e.answers.length, 2, 'each answered once');
  c.close();
  t.equal(c.status, 'closed');
});

void t.test('4003 stops without a reconnect loop; 4001 with a working getToken is back in once', async (t) => {
  const g = await startGateway();
  t.teardown(() => g.close());
  const bad = createWidgetClient({ url: `ws://127.0.0.1:${g.port}`, creatorId: 'x', token: signWith('another-secret-0123456789', { creator_id: 'x' }), WebSocket: Ws });
  const eb = watch(bad);
  await until(() => bad.status === 'closed', 3000, 'closed');
  await sleep(500);
  t.same(eb.status.at(-1), { status: 'closed', code: 4003, reason: 'Invalid or unauthorized token' });
  t.equal(eb.status.filter((s) => s.status === 'connecting' || s.status === 'reconnecting').length, 1, 'one attempt, no loop');

  let calls = 0;
  const expired = signWith(SECRET, { creator_id: 'x', exp: Math.floor(Date.now() / 1000) - 60 });
  const good = createWidgetClient({ url: `ws://127.0.0.1:${g.port}`, creatorId: 'x', WebSocket: Ws, getToken: () => (calls++ === 0 ? expired : widgetToken('x')) });
  const eg = watch(good);
  await until(() => good.status === 'open', 3000, 'open with the refreshed token');
  t.ok(eg.status.some((s) => s.code === 4001 && s.reason === 'Token expired'), 'after a 4001 "Token expired"');
  t.equal(calls, 2, 'getToken called again, once');
  good.close();
});

void t.test('a dead link is noticed by the heartbeat: close, reconnect', async (t) => {
  const g = await startGateway();
  t.teardown(() => g.close());
  // A TCP proxy that can freeze: the socket stays open but nothing passes (a dead NAT, a sleeping laptop).
  let frozen = false;
  const proxy = net.createServer((inbound) => {
    const out = net.connect(g.port, '127.0.0.1');
    inbound.on('data', (d) => !frozen && out.write(d));
    out.on('data', (d) => !frozen && inbound.write(d));
    inbound.on('error', () => out.destroy());
    out.on('error', () => inbound.destroy());
    inbound.on('close', () => out.destroy());
  });
  const port = await freePort();
  await new Promise<void>((r) => proxy.listen(port, '127.0.0.1', r));
  t.teardown(() => proxy.close());
  const c = createWidgetClient({ url: `ws://127.0.0.1:${port}`, creatorId: 'hb', token: widgetToken('hb'), WebSocket: Ws, heartbeatMs: 200, pongTimeoutMs: 300, connectTimeoutMs: 500, soonMs: 10 });
  const e = watch(c);
  await until(() => c.status === 'open', 3000, 'open');
  frozen = true;
  await until(() => e.status.some((s) => s.status === 'reconnecting' && s.reason === 'heartbeat timed out'), 3000, 'the heartbeat notices');
  frozen = false;
  await until(() => c.status === 'open', 5000, 'back');
  t.pass('reconnected after the heartbeat timed out');
  c.close();
});

void t.test('200 SDK clients after a rolling restart: reconnects spread over the jitter window, none gives up', async (t) => {
  const g = await startCluster({ MAX_CONNECTIONS_PER_IP: '0' });
  t.teardown(() => g.stop('SIGKILL'));
  const reconnectedAt: number[] = [];
  const clients = Array.from({ length: 200 }, () => {
    const c = createWidgetClient({ url: `ws://127.0.0.1:${g.port}`, creatorId: 'many', token: widgetToken('many'), WebSocket: Ws, soonMs: 1000 });
    let opened = 0;
    c.on('status', (s) => {
      if (s.status === 'open' && opened++ > 0) reconnectedAt.push(Date.now());
    });
    return c;
  });
  await until(() => clients.every((c) => c.status === 'open'), 15_000, 'all open');
  const sighup = Date.now();
  g.proc.kill('SIGHUP');
  await until(() => /rolling restart done/.test(g.output()), 30_000, 'the restart');
  await until(() => clients.every((c) => c.status === 'open'), 15_000, 'all open again').catch(() => {});
  t.equal(clients.filter((c) => c.status === 'closed').length, 0, 'none gave up');
  t.equal(clients.filter((c) => c.status !== 'open').length, 0, 'all connected again');
  // Each worker's clients are closed over 3 s (1012) and each waits a random 0-1 s: no burst.
  const perSecond = new Map<number, number>();
  for (const at of reconnectedAt) perSecond.set(Math.floor((at - sighup) / 250), (perSecond.get(Math.floor((at - sighup) / 250)) ?? 0) + 1);
  const worst = Math.max(...perSecond.values());
  t.ok(reconnectedAt.length >= 150, `${reconnectedAt.length} reconnects`);
  t.ok(worst <= 60, `at most ${worst} reconnects in any 250 ms (bound 60: 200 clients spread over the 3 s of closes and 1 s of jitter)`);
  clients.forEach((c) => c.close());
});
