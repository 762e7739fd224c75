/**
 * The real client IP behind a load balancer: a real HAProxy (Debian's) in
 * front of the real cluster, at layer 4 with the PROXY protocol v2 and at
 * layer 7 with X-Forwarded-For. The per-IP limits see each client's own
 * address (clients bind their own 127.0.0.x), and a sender that is not a
 * trusted proxy cannot choose the address it is limited under.
 */
import t from 'tap';
import net from 'node:net';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import WebSocket from 'ws';
import { startCluster, type RunningCluster } from './helpers/cluster.js';
import { widgetToken } from './helpers/tokens.js';
import { freePort, until } from './helpers/net.js';
import { reap } from './helpers/reaper.js';

const HAPROXY = '/usr/sbin/haproxy';

async function startHaproxy(gatewayPort: number): Promise<{ l4: number; l7: number; proc: ChildProcess }> {
  const [l4, l7] = [await freePort(), await freePort()];
  const dir = mkdtempSync(path.join(tmpdir(), 'cgw-haproxy-'));
  const cfg = path.join(dir, 'haproxy.cfg');
  writeFileSync(
    cfg,
    `global
  maxconn 2000
defaults
  timeout connect 5s
  timeout client 60s
  timeout server 60s
  timeout tunnel 60s
frontend l4
  mode tcp
  bind 127.0.0.1:${l4}
  default_backend gw4
backend gw4
  mode tcp
  server gw 127.0.0.1:${gatewayPort} send-proxy-v2
frontend l7
  mode http
  bind 127.0.0.1:${l7}
  option forwardfor
  default_backend gw7
backend gw7
  mode http
  server gw 127.0.0.1:${gatewayPort}
`,
  );
  const proc = spawn(HAPROXY, ['-db', '-f', cfg], { stdio: 'ignore' });
  proc.once('exit', reap(proc.pid!));
  await until(
    () =>
      new Promise<boolean>((resolve) => {
        const s = net.connect(l4, '127.0.0.1', () => {
          s.destroy();
          resolve(true);
        });
        s.on('error', () => resolve(false));
      }),
    10_000,
    'haproxy listening',
  );
  return { l4, l7, proc };
}

/** A widget socket to `port` from source address `from`: 'open' or its close code. */
function attempt(port: number, from: string, headers: Record<string, string> = {}): Promise<{ result: string; ws: WebSocket }> {
  const ws = new WebSocket(`ws://127.0.0.1:${port}/api/v1/channels/widget/ip/connect?token=${widgetToken('ip')}`, { localAddress: from, headers });
  return new Promise((resolve) => {
    ws.on('message', (d) => {
      if (String(d).includes('connection_status')) resolve({ result: 'open', ws });
    });
    ws.on('close', (code) => resolve({ result: String(code), ws }));
    ws.on('error', () => {});
  });
}

async function open(port: number, from: string, n: number, headers?: Record<string, string>): Promise<{ results: string[]; sockets: WebSocket[] }> {
  const results: string[] = [];
  const sockets: WebSocket[] = [];
  for (let i = 0; i < n; i++) {
    const a = await attempt(port, from, headers);
    results.push(a.result);
    sockets.push(a.ws);
  }
  return { results, sockets };
}

let gw: RunningCluster;
let hp: Awaited<ReturnType<typeof startHaproxy>>;
t.before(async () => {
  gw = await startCluster({ WORKERS: '1', MAX_CONNECTIONS_PER_IP: '2', TRUSTED_PROXIES: '127.0.0.1' });
  hp = await startHaproxy(gw.port);
});
t.teardown(async () => {
  hp?.proc.kill('SIGKILL');
  await gw?.stop('SIGKILL');
});

for (const layer of ['l4', 'l7'] as const) {
  void t.test(`behind HAProxy at ${layer === 'l4' ? 'layer 4 (PROXY protocol v2)' : 'layer 7 (X-Forwarded-For)'}: each client is limited under its own address`, async (t) => {
    const port = hp[layer];
    const a = await open(port, '127.0.0.2', 3);
    t.same(a.results, ['open', 'open', '4029'], 'client 127.0.0.2: two sockets, the third over MAX_CONNECTIONS_PER_IP');
    const b = await open(port, '127.0.0.3', 2);
    t.same(b.results, ['open', 'open'], 'client 127.0.0.3 is not affected: its own address, not the balancer\'s');
    for (const s of [...a.sockets, ...b.sockets]) s.close();
    await until(async () => (await gw.get('/api/v1/stats')).body.total_connections === 0, 5000, 'all closed');
  });
}

void t.test('an untrusted sender cannot choose its address: its own PROXY header and X-Forwarded-For are ignored', async (t) => {
  // X-Forwarded-For from a client that is no proxy: limited under its TCP address.
  const spoofed = [];
  for (let i = 0; i < 3; i++) spoofed.push(await attempt(gw.port, '127.0.0.4', { 'x-forwarded-for': `203.0.113.${i}` }));
  t.same(spoofed.map((x) => x.result), ['open', 'open', '4029'], 'three "different" forwarded addresses from one peer: the third refused');
  // A PROXY v2 header sent by the client itself (uWS parses it from anyone).
  const proxyV2 = (src: number[]) =>
    Buffer.concat([Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a, 0x21, 0x11, 0x00, 0x0c]), Buffer.from([...src, 127, 0, 0, 1, 0x30, 0x39, 0x23, 0x29])]);
  const raw = (n: number) =>
    new Promise<string>((resolve) => {
      const s = net.connect({ port: gw.port, host: '127.0.0.1', localAddress: '127.0.0.5' }, () => {
        s.write(
          Buffer.concat([
            proxyV2([198, 51, 100, n]),
            Buffer.from(
              `GET /api/v1/channels/widget/ip/connect?token=${widgetToken('ip')} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
                `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
            ),
          ]),
        );
      });
      let got = '';
      s.on('data', (d) => {
        got += d.toString('latin1');
        if (got.includes('connection_status')) resolve('open');
        // A close frame: 0x88, length, then the code in two bytes.
        const i = got.indexOf('\x88');
        if (i >= 0 && got.length >= i + 4) resolve(String(got.charCodeAt(i + 2) * 256 + got.charCodeAt(i + 3)));
      });
      s.on('error', () => resolve('error'));
      setTimeout(() => resolve('timeout'), 3000);
    });
  const results = [await raw(1), await raw(2), await raw(3)];
  t.same(results, ['open', 'open', '4029'], 'three claimed PROXY addresses from one untrusted peer: the third refused');
  for (const x of spoofed) x.ws.close();
});

void t.test('without TRUSTED_PROXIES, everyone behind the balancer shares its address (the defect this fixes)', async (t) => {
  const plain = await startCluster({ WORKERS: '1', MAX_CONNECTIONS_PER_IP: '2' });
  const proxy = await startHaproxy(plain.port);
  t.teardown(async () => {
    proxy.proc.kill('SIGKILL');
    await plain.stop('SIGKILL');
  });
  const a = await open(proxy.l7, '127.0.0.2', 2);
  const b = await open(proxy.l7, '127.0.0.3', 1);
  t.same([...a.results, ...b.results], ['open', 'open', '4029'], 'a second client is refused because of the first');
  for (const s of [...a.sockets, ...b.sockets]) s.close();
});
