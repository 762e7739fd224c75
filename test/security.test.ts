/** Security rules at the door: token transport, origins, JWKS keys, iss/aud, connection limits. */
import t from 'tap';
import http from 'node:http';
import net from 'node:net';
import { readdirSync, readFileSync } from 'node:fs';
import { generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import { createSigner } from 'fast-jwt';
import WebSocket from 'ws';
import { startGateway } from './helpers/gateway.js';
import { startCluster } from './helpers/cluster.js';
import { Client, connectWidget, widgetUrl } from './helpers/client.js';
import { SECRET, signWith, widgetToken } from './helpers/tokens.js';
import { freePort, sleep, until } from './helpers/net.js';

const closeOf = (url: string, opts?: WebSocket.ClientOptions) => new Client(url, opts).closed;

void t.test('the token can travel in Sec-WebSocket-Protocol; the server answers widget.v1 and never echoes it', async (t) => {
  const g = await startGateway();
  t.teardown(() => g.close());
  const url = `ws://127.0.0.1:${g.port}/api/v1/channels/widget/alice/connect`;
  const ws = new WebSocket(url, ['widget.v1', `bearer.${widgetToken('alice')}`]);
  const first = await new Promise<any>((resolve, reject) => {
    ws.once('message', (d) => resolve(JSON.parse(d.toString())));
    ws.once('error', reject);
  });
  t.equal(first.type, 'connection_status');
  t.equal(ws.protocol, 'widget.v1');
  ws.close();
  const bad = await new Promise<number>((resolve) => {
    const w = new WebSocket(url, ['widget.v1', 'bearer.garbage']);
    w.on('close', (code) => resolve(code));
    w.on('error', () => {});
  });
  t.equal(bad, 4003, 'a bad token in the header closes with 4003');
  const none = await new Promise<number>((resolve) => {
    const w = new WebSocket(url, ['widget.v1']);
    w.on('close', (code) => resolve(code));
    w.on('error', () => {});
  });
  t.equal(none, 4001, 'no token anywhere closes with 4001');
});

void t.test('tokens never reach the logs', async (t) => {
  const c = await startCluster({ LOG_LEVEL: 'trace' });
  t.teardown(() => c.stop('SIGKILL'));
  const good = widgetToken('alice');
  const wrong = widgetToken('bob');
  const x = await connectWidget(c.port, 'alice', good);
  await x.ask('hi');
  x.close();
  await closeOf(widgetUrl(c.port, 'alice', wrong));
  await new Promise<void>((resolve) => {
    const w = new WebSocket(`ws://127.0.0.1:${c.port}/api/v1/channels/widget/alice/connect`, ['widget.v1', `bearer.${wrong}`]);
    w.on('close', () => resolve());
    w.on('error', () => {});
  });
  await fetch(`http://127.0.0.1:${c.port}/api/v1/creators/alice/broadcast`, { method: 'POST', headers: { authorization: `Bearer ${wrong}` }, body: '{}' });
  await until(() => /widget token refused/.test(c.output()), 5000, 'the refusal logged');
  for (const tok of [good, wrong]) {
    for (const part of tok.split('.')) t.notOk(c.output().includes(part), 'no part of a token in the logs');
  }
});

void t.test('origins', async (t) => {
  const g = await startGateway({ ALLOWED_ORIGINS: 'https://shop.example.com,https://blog.example.com:8443' });
  t.teardown(() => g.close());
  const url = widgetUrl(g.port, 'alice', widgetToken('alice'));
  t.equal((await closeOf(url, { origin: 'https://evil.example.net' })).code, 4003, 'a foreign origin closes with 4003');
  t.equal((await closeOf(url, { origin: 'https://shop.example.com.evil.net' })).code, 4003, 'exact match only');
  const ok = new Client(url, { origin: 'https://blog.example.com:8443' });
  t.equal((await ok.nextOfType('connection_status')).status, 'connected', 'a listed origin connects');
  ok.close();
  const pinned = widgetToken('alice', { origins: ['https://shop.example.com'] });
  t.equal((await closeOf(widgetUrl(g.port, 'alice', pinned), { origin: 'https://blog.example.com:8443' })).code, 4003,
    "the token's origins claim narrows the list");
  const p2 = new Client(widgetUrl(g.port, 'alice', pinned), { origin: 'https://shop.example.com' });
  t.equal((await p2.nextOfType('connection_status')).status, 'connected');
  p2.close();
  t.equal((await closeOf(widgetUrl(g.port, 'alice', pinned))).code, 4003, 'a pinned token needs an Origin');
});

void t.test('iss and aud', async (t) => {
  const g = await startGateway({ JWT_ISSUER: 'https://auth.example.com', JWT_AUDIENCE: 'channel-gateway' });
  t.teardown(() => g.close());
  const good = signWith(SECRET, { creator_id: 'alice', iss: 'https://auth.example.com', aud: 'channel-gateway' });
  const c = await connectWidget(g.port, 'alice', good);
  c.close();
  for (const claims of [{}, { iss: 'https://evil', aud: 'channel-gateway' }, { iss: 'https://auth.example.com', aud: 'other' }]) {
    const tok = signWith(SECRET, { creator_id: 'alice', ...claims });
    t.equal((await closeOf(widgetUrl(g.port, 'alice', tok))).code, 4003, JSON.stringify(claims));
  }
});

/** A JWKS server whose key set the test can change; counts its hits. */
async function jwksServer() {
  let keys: Array<{ kid: string; key: KeyObject }> = [];
  let hits = 0;
  const srv = http.createServer((_req, res) => {
    hits++;
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ keys: keys.map(({ kid, key }) => ({ ...key.export({ format: 'jwk' }), kid, use: 'sig', alg: 'RS256' })) }));
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(srv.address() as { port: number }).port}/jwks.json`,
    set(k: typeof keys) {
      keys = k;
    },
    get hits() {
      return hits;
    },
    close: () => new Promise<void>((r) => srv.close(() => r())),
  };
}

const rsa = () => generateKeyPairSync('rsa', { modulusLength: 2048 });
const signRs = (priv: KeyObject, kid: string, payload: object) =>
  createSigner({ key: priv.export({ type: 'pkcs8', format: 'pem' }).toString(), algorithm: 'RS256', kid })(payload);

void t.test('JWKS: kid selection, rotation, forged kids with a bounded refresh rate, no HS confusion', async (t) => {
  const k1 = rsa();
  const k2 = rsa();
  const jwks = await jwksServer();
  jwks.set([{ kid: 'k1', key: k1.publicKey }]);
  const g = await startGateway({ JWT_SECRET: '', JWT_JWKS_URL: jwks.url, JWT_JWKS_MIN_REFRESH_S: '2' });
  t.teardown(async () => {
    await g.close();
    await jwks.close();
  });
  const c = await connectWidget(g.port, 'alice', signRs(k1.privateKey, 'k1', { creator_id: 'alice' }));
  t.equal((await c.ask('jwks')).content, 'jwks', 'a token signed with the JWKS key named by its kid');
  c.close();

  const hitsBefore = jwks.hits;
  const forged = rsa();
  const closes = await Promise.all(
    Array.from({ length: 50 }, (_, i) => closeOf(widgetUrl(g.port, 'alice', signRs(forged.privateKey, `forged-${i}`, { creator_id: 'alice' })))),
  );
  t.ok(closes.every((x) => x.code === 4003), '50 tokens with forged kids: all 4003');
  t.ok(jwks.hits - hitsBefore <= 1, `they caused ${jwks.hits - hitsBefore} JWKS request(s), not 50`);
  t.equal(
    (await closeOf(widgetUrl(g.port, 'alice', signRs(k2.privateKey, 'k1', { creator_id: 'alice' })))).code,
    4003,
    'a known kid with another key: bad signature',
  );
  const hsWithPublic = createSigner({ key: k1.publicKey.export({ type: 'spki', format: 'pem' }).toString(), algorithm: 'HS256', kid: 'k1' })({
    creator_id: 'alice',
  });
  t.equal((await closeOf(widgetUrl(g.port, 'alice', hsWithPublic))).code, 4003, 'HS256 signed with the public key is refused');

  // Rotation: the issuer starts signing with k2 and publishes it.
  jwks.set([{ kid: 'k1', key: k1.publicKey }, { kid: 'k2', key: k2.publicKey }]);
  await new Promise((r) => setTimeout(r, 2100)); // past JWT_JWKS_MIN_REFRESH_S
  const rotated = await connectWidget(g.port, 'alice', signRs(k2.privateKey, 'k2', { creator_id: 'alice' }));
  t.equal((await rotated.ask('rotated')).content, 'rotated', 'a new kid is fetched on first sight');
  rotated.close();
});

void t.test('connections per client IP', async (t) => {
  const g = await startGateway({ MAX_CONNECTIONS_PER_IP: '3' });
  t.teardown(() => g.close());
  const three = await Promise.all([1, 2, 3].map(() => connectWidget(g.port, 'alice', widgetToken('alice'))));
  t.same(await closeOf(widgetUrl(g.port, 'alice', widgetToken('alice'))), { code: 4029, reason: 'Too many connections' });
  three[0]!.close();
  await three[0]!.closed;
  await new Promise((r) => setTimeout(r, 50));
  const again = await connectWidget(g.port, 'alice', widgetToken('alice'));
  t.pass('a slot freed by a close can be used again');
  [...three, again].forEach((c) => c.close());
});

void t.test('the per-worker connection cap refuses with 1013', async (t) => {
  const g = await startGateway({ MAX_CONNECTIONS: '5' });
  t.teardown(() => g.close());
  const five = await Promise.all([1, 2, 3, 4, 5].map(() => connectWidget(g.port, 'alice', widgetToken('alice'))));
  t.same(await closeOf(widgetUrl(g.port, 'alice', widgetToken('alice'))), { code: 1013, reason: 'Try again later' });
  t.equal((await five[4]!.ask('still fine')).content, 'still fine');
  five.forEach((c) => c.close());
});

void t.test('near the file-descriptor limit the gateway refuses cleanly instead of failing with EMFILE', async (t) => {
  // A real process with a low descriptor limit: MAX_CONNECTIONS defaults to the limit minus 256.
  const c = await startCluster({ WORKERS: '1', GATEWAY_TEST_NOFILE: '700' });
  t.teardown(() => c.stop('SIGKILL'));
  const results = await Promise.all(
    Array.from({ length: 520 }, () => {
      const x = new Client(widgetUrl(c.port, 'alice', widgetToken('alice')));
      return x.next().then(
        (f) => ({ x, ok: f.type === 'connection_status' }),
        async () => ({ x, ok: false, code: (await x.closed).code }),
      );
    }),
  );
  const ok = results.filter((r) => r.ok).length;
  const refused = results.filter((r) => !r.ok);
  t.equal(ok, 700 - 256, `${ok} connected (the cap)`);
  t.ok(refused.every((r) => (r as { code?: number }).code === 1013), `${refused.length} refused with 1013`);
  t.equal((await c.get('/healthz')).status, 200, 'the worker still serves');
  t.notMatch(c.output(), /EMFILE|worker died/);
  results.forEach((r) => r.x.close());
});

void t.test('idle TCP connects and bad-token upgrades past the descriptor limit: no EMFILE spin, clean refusals, recovery by itself', async (t) => {
  // NODE_OPTIONS cleared: tap's coverage hook in the child lazily opens files,
  // which fails once descriptors run out, and would crash the worker it measures.
  const c = await startCluster({ WORKERS: '1', GATEWAY_TEST_NOFILE: '1100', NODE_OPTIONS: '' });
  t.teardown(() => c.stop('SIGKILL'));
  const [pid] = c.workerPids();
  const cpuTicks = () => {
    const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
    return Number(f[11]) + Number(f[12]);
  };
  const bystander = await connectWidget(c.port, 'calm', widgetToken('calm'));
  /** How a new widget socket fares: 'ok', or how it was refused, and how fast. */
  const attempt = async () => {
    const started = Date.now();
    const x = new Client(widgetUrl(c.port, 'alice', widgetToken('alice')));
    const how = await x.nextOfType('connection_status', 3000).then(
      () => 'ok',
      async () => `refused (${(await x.closed).code})`,
    );
    x.ws.terminate();
    return { how, ms: Date.now() - started };
  };
  /** The worker's refusal counters: every reason summed, and those answered as plain HTTP. */
  const refusals = async () => {
    const m = await fetch(`http://127.0.0.1:${c.port}/metrics`).then((r) => r.text());
    const sum = (re: RegExp) => [...m.matchAll(re)].reduce((a, x) => a + Number(x[1]), 0);
    return { total: sum(/^gateway_upgrades_refused_total\{[^}]*\} (\d+)$/gm), asHttp: sum(/^gateway_upgrades_refused_as_http_total(?:\{[^}]*\})? (\d+)$/gm) };
  };
  const upgrade = (token: string) =>
    `GET /api/v1/channels/widget/alice/connect?token=${token} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
    `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`;

  // Idle connects hold their descriptors (uWS reaps them after its HTTP idle
  // time-out), so a new socket meanwhile must be refused at once. Refused
  // upgrades beyond a few hundred get a plain HTTP answer and their
  // connection closed at once, so they hold no descriptors and a new socket
  // is served.
  for (const [attack, make, holds] of [
    ['1,200 idle TCP connects', () => net.connect(c.port, '127.0.0.1'), true],
    ['1,200 bad-token upgrades that never read again', () => {
      const s = net.connect(c.port, '127.0.0.1', () => s.write(upgrade('not-a-token')));
      s.pause();
      return s;
    }, false],
  ] as const) {
    await t.test(attack, async (t) => {
      const refused0 = await refusals();
      const socks = Array.from({ length: 1200 }, () => {
        const s = make();
        s.on('error', () => {});
        return s;
      });
      await sleep(1500);
      const c0 = cpuTicks();
      await sleep(1000);
      const used = cpuTicks() - c0;
      t.ok(used < 40, `the worker is not spinning: ${used} of 100 CPU ticks in 1 s`);
      const fds = readdirSync(`/proc/${pid}/fd`).length;
      t.ok(fds < 1100, `${fds} descriptors open, under the limit of 1100`);
      const during = await attempt();
      if (holds) t.ok(during.how !== 'ok' && during.ms < 2000, `a new socket during the attack is refused at once: ${during.how} in ${during.ms} ms`);
      else {
        t.ok(fds < 550, `refused attackers do not hold the worker's descriptors: ${fds} open`);
        t.equal(during.how, 'ok', `a new socket during the attack is served (${during.ms} ms)`);
        const r = await refusals();
        const counted = r.total - refused0.total;
        // Each refusal once, under its reason; those answered as plain HTTP also in their own counter (they were counted twice).
        t.ok(counted > 0 && counted <= 1200, `${counted} refusals counted for 1,200 refused upgrades (at most one each)`);
        t.ok(r.asHttp - refused0.asHttp > 0 && r.asHttp - refused0.asHttp <= counted, `${r.asHttp - refused0.asHttp} of them answered as plain HTTP`);
      }
      bystander.send({ type: 'ping' });
      t.same(await bystander.nextOfType('pong', 2000), { type: 'pong' }, 'a client connected before keeps being served');
      socks.forEach((s) => s.destroy());
      await until(async () => (await attempt()).how === 'ok', 10_000, 'new sockets accepted again');
      t.pass('accepting again once the attackers left');
    });
  }
  const fatal = c.output().split('\n').filter((l) => /EMFILE|worker died|worker crashed/.test(l));
  t.same(fatal, [], 'no EMFILE and no worker lost');
  if (fatal.length) t.comment(c.output().split('\n').filter((l) => !l.includes('widget token refused')).join('\n'));
  t.match(c.output(), /not accepting connections until some close/, 'the pause is logged');
  bystander.close();
});

void t.test('oversized upgrade headers the gateway reads get HTTP 431; headers it never reads do not count', async (t) => {
  const g = await startGateway({ MAX_HEADER_BYTES: '1024' });
  t.teardown(() => g.close());
  const status = (o: { protocols?: string[]; headers?: Record<string, string> }) =>
    new Promise<number>((resolve) => {
      const w = new WebSocket(widgetUrl(g.port, 'alice', widgetToken('alice')), o.protocols ?? [], { headers: o.headers });
      w.on('upgrade', (res) => {
        resolve(res.statusCode ?? 0);
        w.close();
      });
      w.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
      w.on('error', () => resolve(-1));
    });
  t.equal(await status({ protocols: ['widget.v1', `x${'y'.repeat(2000)}`] }), 431, 'Sec-WebSocket-Protocol');
  t.equal(await status({ headers: { origin: `https://${'o'.repeat(2000)}.example` } }), 431, 'Origin');
  t.equal(await status({ headers: { 'x-big': 'y'.repeat(2000) } }), 101, 'a header the gateway never reads');
});

void t.test('abuse caps: frames per socket per second (4008) and new sockets per IP per second (4030)', async (t) => {
  const g = await startGateway({ FRAME_RATE_LIMIT: '20', CONNECT_RATE_PER_IP: '5' });
  t.teardown(() => g.close());
  const five = [];
  for (let i = 0; i < 5; i++) five.push(await connectWidget(g.port, 'alice', widgetToken('alice')));
  t.same(await closeOf(widgetUrl(g.port, 'alice', widgetToken('alice'))), { code: 4030, reason: 'Too many connection attempts' });
  await new Promise((r) => setTimeout(r, 400));
  const later = await connectWidget(g.port, 'alice', widgetToken('alice'));
  t.pass('the connect budget refills');
  const calm = five[0]!;
  for (let i = 0; i < 10; i++) calm.send({ type: 'ping' });
  for (let i = 0; i < 10; i++) t.same(await calm.next(), { type: 'pong' });
  const flood = five[1]!;
  for (let i = 0; i < 40; i++) flood.send({ type: 'ping' });
  t.same(await flood.closed, { code: 4008, reason: 'Frame rate exceeded' }, 'a flood closes its own socket with 4008');
  t.same((await calm.ask('still here')).content, 'still here', 'other sockets are not affected');
  [...five, later].forEach((c) => c.close());
});

void t.test('ADMIN_PORT: stats and metrics on the internal listener only; the widget port keeps health and readiness', async (t) => {
  const admin = await freePort();
  const c = await startCluster({ ADMIN_PORT: String(admin) });
  t.teardown(() => c.stop('SIGKILL'));
  const x = await connectWidget(c.port, 'alice', widgetToken('alice'));
  for (const p of ['/api/v1/stats', '/metrics']) t.equal((await fetch(`http://127.0.0.1:${c.port}${p}`)).status, 404, `${p} is not on the widget port`);
  for (const p of ['/healthz', '/readyz']) t.equal((await fetch(`http://127.0.0.1:${c.port}${p}`)).status, 200, `${p} stays on the widget port`);
  const stats = await (await fetch(`http://127.0.0.1:${admin}/api/v1/stats`)).json();
  t.equal(stats.total_connections, 1, 'stats on the internal listener count the whole host');
  const metrics = await fetch(`http://127.0.0.1:${admin}/metrics`);
  t.equal(metrics.status, 200);
  t.match(await metrics.text(), /gateway_connections\{worker="\d+"\} 1/);
  for (const p of ['/healthz', '/readyz']) t.equal((await fetch(`http://127.0.0.1:${admin}${p}`)).status, 200, `${p} on the internal listener too`);
  const elsewhere = await fetch(`http://127.0.0.2:${admin}/metrics`).then((r) => r.status, () => 'refused');
  t.equal(elsewhere, 'refused', 'bound to 127.0.0.1 (ADMIN_HOST) only');
  x.close();
});

void t.test('production without ADMIN_PORT warns at start-up', async (t) => {
  const c = await startCluster({ NODE_ENV: 'production' });
  t.teardown(() => c.stop('SIGKILL'));
  t.match(c.output(), /ADMIN_PORT is unset/);
});
