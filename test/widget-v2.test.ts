/**
 * widget.v2 (issues "Nothing lost" and "AI answers streamed"), on
 * in-process gateways: offsets on recoverable frames, positions in
 * connection_status, resume without gap or duplicate, continuity_lost,
 * client_message_id answered once, streamed answers, cancel, and widget.v1
 * clients seeing nothing new.
 */
import t from 'tap';
import WebSocket from 'ws';
import { startGateway, type TestGateway } from './helpers/gateway.js';
import { MemoryHub } from '../src/bus/memory.js';
import { connectWidget, Client, widgetUrl, type Frame } from './helpers/client.js';
import { V2Client } from './helpers/v2.js';
import { serviceToken, signWith, SECRET, widgetToken } from './helpers/tokens.js';
import { sleep } from './helpers/net.js';
import type { AiEngine, AskOptions, Query } from '../src/ai/engine.js';
import { GatewayError } from '../src/errors.js';
import { ERRORS } from '../src/protocol/frames.js';

/** An engine the test steers: counts questions, answers after `delayMs`, streams `pieces` when asked to. */
class TestEngine implements AiEngine {
  asked: Query[] = [];
  delayMs = 0;
  /** Pieces of a streamed answer, and the pause between them. */
  pieces: string[] | undefined;
  gapMs = 5;
  aborted = 0;

  async ask(q: Query, o: AskOptions = {}) {
    this.asked.push(q);
    const pieces = this.pieces;
    if (!pieces) {
      if (this.delayMs) await sleep(this.delayMs);
      return { response: `re: ${q.query}`, confidence: 0.5, sources: [] };
    }
    let sent = '';
    for (const p of pieces) {
      if (o.signal?.aborted) {
        this.aborted++;
        throw new GatewayError('GW_ERR_AI_CANCELLED', 'cancelled');
      }
      // gapMs 0: as fast as the event loop turns (each piece its own turn).
      await (this.gapMs > 0 ? sleep(this.gapMs) : new Promise((r) => setImmediate(r)));
      if (o.signal?.aborted) {
        this.aborted++;
        throw new GatewayError('GW_ERR_AI_CANCELLED', 'cancelled');
      }
      sent += p;
      o.onDelta?.(p);
    }
    return { response: sent, confidence: 0.9, sources: ['s'] };
  }

  async close() {}
}

const engine = new TestEngine();
let g: TestGateway;
let base: string;
t.before(async () => {
  g = await startGateway({ RATE_LIMIT_MESSAGES: '100000', HISTORY_SIZE: '50' }, new MemoryHub(), undefined, engine);
  base = `ws://127.0.0.1:${g.port}`;
});
t.teardown(() => g.close());

const post = (path: string, body: unknown) =>
  fetch(`http://127.0.0.1:${g.port}${path}`, { method: 'POST', headers: { authorization: `Bearer ${serviceToken()}` }, body: JSON.stringify(body) });

const ask = (c: V2Client, content: string, extra: Record<string, unknown> = {}) => c.send({ type: 'user_message', content, ...extra });

void t.test('offering widget.v2: the server answers it; connection_status gives both streams', async (t) => {
  const c = new V2Client(base, 'neg', widgetToken('neg'));
  const st = await c.connect();
  t.equal(c.protocol, 'widget.v2');
  t.match(st.details, { session_id: String, connection_id: String, streams: { session: { epoch: /^[0-9a-f]{16}[0-9a-z]+$/, offset: 0 }, broadcast: { epoch: String, offset: 0 } } });
  t.notOk('recovered' in (st.details as object), 'no resume asked, no recovered field');
  c.close();
});

void t.test('recoverable frames carry offsets; ephemeral ones do not; v1 sockets see the seed\'s frames', async (t) => {
  const c = new V2Client(base, 'off', widgetToken('off'));
  await c.connect();
  const v1 = await connectWidget(g.port, 'off', widgetToken('off'));
  ask(c, 'hi');
  const typing = await c.next((f) => f.type === 'typing_indicator');
  t.notOk('offset' in typing, 'typing has no offset');
  const a = await c.next((f) => f.type === 'ai_response');
  t.match(a, { type: 'ai_response', offset: 1, content: 're: hi', message_id: String });
  c.ws.send('not json');
  t.match(await c.next((f) => f.type === 'error'), { type: 'error', offset: 2, error: ERRORS.INVALID_JSON });
  c.send({ type: 'ping' });
  t.same(await c.next((f) => f.type === 'pong'), { type: 'pong' }, 'pong is ephemeral');

  t.equal((await post('/api/v1/creators/off/broadcast', { type: 'news', n: 1 })).status, 202);
  t.same(await c.next((f) => f.type === 'broadcast'), { type: 'broadcast', offset: 1, data: { type: 'news', n: 1 } });
  t.same(await v1.next(), { type: 'news', n: 1 }, 'a v1 socket gets the broadcast as POSTed');

  const id = (c.status!.details as { connection_id: string }).connection_id;
  t.equal((await post(`/api/v1/connections/${id}/messages`, { type: 'dm', x: 1 })).status, 202);
  t.same(await c.next((f) => f.type === 'message'), { type: 'message', offset: 3, data: { type: 'dm', x: 1 } }, 'a targeted send is in the session stream');
  c.close();
  v1.close();
});

void t.test('resume: what was published while away comes first, in order, then live; no gap, no duplicate', async (t) => {
  const c = new V2Client(base, 'res', widgetToken('res'), 'res-1');
  await c.connect();
  for (let i = 1; i <= 5; i++) await post('/api/v1/creators/res/broadcast', { n: i });
  await c.next((f) => f.type === 'broadcast' && f.offset === 5);
  c.cut();
  await sleep(50);
  for (let i = 6; i <= 10; i++) await post('/api/v1/creators/res/broadcast', { n: i });
  ask(c, 'while away?'); // the socket is gone: this is not sent; but answers to others are
  const st = await c.connect();
  t.same((st.details as { recovered: object }).recovered, { session: true, broadcast: true });
  await post('/api/v1/creators/res/broadcast', { n: 11 });
  await c.next((f) => f.type === 'broadcast' && f.offset === 11);
  t.same(c.offsets('broadcast'), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11], 'every offset exactly once, in order');
  t.same(c.frames.filter((f) => f.type === 'broadcast').map((f) => (f.data as { n: number }).n), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
  c.close();
});

void t.test('replay=batch: a resume comes in `replay` frames (each frame inside as it would have come alone, in order), then live; without it, a frame at a time', async (t) => {
  const c = new V2Client(base, 'rb', widgetToken('rb'), 'rb-1');
  await c.connect();
  const epoch = c.broadcast!.epoch;
  for (let i = 1; i <= 30; i++) await post('/api/v1/creators/rb/broadcast', { n: i, pad: 'x'.repeat(3000) }); // 30 frames of ~3 KB: more than one batch of 64 KiB
  await c.next((f) => f.type === 'broadcast' && f.offset === 30);
  c.close();
  const b = new V2Client(base, 'rb', widgetToken('rb'));
  const st = await b.connect({ extra: { resume_broadcast: `${epoch}:3`, replay: 'batch' } });
  t.same((st.details as { recovered: object }).recovered, { broadcast: true });
  await b.next((f) => f.type === 'broadcast' && f.offset === 30);
  await post('/api/v1/creators/rb/broadcast', { n: 31 });
  await b.next((f) => f.type === 'broadcast' && f.offset === 31);
  t.same(b.offsets('broadcast'), Array.from({ length: 28 }, (_, i) => i + 4), 'offsets 4..31, each once, in order');
  t.ok(b.replays.length >= 2 && b.replays.every((r) => r.stream === 'broadcast'), `the 27 replayed frames came in ${b.replays.length} replay frames of the broadcast stream`);
  t.equal(b.replays.reduce((a, r) => a + r.frames, 0), 27, 'the live frame came alone, after them');
  t.same(b.frames.filter((f) => f.type === 'broadcast').map((f) => (f.data as { n: number }).n), Array.from({ length: 28 }, (_, i) => i + 4), 'each frame inside as POSTed');
  b.close();
  const one = new V2Client(base, 'rb', widgetToken('rb'));
  await one.connect({ extra: { resume_broadcast: `${epoch}:25`, replay: 'frames' } });
  await one.next((f) => f.type === 'broadcast' && f.offset === 31);
  t.same([one.replays.length, one.offsets('broadcast')], [0, [26, 27, 28, 29, 30, 31]], 'replay=frames (the default): one frame at a time');
  one.close();
  for (const v of ['batches', 'x'.repeat(100), '1']) {
    const ws = new WebSocket(`${base}/api/v1/channels/widget/rb/connect?replay=${encodeURIComponent(v)}`, ['widget.v2', `bearer.${widgetToken('rb')}`]);
    ws.on('error', () => {});
    const [code, reason] = await new Promise<[number, string]>((r) => ws.on('close', (c, why) => r([c, why.toString()])));
    t.same([code, reason], [4400, 'Invalid replay mode'], `replay=${v.slice(0, 12)}`);
  }
  // A small slow-consumer limit: the batches stay within half of it, and a client that reads gets everything, never 4009.
  const small = await startGateway({ RATE_LIMIT_MESSAGES: '100000', HISTORY_SIZE: '50', MAX_BACKPRESSURE_BYTES: '16384' }, new MemoryHub(), undefined, engine);
  t.teardown(() => small.close());
  const first = new V2Client(`ws://127.0.0.1:${small.port}`, 'rb', widgetToken('rb'));
  await first.connect();
  const e2 = first.broadcast!.epoch;
  first.close();
  for (let i = 1; i <= 30; i++) await fetch(`http://127.0.0.1:${small.port}/api/v1/creators/rb/broadcast`, { method: 'POST', headers: { authorization: `Bearer ${serviceToken()}` }, body: JSON.stringify({ n: i, pad: 'x'.repeat(3000) }) });
  const paced = new V2Client(`ws://127.0.0.1:${small.port}`, 'rb', widgetToken('rb'));
  await paced.connect({ extra: { resume_broadcast: `${e2}:0`, replay: 'batch' } });
  await paced.next((f) => f.type === 'broadcast' && f.offset === 30);
  t.same([paced.offsets('broadcast').length, paced.closes.length], [30, 0], 'MAX_BACKPRESSURE_BYTES=16384: all 30 frames, no close');
  t.ok(paced.replays.length >= 10, `in ${paced.replays.length} replay frames of at most 8 KiB`);
  paced.close();
  const v1 = new Client(`${widgetUrl(g.port, 'rb', widgetToken('rb'))}&replay=nonsense`);
  t.match(await v1.nextOfType('connection_status'), { type: 'connection_status' }, 'widget.v1 ignores the parameter');
  v1.close();
});

void t.test('an answer that arrives after the socket was cut is kept, and a resume gets it exactly once', async (t) => {
  engine.delayMs = 300;
  const c = new V2Client(base, 'cut', widgetToken('cut'), 'cut-1');
  await c.connect();
  ask(c, 'slow one');
  await c.next((f) => f.type === 'typing_indicator');
  c.cut();
  await sleep(500); // the engine answers meanwhile
  engine.delayMs = 0;
  await c.connect();
  const answers = c.frames.filter((f) => f.type === 'ai_response');
  t.equal(answers.length, 1, 'the answer came with the resume');
  t.match(answers[0], { content: 're: slow one', offset: 1 });
  await sleep(100);
  t.equal(c.frames.filter((f) => f.type === 'ai_response').length, 1, 'and only once');
  c.close();
});

void t.test('continuity_lost: an old epoch, an offset below the kept window, or from the future', async (t) => {
  const c = new V2Client(base, 'lost', widgetToken('lost'), 'lost-1');
  await c.connect();
  const epoch = c.broadcast!.epoch;
  for (let i = 1; i <= 60; i++) await post('/api/v1/creators/lost/broadcast', { n: i }); // HISTORY_SIZE is 50
  await c.next((f) => f.type === 'broadcast' && f.offset === 60);
  c.close();
  for (const [what, pos] of [
    ['another epoch', 'ffffffffffffffff:3'],
    ['below the kept window', `${epoch}:2`],
    ['beyond the top', `${epoch}:999`],
  ] as const) {
    const d = new V2Client(base, 'lost', widgetToken('lost'));
    const from = d.frames.length;
    const st = await d.connect({ extra: { resume_broadcast: pos } });
    t.same((st.details as { recovered: object }).recovered, { broadcast: false }, what);
    t.same(await d.next((f) => f.type === 'continuity_lost', 2000, from), { type: 'continuity_lost', stream: 'broadcast', epoch, offset: 60 }, `${what}: told, with the current top`);
    t.equal(d.frames.filter((f) => f.type === 'broadcast').length, 0, 'and nothing replayed');
    d.close();
  }
  const ok = new V2Client(base, 'lost', widgetToken('lost'));
  const st = await ok.connect({ extra: { resume_broadcast: `${epoch}:10` } });
  t.same((st.details as { recovered: object }).recovered, { broadcast: true }, 'the oldest kept position still recovers');
  await ok.next((f) => f.type === 'broadcast' && f.offset === 60);
  t.same(ok.offsets('broadcast'), Array.from({ length: 50 }, (_, i) => i + 11));
  ok.close();
});

void t.test('hostile resume values: 4400 "Invalid resume position", the process unharmed', async (t) => {
  for (const v of ['-1', 'abc', ':5', 'e:-3', 'e:1.5', 'e:99999999999999999', 'e'.repeat(65) + ':1', 'ok:1:2x', '%00:1']) {
    const ws = new WebSocket(`${base}/api/v1/channels/widget/h/connect?resume_session=${encodeURIComponent(v)}`, ['widget.v2', `bearer.${widgetToken('h')}`]);
    ws.on('error', () => {});
    const [code, reason] = await new Promise<[number, string]>((r) => ws.on('close', (c, why) => r([c, why.toString()])));
    t.same([code, reason], [4400, 'Invalid resume position'], v);
  }
  const huge = new WebSocket(`${base}/api/v1/channels/widget/h/connect?resume_broadcast=${'x'.repeat(10_000)}:1`, ['widget.v2', `bearer.${widgetToken('h')}`]);
  const outcome = await new Promise<string>((r) => {
    huge.on('unexpected-response', (_q, res) => r(`HTTP ${res.statusCode}`));
    huge.on('close', (c) => r(`close ${c}`));
    huge.on('error', () => {});
  });
  t.match(outcome, /^(HTTP 4\d\d|close 4400|close 1006)$/, `a 10 KB value: ${outcome}`);
  const c = new V2Client(base, 'h', widgetToken('h'));
  await c.connect();
  t.pass('the gateway serves on');
  c.close();
});

void t.test('client_message_id: a retry is not sent to the engine again; the client gets the original answer', async (t) => {
  const c = new V2Client(base, 'cm', widgetToken('cm'), 'cm-1');
  await c.connect();
  const before = engine.asked.length;
  ask(c, 'once please', { client_message_id: 'm-1' });
  const first = await c.next((f) => f.type === 'ai_response');
  t.equal(first.client_message_id, 'm-1');
  c.cut();
  const other = new V2Client(base, 'cm', widgetToken('cm'), 'cm-1');
  await other.connect();
  const from = other.frames.length;
  ask(other, 'once please', { client_message_id: 'm-1' });
  const again = await other.next((f) => f.type === 'ai_response', 3000, from);
  t.same(again, first, 'the very same frame: message id, offset, content');
  t.equal(engine.asked.length - before, 1, 'the engine was asked once');
  ask(other, 'x', { client_message_id: 12 });
  t.match(await other.next((f) => f.type === 'error', 2000, from), { error: ERRORS.BAD_CMID });
  other.close();
});

void t.test('an expired token: 4001 "Token expired" for widget.v2 (v1 keeps 4003)', async (t) => {
  const expired = signWith(SECRET, { creator_id: 'x', exp: Math.floor(Date.now() / 1000) - 60 });
  const v2 = new WebSocket(`${base}/api/v1/channels/widget/x/connect`, ['widget.v2', `bearer.${expired}`]);
  v2.on('error', () => {});
  t.same(await new Promise((r) => v2.on('close', (c, why) => r([c, why.toString()]))), [4001, 'Token expired']);
  const v1 = new Client(widgetUrl(g.port, 'x', expired));
  t.same(await v1.closed, { code: 4003, reason: 'Invalid or unauthorized token' });
});

void t.test('HISTORY_SIZE=0: widget.v2 is not offered; a client that also offers widget.v1 gets it', async (t) => {
  const off = await startGateway({ HISTORY_SIZE: '0' });
  t.teardown(() => off.close());
  const c = new V2Client(`ws://127.0.0.1:${off.port}`, 'h0', widgetToken('h0'));
  const st = await c.connect({ protocols: ['widget.v2', 'widget.v1'] });
  t.equal(c.protocol, 'widget.v1', 'the server picks widget.v1');
  t.notOk('streams' in (st.details as object));
  c.close();
});

void t.test('streamed answers (widget.v2): chunks in order, deltas adding up to the final content; v1 sees only the final frame', async (t) => {
  engine.pieces = ['Hel', 'lo', ', ', 'wör', 'ld', '!'];
  t.teardown(() => (engine.pieces = undefined));
  const c = new V2Client(base, 'st', widgetToken('st'), 'st-1');
  await c.connect();
  const tab = new V2Client(base, 'st', widgetToken('st'), 'st-1');
  await tab.connect();
  const v1 = await connectWidget(g.port, 'st', widgetToken('st'), 'st-1');
  ask(c, 'stream it');
  const final = await c.next((f) => f.type === 'ai_response');
  const chunks = c.frames.filter((f) => f.type === 'ai_response_chunk');
  t.ok(chunks.length >= 2, `${chunks.length} chunks`);
  t.ok(chunks.every((x) => x.message_id === final.message_id), 'one message id');
  let text = '';
  for (const x of chunks) {
    t.equal(x.index, text.length, 'each delta starts where the last ended');
    text += x.delta as string;
  }
  t.equal(text, final.content, 'the deltas joined are the final content');
  t.equal(final.content, 'Hello, wörld!');
  const order = c.frames.map((f) => f.type).filter((x) => x !== 'connection_status');
  t.same(order.slice(0, 1), ['typing_indicator']);
  t.same(order.slice(-2), ['ai_response', 'typing_indicator'], 'typing true first, final answer, typing false last');
  const tabFinal = await tab.next((f) => f.type === 'ai_response');
  t.equal(tab.frames.filter((f) => f.type === 'ai_response_chunk').map((x) => x.delta).join(''), tabFinal.content, 'another tab of the session gets the chunks too');
  v1.ask('stream it for v1').then(
    (a) => t.equal(a.content, 'Hello, wörld!', 'v1: typing, the final ai_response, typing - nothing else'),
    (err) => t.fail(String(err)),
  );
  await sleep(300);
  t.notOk(v1.inbox.some((f: Frame) => f.type === 'ai_response_chunk'), 'no chunk ever reaches a v1 socket');
  for (const x of [c, tab]) x.close();
  v1.close();
});

void t.test('a socket that joins mid-answer gets the text so far as one chunk, then the rest live', async (t) => {
  engine.pieces = Array.from({ length: 20 }, (_, i) => `w${i} `);
  engine.gapMs = 20;
  t.teardown(() => {
    engine.pieces = undefined;
    engine.gapMs = 5;
  });
  const c = new V2Client(base, 'mid', widgetToken('mid'), 'mid-1');
  await c.connect();
  const before = engine.asked.length;
  ask(c, 'long one');
  await c.next((f) => f.type === 'ai_response_chunk' && (f.delta as string).includes('w3'));
  c.cut();
  await sleep(60);
  const from = c.frames.length;
  await c.connect();
  const final = await c.next((f) => f.type === 'ai_response', 5000, from);
  const after = c.frames.slice(from).filter((f) => f.type === 'ai_response_chunk');
  t.equal(after[0]!.index, 0, 'the first chunk after the reconnect starts at 0: the text so far');
  t.ok((after[0]!.delta as string).startsWith('w0 w1 w2 w3'), 'with everything said before the cut');
  t.equal(after.map((x) => x.delta).join(''), final.content, 'then the rest, adding up to the final content');
  t.equal(engine.asked.length - before, 1, 'the engine was not asked again');
  c.close();
});

void t.test('cancel: the engine request is aborted; the answer ends with what was sent and "cancelled": true', async (t) => {
  engine.pieces = Array.from({ length: 50 }, (_, i) => `p${i} `);
  engine.gapMs = 20;
  t.teardown(() => {
    engine.pieces = undefined;
    engine.gapMs = 5;
  });
  const c = new V2Client(base, 'cx', widgetToken('cx'), 'cx-1');
  await c.connect();
  const aborted = engine.aborted;
  ask(c, 'go on and on');
  const first = await c.next((f) => f.type === 'ai_response_chunk');
  c.send({ type: 'cancel', message_id: first.message_id });
  const final = await c.next((f) => f.type === 'ai_response');
  t.equal(final.cancelled, true);
  t.equal(final.message_id, first.message_id);
  t.equal(c.frames.filter((f) => f.type === 'ai_response_chunk').map((x) => x.delta).join(''), final.content, 'what was sent so far');
  t.ok((final.content as string).length < 50 * 4, 'cut short');
  t.equal(engine.aborted - aborted, 1, 'the engine saw the abort');
  c.send({ type: 'cancel', message_id: first.message_id });
  t.match(await c.next((f) => f.type === 'error'), { error: ERRORS.CANCEL_UNKNOWN }, 'cancelling a finished answer is a clear error');
  c.close();
  const v1 = await connectWidget(g.port, 'cx', widgetToken('cx'));
  v1.send({ type: 'cancel', message_id: 'x' });
  t.match(await v1.next(), { type: 'error', error: 'Unknown message type: cancel' }, 'v1 is unchanged');
  v1.close();
});

/** A real HTTP engine in this process: `handler` per test. */
async function httpEngine(handler: (req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse) => void) {
  const http = await import('node:http');
  const srv = http.createServer(handler);
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(srv.address() as { port: number }).port}/answer`,
    close: () => new Promise<void>((r) => { srv.closeAllConnections(); srv.close(() => r()); }),
  };
}

void t.test('a real HTTP engine streaming: SSE relayed; a broken, stalled or garbled stream ends in "Failed to process message"; cancel aborts the request', async (t) => {
  let mode = 'sse';
  let aborted = false;
  const eng = await httpEngine((req, res) => {
    req.resume();
    const ndjson = (o: unknown) => `${JSON.stringify(o)}\n`;
    switch (mode) {
      case 'sse': {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        const parts = ['One', ', two', ', three.'];
        let i = 0;
        const tick = () => {
          if (i < parts.length) {
            res.write(`data: ${JSON.stringify({ delta: parts[i++] })}\n\n`);
            setTimeout(tick, 10);
          } else res.end(`data: ${JSON.stringify({ confidence: 0.7, sources: [{ id: 1 }] })}\n\ndata: [DONE]\n\n`);
        };
        tick();
        break;
      }
      case 'broken':
        res.writeHead(200, { 'content-type': 'application/x-ndjson' });
        res.write(ndjson({ delta: 'half an ans' }));
        setTimeout(() => res.socket?.destroy(), 30);
        break;
      case 'stall':
        res.writeHead(200, { 'content-type': 'application/x-ndjson' });
        res.write(ndjson({ delta: 'then nothing' }));
        break;
      case 'garbage':
        res.writeHead(200, { 'content-type': 'application/x-ndjson' });
        res.write(ndjson({ delta: 'ok so far' }));
        res.end('<html>oops</html>\n');
        break;
      case 'endless':
        res.writeHead(200, { 'content-type': 'application/x-ndjson' });
        res.on('close', () => (aborted = !res.writableEnded));
        {
          const iv = setInterval(() => (res.destroyed ? clearInterval(iv) : res.write(ndjson({ delta: 'more ' }))), 10);
        }
        break;
    }
  });
  const ge = await startGateway({ AI_ENGINE_URL: eng.url, AI_ENGINE_IDLE_TIMEOUT_MS: '300', AI_ENGINE_TIMEOUT_MS: '5000', HISTORY_SIZE: '50' });
  t.teardown(async () => {
    await ge.close();
    await eng.close();
  });
  const c = new V2Client(`ws://127.0.0.1:${ge.port}`, 'he', widgetToken('he'), 'he-1');
  await c.connect();
  const v1 = await connectWidget(ge.port, 'he', widgetToken('he'));

  let from = c.frames.length;
  c.send({ type: 'user_message', content: 'sse please' });
  const final = await c.next((f) => f.type === 'ai_response', 3000, from);
  t.match(final, { content: 'One, two, three.', confidence: 0.7, sources: [{ id: 1 }] });
  t.equal(c.frames.slice(from).filter((f) => f.type === 'ai_response_chunk').map((x) => x.delta).join(''), final.content, 'SSE chunks add up');
  t.match(await v1.ask('sse for v1'), { content: 'One, two, three.' }, 'v1 gets the final frame only');

  for (const m of ['broken', 'stall', 'garbage']) {
    mode = m;
    from = c.frames.length;
    c.send({ type: 'user_message', content: m });
    const err = await c.next((f) => f.type === 'error', 3000, from);
    const chunks = c.frames.slice(from).filter((f) => f.type === 'ai_response_chunk');
    if (m === 'garbage' && chunks.length === 0) {
      // The pieces and the garbage came in one read: nothing was relayed, so there is nothing to discard.
      t.match(err, { error: ERRORS.FAILED, message_id: undefined }, `${m}: "Failed to process message", naming no answer (no chunk left)`);
      await c.next((f) => f.type === 'typing_indicator' && f.is_typing === false, 2000, from);
      continue;
    }
    t.match(err, { error: ERRORS.FAILED, message_id: String }, `${m}: "Failed to process message", naming the answer whose chunks to discard`);
    t.ok(chunks.length >= 1 && chunks.every((x) => x.message_id === err.message_id), `${m}: the chunks it had sent belong to it`);
    await c.next((f) => f.type === 'typing_indicator' && f.is_typing === false, 2000, from);
  }

  mode = 'endless';
  from = c.frames.length;
  c.send({ type: 'user_message', content: 'never ends' });
  const chunk = await c.next((f) => f.type === 'ai_response_chunk', 3000, from);
  c.send({ type: 'cancel', message_id: chunk.message_id });
  const cancelled = await c.next((f) => f.type === 'ai_response', 3000, from);
  t.equal(cancelled.cancelled, true);
  await sleep(100);
  t.ok(aborted, 'the engine saw its HTTP request aborted');
  const m = await fetch(`http://127.0.0.1:${ge.port}/metrics`).then((r) => r.text());
  t.match(m, /gateway_ai_failures_total\{reason="unreachable"\} 1/, 'the broken stream counted');
  t.match(m, /gateway_ai_failures_total\{reason="timeout"\} 1/, 'the stall counted');
  t.match(m, /gateway_ai_failures_total\{reason="bad_answer"\} 1/, 'the garbage counted');
  c.close();
  v1.close();
});
