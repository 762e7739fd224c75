/**
 * The HTTP AI engine client against real HTTP engines: JSON answers,
 * NDJSON and SSE streams, every failure with its own code, the answer-size
 * bound and the deadlines, and cancellation aborting the engine's request.
 */
import t from 'tap';
import http from 'node:http';
import { HttpEngine } from '../src/ai/http.js';
import { GuardedEngine } from '../src/ai/guard.js';
import { EchoEngine } from '../src/ai/echo.js';
import { GatewayError } from '../src/errors.js';

type Handler = (req: http.IncomingMessage, res: http.ServerResponse) => void;

async function engineServer(handler: Handler) {
  const srv = http.createServer(handler);
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address() as { port: number };
  return {
    url: `http://127.0.0.1:${port}/answer`,
    close: () =>
      new Promise<void>((r) => {
        srv.closeAllConnections();
        srv.close(() => r());
      }),
  };
}

const Q = { query: 'q', creator_id: 'alice', session_id: 's' };

/** The code `p` rejects with. */
async function codeOf(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return 'resolved';
  } catch (err) {
    return err instanceof GatewayError ? err.code : `uncoded: ${(err as Error).message}`;
  }
}

/** Writes `pieces` as a stream with `gapMs` between them, then ends (unless `end` is false). */
function streamer(type: string, pieces: Array<string | Buffer>, gapMs = 5, end = true): Handler {
  return (req, res) => {
    req.resume();
    res.writeHead(200, { 'content-type': type });
    let i = 0;
    const next = () => {
      if (i < pieces.length) {
        res.write(pieces[i++]);
        setTimeout(next, gapMs);
      } else if (end) res.end();
    };
    next();
  };
}

const ndjson = (...objs: unknown[]) => objs.map((o) => `${JSON.stringify(o)}\n`);
const sse = (...objs: unknown[]) => objs.map((o) => `data: ${typeof o === 'string' ? o : JSON.stringify(o)}\n\n`);

void t.test('a JSON answer, as before', async (t) => {
  const eng = await engineServer((req, res) => {
    req.resume();
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify({ response: 'hello there', confidence: 0.5, sources: ['a'] }));
  });
  const e = new HttpEngine({ url: eng.url, timeoutMs: 2000, maxInflight: 10 });
  t.teardown(async () => {
    await e.close();
    await eng.close();
  });
  const deltas: string[] = [];
  t.same(await e.ask(Q, { onDelta: (d) => deltas.push(d) }), { response: 'hello there', confidence: 0.5, sources: ['a'] });
  t.same(deltas, [], 'no pieces for a JSON answer');
});

for (const [name, type, body] of [
  ['NDJSON', 'application/x-ndjson', ndjson({ delta: 'Hel' }, { delta: 'lo, ' }, { delta: 'wörld' }, { confidence: 0.9, sources: [{ u: 1 }] })],
  ['SSE', 'text/event-stream', [': a comment\n\n', ...sse({ delta: 'Hel' }, { delta: 'lo, ' }, { delta: 'wörld' }, { confidence: 0.9, sources: [{ u: 1 }] }, '[DONE]')]],
  // A piece split across TCP writes.
  ['NDJSON cut mid-line', 'application/x-ndjson', ['{"delta":"Hel"}\n{"del', 'ta":"lo, "}\n{"delta":"', 'wörld"}\n', '{"confidence":0.9,"sources":[{"u":1}]}\n']],
] as const) {
  void t.test(`a ${name} stream: pieces in order, joined into the answer`, async (t) => {
    const eng = await engineServer(streamer(type, [...body]));
    const e = new HttpEngine({ url: eng.url, timeoutMs: 2000, firstPieceTimeoutMs: 1000, idleTimeoutMs: 1000, maxInflight: 10 });
    t.teardown(async () => {
      await e.close();
      await eng.close();
    });
    const deltas: string[] = [];
    const a = await e.ask(Q, { onDelta: (d) => deltas.push(d) });
    t.same(deltas, ['Hel', 'lo, ', 'wörld']);
    t.same(a, { response: 'Hello, wörld', confidence: 0.9, sources: [{ u: 1 }] });
    t.equal(deltas.join(''), a.response, 'the pieces joined are the answer');
  });
}

void t.test('a multi-byte character split across two TCP writes arrives whole', async (t) => {
  const all = Buffer.from('{"delta":"wö"}\n{"delta":"rld"}\n');
  const cut = all.indexOf(0xc3) + 1; // inside the two bytes of "ö"
  const eng = await engineServer(streamer('application/x-ndjson', [all.subarray(0, cut), all.subarray(cut)], 20));
  const e = new HttpEngine({ url: eng.url, timeoutMs: 2000, maxInflight: 10 });
  t.teardown(async () => {
    await e.close();
    await eng.close();
  });
  const deltas: string[] = [];
  t.equal((await e.ask(Q, { onDelta: (d) => deltas.push(d) })).response, 'wörld');
  t.same(deltas, ['wö', 'rld']);
});

void t.test('every failure has its own code', async (t) => {
  const cases: Array<[string, Handler, Record<string, number>, string]> = [
    ['an HTTP 500', (req, res) => { req.resume(); res.statusCode = 500; res.end('boom'); }, {}, 'GW_ERR_AI_HTTP_STATUS'],
    ['garbage', (req, res) => { req.resume(); res.end('<html>'); }, {}, 'GW_ERR_AI_BAD_ANSWER'],
    ['a wrong shape', (req, res) => { req.resume(); res.end('{"answer":"x"}'); }, {}, 'GW_ERR_AI_BAD_ANSWER'],
    ['a hang', (req) => req.resume(), { timeoutMs: 300 }, 'GW_ERR_AI_TIMEOUT'],
    ['an answer over the size bound', (req, res) => { req.resume(); res.end(`{"response":"${'x'.repeat(200_000)}"}`); }, { maxResponseBytes: 65_536 }, 'GW_ERR_AI_TOO_LARGE'],
    ['a stream with no first piece', streamer('application/x-ndjson', [], 0, false), { firstPieceTimeoutMs: 200 }, 'GW_ERR_AI_TIMEOUT'],
    ['a stream that stalls between pieces', streamer('application/x-ndjson', ndjson({ delta: 'a' }), 0, false), { idleTimeoutMs: 200 }, 'GW_ERR_AI_TIMEOUT'],
    ['a stream with a garbage line', streamer('application/x-ndjson', [...ndjson({ delta: 'a' }), 'not json\n']), {}, 'GW_ERR_AI_BAD_ANSWER'],
    ['a stream with a non-string delta', streamer('text/event-stream', sse({ delta: 7 })), {}, 'GW_ERR_AI_BAD_ANSWER'],
    ['a stream that breaks', (req, res) => {
      req.resume();
      res.writeHead(200, { 'content-type': 'application/x-ndjson' });
      res.write('{"delta":"a"}\n');
      setTimeout(() => res.socket?.destroy(), 20);
    }, {}, 'GW_ERR_AI_UNREACHABLE'],
    ['a stream over the size bound', streamer('application/x-ndjson', Array.from({ length: 100 }, () => `${JSON.stringify({ delta: 'y'.repeat(1000) })}\n`), 0), { maxResponseBytes: 10_000 }, 'GW_ERR_AI_TOO_LARGE'],
  ];
  for (const [name, handler, opts, code] of cases) {
    const eng = await engineServer(handler);
    const e = new HttpEngine({ url: eng.url, timeoutMs: 3000, maxInflight: 10, ...opts });
    t.equal(await codeOf(e.ask(Q, { onDelta: () => {} })), code, name);
    await e.close();
    await eng.close();
  }
  const e = new HttpEngine({ url: 'http://127.0.0.1:1/answer', timeoutMs: 1000, maxInflight: 10 });
  t.equal(await codeOf(e.ask(Q)), 'GW_ERR_AI_UNREACHABLE', 'nothing listening');
  await e.close();
});

void t.test('an engine answering 400 MB: the body is cut at the bound, memory stays flat', async (t) => {
  const eng = await engineServer((req, res) => {
    req.resume();
    res.setHeader('content-type', 'application/json');
    const chunk = Buffer.alloc(1 << 20, 0x78);
    let sent = 0;
    const pump = () => {
      while (sent < 400 && res.write(chunk)) sent++;
      if (sent < 400) res.once('drain', pump);
      else res.end();
    };
    pump();
  });
  const e = new HttpEngine({ url: eng.url, timeoutMs: 10_000, maxInflight: 10, maxResponseBytes: 1 << 20 });
  t.teardown(async () => {
    await e.close();
    await eng.close();
  });
  const before = process.memoryUsage().rss;
  t.equal(await codeOf(e.ask(Q)), 'GW_ERR_AI_TOO_LARGE');
  const grew = (process.memoryUsage().rss - before) / 2 ** 20;
  t.ok(grew < 64, `RSS grew ${grew.toFixed(1)} MiB`);
});

void t.test('cancel aborts the engine request', async (t) => {
  let aborted = false;
  const eng = await engineServer((req, res) => {
    req.resume();
    res.writeHead(200, { 'content-type': 'application/x-ndjson' });
    res.write('{"delta":"a"}\n');
    res.on('close', () => (aborted = !res.writableEnded));
  });
  const e = new HttpEngine({ url: eng.url, timeoutMs: 5000, maxInflight: 10 });
  t.teardown(async () => {
    await e.close();
    await eng.close();
  });
  const ac = new AbortController();
  const p = e.ask(Q, { signal: ac.signal, onDelta: () => ac.abort() });
  t.equal(await codeOf(p), 'GW_ERR_AI_CANCELLED');
  await new Promise((r) => setTimeout(r, 100));
  t.ok(aborted, 'the engine saw its request aborted');
});

void t.test('a request cancelled while it waits for a connection settles at once and never reaches the engine', async (t) => {
  const seen: string[] = [];
  const eng = await engineServer((req, res) => {
    let body = '';
    req.on('data', (d: Buffer) => (body += d));
    req.on('end', () => {
      seen.push((JSON.parse(body) as { query: string }).query);
      res.writeHead(200, { 'content-type': 'application/x-ndjson' });
      res.write('{"delta":"a"}\n');
      setTimeout(() => res.end('{"confidence":1}\n'), 2000);
    });
  });
  const e = new HttpEngine({ url: eng.url, timeoutMs: 5000, maxInflight: 10, connections: 1 });
  t.teardown(async () => {
    await e.close();
    await eng.close();
  });
  const first = e.ask({ ...Q, query: 'first' });
  const ac = new AbortController();
  const started = performance.now();
  const queued = e.ask({ ...Q, query: 'queued' }, { signal: ac.signal });
  setTimeout(() => ac.abort(), 50);
  t.equal(await codeOf(queued), 'GW_ERR_AI_CANCELLED');
  t.ok(performance.now() - started < 1500, 'settled long before the one connection was free (2 s)');
  t.equal((await first).response, 'a', 'the request on the connection went on');
  t.equal(e.inflight, 0, 'both counted out');
  await new Promise((r) => setTimeout(r, 100));
  t.same(seen, ['first'], 'the engine never saw the cancelled request');
});

void t.test('the circuit breaker counts engine failures by code, not saturation or cancels', async (t) => {
  let now = 0;
  const failing = { ask: async () => { throw new GatewayError('GW_ERR_AI_HTTP_STATUS', 'reworded: anything at all'); }, close: async () => {} };
  const g = new GuardedEngine(failing, { maxInflightPerCreator: 10, failureThreshold: 2, cooldownMs: 1000 }, () => now);
  t.equal(await codeOf(g.ask(Q)), 'GW_ERR_AI_HTTP_STATUS');
  t.equal(g.state, 'closed');
  t.equal(await codeOf(g.ask(Q)), 'GW_ERR_AI_HTTP_STATUS');
  t.equal(g.state, 'open', 'two failures open it, whatever their text');
  t.equal(await codeOf(g.ask(Q)), 'GW_ERR_AI_CIRCUIT_OPEN');
  now = 1000;
  t.equal(g.state, 'half-open');
  const cancelled = { ask: async () => { throw new GatewayError('GW_ERR_AI_CANCELLED', 'saturated circuit timed out'); }, close: async () => {} };
  const h = new GuardedEngine(cancelled, { maxInflightPerCreator: 10, failureThreshold: 1, cooldownMs: 1000 }, () => now);
  await codeOf(h.ask(Q));
  t.equal(h.state, 'closed', 'a cancel does not count against the engine (even if its text says "timed out")');
});

void t.test('the echo engine streams word by word, and is instant without a listener or a delay', async (t) => {
  const e = new EchoEngine(10);
  const deltas: string[] = [];
  const a = await e.ask({ ...Q, query: 'one two  three' }, { onDelta: (d) => deltas.push(d) });
  t.same(deltas, ['one ', 'two  ', 'three']);
  t.equal(deltas.join(''), a.response);
  t.same(await new EchoEngine().ask(Q), { response: 'q', confidence: 1, sources: [] });
  deltas.length = 0;
  t.same(await new EchoEngine(0).ask({ ...Q, query: 'one two' }, { onDelta: (d) => deltas.push(d) }), { response: 'one two', confidence: 1, sources: [] });
  t.same(deltas, [], 'no delay: the whole answer at once, no pieces');
});
