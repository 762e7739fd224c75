/**
 * Production hardening against the real cluster: metrics, slow consumers,
 * kill -9 of a worker under chat load, a random frame fuzzer, and a churn
 * soak for leaks.
 */
import t from 'tap';
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { startCluster, type RunningCluster } from './helpers/cluster.js';
import { connectWidget } from './helpers/client.js';
import { serviceToken, widgetToken } from './helpers/tokens.js';
import { sleep, until } from './helpers/net.js';

const workerPids = async (c: RunningCluster) => Object.keys((await c.get('/api/v1/stats')).body.connections_by_worker).map(Number);
const rssKiB = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]);
const metric = (text: string, re: RegExp) => {
  const m = re.exec(text);
  return m ? Number(m[1]) : NaN;
};

/** The sum over workers of a gauge on /metrics. */
async function gauge(c: RunningCluster, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${c.port}/metrics`)).text();
  return [...text.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\d+)`, 'gm'))].reduce((a, m) => a + Number(m[1]), 0);
}

void t.test('GET /metrics: Prometheus text summed over both workers', async (t) => {
  const c = await startCluster();
  t.teardown(() => c.stop('SIGKILL'));
  const socks = await Promise.all(Array.from({ length: 12 }, () => connectWidget(c.port, 'alice', widgetToken('alice'))));
  for (const s of socks) await s.ask('count me');
  socks[0]!.send('not json');
  await socks[0]!.nextOfType('error');
  const res = await fetch(`http://127.0.0.1:${c.port}/metrics`);
  t.equal(res.status, 200);
  t.match(res.headers.get('content-type'), /text\/plain/);
  const text = await res.text();
  const pids = await workerPids(c);
  for (const pid of pids) t.match(text, new RegExp(`gateway_connections\\{worker="${pid}"\\} \\d+`), `connections of worker ${pid}`);
  t.equal(metric(text, /gateway_frames_in_total\{type="user_message"\} (\d+)/), 12, 'user messages from both workers summed');
  t.equal(metric(text, /gateway_frames_out_total\{type="ai_response"\} (\d+)/), 12);
  t.equal(metric(text, /gateway_error_frames_total\{error="invalid_json"\} (\d+)/), 1);
  for (const name of ['gateway_closes_total', 'gateway_rate_limited_total', 'gateway_slow_consumer_closes_total', 'gateway_ai_request_seconds',
    'gateway_ai_failures_total', 'gateway_bus_published_total', 'gateway_bus_up', 'gateway_event_loop_lag_p99_seconds', 'gateway_dropped_frames_total']) {
    t.match(text, `# TYPE ${name} `, name);
  }
  socks.forEach((s) => s.close());
});

/**
 * RSS of each of `pids` (a `collectable` cluster's workers) after full GCs: without them, where V8 stands
 * in its young generation swings the reading by MBs, and one GC is not enough either (the heap gives pages
 * back over several), so collect until the total stops falling by more than 512 KiB (at most 8 times).
 */
async function settledRssOf(pids: number[]): Promise<number[]> {
  let last: number[] = [];
  for (let i = 0; i < 8; i++) {
    for (const pid of pids) process.kill(pid, 'SIGUSR2');
    await sleep(700);
    const now = pids.map(rssKiB);
    const fell = last.length ? last.reduce((a, v) => a + v, 0) - now.reduce((a, v) => a + v, 0) : Infinity;
    last = now;
    if (fell < 512) break;
  }
  return last;
}

void t.test('a client that stops reading while broadcasts flow: bounded memory, closed, others unaffected', async (t) => {
  // RSS read after full GCs (settledRssOf): a raw reading holds whatever garbage the last burst left.
  const c = await startCluster({ WORKERS: '1', MAX_BACKPRESSURE_BYTES: '262144', MAX_PAYLOAD_BYTES: '16384' }, { collectable: true });
  t.teardown(() => c.stop('SIGKILL'));
  const [pid] = await workerPids(c);
  const rss = async () => (await settledRssOf([pid!]))[0]!;
  const reader = await connectWidget(c.port, 'alice', widgetToken('alice'));
  let received = 0;
  reader.ws.on('message', () => received++);
  const body = JSON.stringify({ type: 'news', pad: 'x'.repeat(8000) });
  // 3000 x 8 KB = 24 MB: more than the kernel's socket buffers can hide, far over the 256 KiB bound.
  const N = 3000;
  const burst = async () => {
    for (let i = 0; i < N; i += 20) {
      await Promise.all(
        Array.from({ length: 20 }, () =>
          fetch(`http://127.0.0.1:${c.port}/api/v1/creators/alice/broadcast`, { method: 'POST', headers: { authorization: `Bearer ${serviceToken()}` }, body }),
        ),
      );
      reader.inbox.splice(0);
    }
  };
  // Two bursts with no stalled client: the first warms the heap, the second is
  // the control (how much RSS a burst costs with every client reading).
  await burst();
  await until(() => received >= N, 10_000, 'the reader to get the first burst');
  const rss0 = await rss();
  await burst();
  await until(() => received >= 2 * N, 10_000, 'the reader to get the control burst');
  const rssBefore = await rss();
  const control = rssBefore - rss0;

  // The stalled client: a raw socket that completes the handshake, then never reads again.
  const stalled = net.connect(c.port, '127.0.0.1');
  stalled.on('error', () => {});
  stalled.write(
    `GET /api/v1/channels/widget/alice/connect?token=${widgetToken('alice')} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
      `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
  );
  await new Promise((r) => stalled.once('data', r));
  stalled.pause();
  await until(async () => (await c.get('/api/v1/stats')).body.total_connections === 2, 5000, 'the stalled client registered');
  await burst();
  await until(() => received >= 3 * N, 10_000, 'the reader to get the third burst');
  t.equal(received, 3 * N, 'the reading client got every broadcast');
  await until(async () => (await c.get('/api/v1/stats')).body.total_connections === 1, 5000, 'the stalled socket to be closed').catch(() => {});
  t.equal((await c.get('/api/v1/stats')).body.total_connections, 1, 'the gateway closed the socket that stopped reading');
  const grew = (await rss()) - rssBefore;
  // A control burst can shrink RSS (a GC returned heap): the stalled burst then gets the slack from zero, not less.
  t.ok(grew < Math.max(control, 0) + 8_000, `RSS grew ${grew} KiB during the burst with a stalled client, ${control} KiB during the same burst without (24 MB were sent to it)`);
  reader.inbox.splice(0);
  t.equal((await reader.ask('still fast')).content, 'still fast', 'the reading client is unaffected');
  const text = await (await fetch(`http://127.0.0.1:${c.port}/metrics`)).text();
  t.match(text, /gateway_slow_consumer_closes_total [1-9]/, 'the slow-consumer close is counted');
  t.match(text, /gateway_closes_total\{code="4009"\} [1-9]/, 'with code 4009');
  stalled.destroy();
  reader.close();
});

void t.test('a client that stops reading while 60 KB broadcasts flow reads 4009 "Slow consumer" when it reads again, not 1006', async (t) => {
  const c = await startCluster({ WORKERS: '1' });
  t.teardown(() => c.stop('SIGKILL'));
  const slow = await connectWidget(c.port, 'alice', widgetToken('alice'));
  slow.ws.pause();
  const body = JSON.stringify({ type: 'news', pad: 'x'.repeat(60_000) });
  for (let i = 0; i < 300; i += 20) {
    await Promise.all(
      Array.from({ length: 20 }, () =>
        fetch(`http://127.0.0.1:${c.port}/api/v1/creators/alice/broadcast`, { method: 'POST', headers: { authorization: `Bearer ${serviceToken()}` }, body }),
      ),
    );
  }
  slow.ws.resume();
  t.same(await slow.closed, { code: 4009, reason: 'Slow consumer' });
  const got = slow.inbox.filter((f) => f.type === 'news').length;
  t.ok(got > 0 && got < 300, `it read the ${got} broadcasts buffered before the close, then the code`);
});

void t.test('kill -9 of a worker under chat load: the other worker\'s clients see no error; the dead one\'s reconnect at once', async (t) => {
  const c = await startCluster({ RATE_LIMIT_MESSAGES: '1000000' });
  t.teardown(() => c.stop('SIGKILL'));
  const socks = await Promise.all(Array.from({ length: 30 }, () => connectWidget(c.port, 'alice', widgetToken('alice'))));
  const errors: string[] = [];
  let stop = false;
  const loops = socks.map(async (s) => {
    while (!stop && s.ws.readyState === s.ws.OPEN) {
      try {
        await s.ask('load');
      } catch (err) {
        if (s.ws.readyState === s.ws.OPEN) errors.push((err as Error).message);
      }
    }
  });
  await sleep(300);
  const [victim] = await workerPids(c);
  process.kill(victim!, 'SIGKILL');
  await sleep(500);
  stop = true;
  await Promise.all(loops);
  const dead = socks.filter((s) => s.ws.readyState !== s.ws.OPEN);
  const alive = socks.filter((s) => s.ws.readyState === s.ws.OPEN);
  t.ok(dead.length > 0 && alive.length > 0, `${dead.length} on the killed worker, ${alive.length} on the other`);
  t.same(errors, [], 'no client of the surviving worker saw an error');
  const back = await Promise.all(dead.map(() => connectWidget(c.port, 'alice', widgetToken('alice'))));
  for (const b of back) t.equal((await b.ask('back')).content, 'back');
  t.equal(back.filter((b) => b.ws.readyState === b.ws.OPEN).length, dead.length, `all ${dead.length} clients of the killed worker reconnected at once and stay open`);
  [...alive, ...back].forEach((s) => s.close());
});

void t.test('fuzzer: random frames never kill the process; each gets an error frame or closes its own socket', async (t) => {
  const c = await startCluster({ RATE_LIMIT_MESSAGES: '100000', MAX_PAYLOAD_BYTES: '4096' });
  t.teardown(() => c.stop('SIGKILL'));
  const bystander = await connectWidget(c.port, 'calm', widgetToken('calm'));
  const seedBytes = randomBytes(4);
  let seed = seedBytes.readUInt32LE(0) || 1;
  t.comment(`fuzz seed ${seed}`);
  const rnd = (n: number) => {
    seed ^= seed << 13;
    seed ^= seed >>> 17;
    seed ^= seed << 5;
    return (seed >>> 0) % n;
  };
  const pieces = ['{', '}', '[', ']', '"type"', ':', '"user_message"', '"ping"', '"content"', ',', 'null', 'true', '1e999', '"\\u0000"', '"\\ud800"', '-0', '"__proto__"', '{"type":', '"x"'];
  const gen = (): { data: Buffer; binary: boolean } => {
    switch (rnd(5)) {
      case 0:
        return { data: randomBytes(rnd(64)), binary: true };
      case 1:
        return { data: Buffer.from(Array.from({ length: rnd(30) }, () => pieces[rnd(pieces.length)]).join('')), binary: false };
      case 2:
        return { data: Buffer.from(JSON.stringify({ type: ['user_message', 'ping', 'x', 7, null][rnd(5)], content: [1, 'hi', '', {}, 'y'.repeat(rnd(6000))][rnd(5)] })), binary: false };
      case 3:
        return { data: Buffer.from('['.repeat(rnd(3000))), binary: false };
      default:
        return { data: Buffer.concat([Buffer.from('{"type":"user_message","content":"'), randomBytes(rnd(40)), Buffer.from('"}')]), binary: rnd(2) === 0 };
    }
  };
  const deadline = Date.now() + 8000;
  let frames = 0;
  let answered = 0;
  let closedOwn = 0;
  while (frames < 1500 && Date.now() < deadline) {
    const x = await connectWidget(c.port, 'fuzz', widgetToken('fuzz'));
    for (let i = 0; i < 25 && x.ws.readyState === x.ws.OPEN; i++) {
      const f = gen();
      x.ws.send(f.data, { binary: f.binary });
      frames++;
      try {
        await x.next(() => true, 3000);
        answered++;
      } catch {
        if (x.ws.readyState !== x.ws.OPEN) closedOwn++;
        else t.fail(`no answer to a fuzzed frame: ${f.data.subarray(0, 80).toString('hex')}`);
      }
      x.inbox.splice(0);
    }
    x.close();
  }
  t.ok(frames > 100, `${frames} fuzzed frames: ${answered} answered, ${closedOwn} closed their own socket`);
  t.equal(c.proc.exitCode, null, 'the gateway is alive');
  t.notMatch(c.output(), /worker died|worker crashed/, 'no worker died');
  t.equal((await bystander.ask('unbothered')).content, 'unbothered', 'another client keeps chatting');
  bystander.close();
});

void t.test('churn soak: cycles of connect, chat, disconnect leave no leak behind', async (t) => {
  const c = await startCluster({}, { collectable: true });
  t.teardown(() => c.stop('SIGKILL'));
  const pids = await workerPids(c);
  const settledRss = () => settledRssOf(pids);
  const cycle = async (n: number) => {
    const socks = await Promise.all(Array.from({ length: n }, (_, i) => connectWidget(c.port, `soak${i % 7}`, widgetToken(`soak${i % 7}`))));
    await Promise.all(socks.map((s) => s.ask('churn')));
    socks.forEach((s) => s.close());
    await Promise.all(socks.map((s) => s.closed));
  };
  // Warm up until the heaps reach their working size (about 3000 connections per worker).
  for (let i = 0; i < 35; i++) await cycle(200);
  const base = await settledRss();
  const fds0 = await gauge(c, 'gateway_open_fds');
  for (let i = 0; i < 30; i++) await cycle(200);
  await until(async () => (await c.get('/api/v1/stats')).body.total_connections === 0, 5000, 'every socket gone from stats');
  // Deterministic: what the gateway holds per connection is all given back.
  t.equal(await gauge(c, 'gateway_connections'), 0, 'no connection left in the workers\' socket sets');
  await until(async () => (await gauge(c, 'gateway_open_fds')) <= fds0 + 4, 5000, 'descriptors back to the baseline').catch(() => {});
  const fds = await gauge(c, 'gateway_open_fds');
  t.ok(fds <= fds0 + 4, `open descriptors back to the baseline (${fds0} -> ${fds}): no socket leaked`);
  // RSS: reported, and only a gross leak (over 1 KiB per connection that came and went) fails.
  const after = await settledRss();
  const growth = after.reduce((a, v, i) => a + v - base[i]!, 0);
  t.comment(`RSS after 6000 more connections came and went: ${growth} KiB over the warmed-up baseline`);
  t.ok(growth < 6000, `no gross leak: RSS grew ${growth} KiB for 6000 connections that came and went (a leak of 1 KiB each would be 6000)`);
  t.same((await c.get('/api/v1/stats')).body.connections_by_creator, {}, 'no creator left in stats');
});
