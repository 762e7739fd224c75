/**
 * The widget protocol, rule by rule, against one gateway node on a free port.
 */
import t from 'tap';
import http from 'node:http';
import { randomUUID, generateKeyPairSync } from 'node:crypto';
import { createSigner } from 'fast-jwt';
import { startGateway, type TestGateway } from './helpers/gateway.js';
import { Client, connectWidget, widgetUrl } from './helpers/client.js';
import { SECRET, signWith, unsignedToken, widgetToken } from './helpers/tokens.js';
import { CLOSE } from '../src/protocol/close-codes.js';
import { ERRORS } from '../src/protocol/frames.js';

const ISO = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

let g: TestGateway;
t.before(async () => {
  g = await startGateway({ RATE_LIMIT_MESSAGES: '1000' });
});
t.teardown(() => g.close());

async function closeOf(url: string) {
  const c = new Client(url);
  return c.closed;
}

void t.test('authentication at the upgrade', async (t) => {
  await t.test('no token closes with 4001 "Authentication token required"', async (t) => {
    const closed = await closeOf(widgetUrl(g.port, 'alice'));
    t.same(closed, { code: 4001, reason: 'Authentication token required' });
  });

  await t.test('an empty token closes with 4001', async (t) => {
    t.equal((await closeOf(widgetUrl(g.port, 'alice', ''))).code, 4001);
  });

  await t.test('a token for another creator closes with 4003', async (t) => {
    const closed = await closeOf(widgetUrl(g.port, 'alice', widgetToken('bob')));
    t.same(closed, { code: 4003, reason: CLOSE.AUTH_INVALID.reason });
  });

  await t.test('a token without creator_id closes with 4003', async (t) => {
    t.equal((await closeOf(widgetUrl(g.port, 'alice', widgetToken('x', { creator_id: undefined })))).code, 4003);
  });

  await t.test('a wrong signature closes with 4003', async (t) => {
    const tok = signWith('another-secret-0123456789', { creator_id: 'alice' });
    t.equal((await closeOf(widgetUrl(g.port, 'alice', tok))).code, 4003);
  });

  await t.test('a tampered payload closes with 4003', async (t) => {
    const [h, , s] = widgetToken('bob').split('.');
    const forged = `${h}.${Buffer.from(JSON.stringify({ creator_id: 'alice' })).toString('base64url')}.${s}`;
    t.equal((await closeOf(widgetUrl(g.port, 'alice', forged))).code, 4003);
  });

  await t.test('an expired token closes with 4003', async (t) => {
    const tok = signWith(SECRET, { creator_id: 'alice', exp: Math.floor(Date.now() / 1000) - 60 });
    t.equal((await closeOf(widgetUrl(g.port, 'alice', tok))).code, 4003);
  });

  await t.test('a token not yet valid (nbf) closes with 4003', async (t) => {
    const tok = signWith(SECRET, { creator_id: 'alice', nbf: Math.floor(Date.now() / 1000) + 600 });
    t.equal((await closeOf(widgetUrl(g.port, 'alice', tok))).code, 4003);
  });

  await t.test('alg "none" closes with 4003', async (t) => {
    t.equal((await closeOf(widgetUrl(g.port, 'alice', unsignedToken({ creator_id: 'alice' })))).code, 4003);
  });

  await t.test('an algorithm not allowed (HS512 when HS256 is configured) closes with 4003', async (t) => {
    const tok = createSigner({ key: SECRET, algorithm: 'HS512' })({ creator_id: 'alice' });
    t.equal((await closeOf(widgetUrl(g.port, 'alice', tok))).code, 4003);
  });

  await t.test('garbage closes with 4003', async (t) => {
    t.equal((await closeOf(widgetUrl(g.port, 'alice', 'not.a.jwt'))).code, 4003);
  });

  await t.test('an invalid creator id closes with 4003', async (t) => {
    const bad = 'a'.repeat(200);
    t.equal((await closeOf(widgetUrl(g.port, bad, widgetToken(bad)))).code, 4003);
    t.equal((await closeOf(widgetUrl(g.port, 'a%20b', widgetToken('a b')))).code, 4003);
  });

  await t.test('an invalid session id closes with 4400', async (t) => {
    t.equal((await closeOf(widgetUrl(g.port, 'alice', widgetToken('alice'), 'bad session!'))).code, 4400);
    t.equal((await closeOf(widgetUrl(g.port, 'alice', widgetToken('alice'), 'x'.repeat(129)))).code, 4400);
  });

  await t.test('refused sockets leave no state behind', async (t) => {
    t.equal(g.gw.sockets.all.size, 0);
  });
});

void t.test('public-key tokens: RS256 accepted, HS256 signed with the public key refused (key confusion)', async (t) => {
  const { publicKey, privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  const pub = publicKey.export({ type: 'spki', format: 'pem' }).toString();
  const gk = await startGateway({ JWT_SECRET: '', JWT_PUBLIC_KEY: pub });
  t.teardown(() => gk.close());
  const rs = createSigner({ key: privateKey.export({ type: 'pkcs8', format: 'pem' }).toString(), algorithm: 'RS256' })({
    creator_id: 'alice',
  });
  const c = await connectWidget(gk.port, 'alice', rs);
  c.close();
  const confused = createSigner({ key: pub, algorithm: 'HS256' })({ creator_id: 'alice' });
  t.equal((await closeOf(widgetUrl(gk.port, 'alice', confused))).code, 4003);
});

void t.test('connection_status is the first frame', async (t) => {
  await t.test('with the given session id', async (t) => {
    const c = new Client(widgetUrl(g.port, 'alice', widgetToken('alice'), 'sess-1'));
    const f = await c.next();
    t.equal(f.type, 'connection_status');
    t.equal(f.status, 'connected');
    t.equal((f.details as any).session_id, 'sess-1');
    t.match((f.details as any).connection_id, UUID);
    t.match(f.timestamp, ISO);
    c.close();
  });
  await t.test('with a fresh UUID when none is given', async (t) => {
    const c = new Client(widgetUrl(g.port, 'alice', widgetToken('alice')));
    const f = await c.next();
    t.match((f.details as any).session_id, UUID);
    c.close();
  });
});

void t.test('ping gets pong', async (t) => {
  const c = await connectWidget(g.port, 'alice', widgetToken('alice'));
  c.send({ type: 'ping' });
  t.same(await c.next(), { type: 'pong' });
  c.close();
});

void t.test('user_message: typing true, ai_response, typing false', async (t) => {
  const c = await connectWidget(g.port, 'alice', widgetToken('alice'));
  c.send({ type: 'user_message', content: '  hello there  ' });
  const a = await c.next();
  t.match(a, { type: 'typing_indicator', is_typing: true });
  t.match(a.timestamp, ISO);
  const r = await c.next();
  t.equal(r.type, 'ai_response');
  t.equal(r.content, 'hello there', 'the echo engine answers the (trimmed) question');
  t.equal(r.confidence, 1);
  t.same(r.sources, []);
  t.match(r.timestamp, ISO);
  t.match(r.message_id, UUID);
  t.match(await c.next(), { type: 'typing_indicator', is_typing: false });
  c.close();
});

void t.test('answers come in the order the messages were sent', async (t) => {
  const c = await connectWidget(g.port, 'alice', widgetToken('alice'));
  for (let i = 0; i < 10; i++) c.send({ type: 'user_message', content: `m${i}` });
  for (let i = 0; i < 10; i++) t.equal((await c.nextOfType('ai_response')).content, `m${i}`);
  c.close();
});

void t.test('error frames', async (t) => {
  const c = await connectWidget(g.port, 'alice', widgetToken('alice'));
  t.teardown(() => c.close());
  const cases: Array<[string, unknown, string]> = [
    ['empty content', { type: 'user_message', content: '' }, ERRORS.EMPTY],
    ['blank content', { type: 'user_message', content: '   \n ' }, ERRORS.EMPTY],
    ['missing content', { type: 'user_message' }, ERRORS.EMPTY],
    ['non-string content', { type: 'user_message', content: { a: 1 } }, ERRORS.CONTENT_NOT_STRING],
    ['numeric content', { type: 'user_message', content: 42 }, ERRORS.CONTENT_NOT_STRING],
    ['content over MAX_MESSAGE_CHARS (16000)', { type: 'user_message', content: ` ${'x'.repeat(16_001)} ` }, ERRORS.TOO_LONG],
    ['invalid JSON', '{"type": "ping"', ERRORS.INVALID_JSON],
    ['unknown type', { type: 'dance' }, 'Unknown message type: dance'],
    ['missing type', { content: 'x' }, ERRORS.INVALID_MESSAGE],
    ['non-string type', { type: 7 }, ERRORS.INVALID_MESSAGE],
    ['array', '[]', ERRORS.INVALID_MESSAGE],
    ['number', '42', ERRORS.INVALID_MESSAGE],
    ['string', '"x"', ERRORS.INVALID_MESSAGE],
    ['null', 'null', ERRORS.INVALID_MESSAGE],
  ];
  for (const [name, frame, error] of cases) {
    void t.test(name, async (t) => {
      c.send(frame);
      const f = await c.next();
      t.equal(f.type, 'error');
      t.equal(f.error, error);
      t.match(f.timestamp, ISO);
    });
  }
  await t.test('no typing indicator follows an error that had none before it', async (t) => {
    c.send({ type: 'user_message', content: '' });
    await c.nextOfType('error');
    c.send({ type: 'ping' });
    t.same(await c.next(), { type: 'pong' }, 'the next frame is the pong, not typing_indicator false');
  });
});

void t.test('rate limit: the message over the limit gets "Rate limit exceeded", and the session keeps it across reconnects', async (t) => {
  const gr = await startGateway({ RATE_LIMIT_MESSAGES: '3', RATE_LIMIT_WINDOW_S: '60' });
  t.teardown(() => gr.close());
  const c = await connectWidget(gr.port, 'alice', widgetToken('alice'), 'limited');
  for (let i = 0; i < 3; i++) await c.ask(`q${i}`);
  c.send({ type: 'user_message', content: 'one too many' });
  const e = await c.next();
  t.match(e, { type: 'error', error: ERRORS.RATE_LIMITED });
  c.send({ type: 'ping' });
  t.same(await c.next(), { type: 'pong' }, 'no typing_indicator false after the rate-limit error');
  c.close();
  await c.closed;
  const again = await connectWidget(gr.port, 'alice', widgetToken('alice'), 'limited');
  again.send({ type: 'user_message', content: 'after reconnect' });
  t.match(await again.next(), { type: 'error', error: ERRORS.RATE_LIMITED });
  again.close();
  const other = await connectWidget(gr.port, 'alice', widgetToken('alice'), 'other-session');
  t.equal((await other.ask('fine')).content, 'fine', 'another session has its own budget');
  other.close();
});

/** A real HTTP AI engine on a free port whose behaviour each test sets. */
async function engineServer(handler: http.RequestListener) {
  const srv = http.createServer(handler);
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const { port } = srv.address() as { port: number };
  return {
    url: `http://127.0.0.1:${port}/answer`,
    close: () => new Promise<void>((r) => { srv.closeAllConnections(); srv.close(() => r()); }),
  };
}

void t.test('HTTP AI engine', async (t) => {
  await t.test('posts {query, creator_id, session_id} and relays the answer', async (t) => {
    let seen: any;
    const eng = await engineServer((req, res) => {
      let b = '';
      req.on('data', (d) => (b += d));
      req.on('end', () => {
        seen = JSON.parse(b);
        res.setHeader('content-type', 'application/json');
        res.end(JSON.stringify({ response: 'from engine', confidence: 0.75, sources: [{ url: 'https://x' }] }));
      });
    });
    const ge = await startGateway({ AI_ENGINE_URL: eng.url });
    t.teardown(async () => { await ge.close(); await eng.close(); });
    const c = await connectWidget(ge.port, 'alice', widgetToken('alice'), 's1');
    const r = await c.ask('what?');
    t.same(seen, { query: 'what?', creator_id: 'alice', session_id: 's1' });
    t.match(r, { content: 'from engine', confidence: 0.75, sources: [{ url: 'https://x' }] });
    c.close();
  });

  for (const [name, handler, reason] of [
    ['an HTTP 500', (_req: http.IncomingMessage, res: http.ServerResponse) => { res.statusCode = 500; res.end('boom'); }, 'http_status'],
    ['garbage', (_req: http.IncomingMessage, res: http.ServerResponse) => res.end('<html>'), 'bad_answer'],
    ['a wrong shape', (_req: http.IncomingMessage, res: http.ServerResponse) => res.end('{"answer":"x"}'), 'bad_answer'],
    ['a hang (time-out)', () => {}, 'timeout'],
    ['an answer over AI_ENGINE_MAX_RESPONSE_BYTES', (_req: http.IncomingMessage, res: http.ServerResponse) => res.end(`{"response":"${'x'.repeat(100_000)}"}`), 'too_large'],
  ] as const) {
    void t.test(`${name} gives "Failed to process message" then typing false, counted as ${reason}`, async (t) => {
      const eng = await engineServer(handler);
      const ge = await startGateway({ AI_ENGINE_URL: eng.url, AI_ENGINE_TIMEOUT_MS: '300', AI_ENGINE_MAX_RESPONSE_BYTES: '65536' });
      t.teardown(async () => { await ge.close(); await eng.close(); });
      const c = await connectWidget(ge.port, 'alice', widgetToken('alice'));
      c.send({ type: 'user_message', content: 'q' });
      t.match(await c.next(), { type: 'typing_indicator', is_typing: true });
      t.match(await c.next(), { type: 'error', error: ERRORS.FAILED });
      t.match(await c.next(), { type: 'typing_indicator', is_typing: false });
      const m = await fetch(`http://127.0.0.1:${ge.port}/metrics`).then((r) => r.text());
      t.match(m, new RegExp(`gateway_ai_failures_total\\{reason="${reason}"\\} 1`), `counted as ${reason}`);
      c.close();
    });
  }

  await t.test('a bounded per-connection queue refuses the excess with an error frame', async (t) => {
    const eng = await engineServer((req, res) => {
      req.resume();
      setTimeout(() => res.end('{"response":"slow","confidence":1,"sources":[]}'), 300);
    });
    const ge = await startGateway({ AI_ENGINE_URL: eng.url, MAX_QUEUED_MESSAGES: '2' });
    t.teardown(async () => { await ge.close(); await eng.close(); });
    const c = await connectWidget(ge.port, 'alice', widgetToken('alice'));
    for (let i = 0; i < 4; i++) c.send({ type: 'user_message', content: `m${i}` });
    // m0 goes to the engine at once, m1 and m2 wait, m3 is refused.
    t.match(await c.nextOfType('error'), { error: ERRORS.QUEUE_FULL });
    const answers = [];
    for (let i = 0; i < 3; i++) answers.push((await c.nextOfType('ai_response', 5000)).content);
    t.same(answers, ['slow', 'slow', 'slow']);
    c.close();
  });
});

void t.test('a client that closes while its answer is pending does not disturb the gateway', async (t) => {
  const eng = await engineServer((req, res) => {
    req.resume();
    setTimeout(() => res.end('{"response":"late","confidence":1,"sources":[]}'), 200);
  });
  const ge = await startGateway({ AI_ENGINE_URL: eng.url });
  t.teardown(async () => { await ge.close(); await eng.close(); });
  const c = await connectWidget(ge.port, 'alice', widgetToken('alice'));
  c.send({ type: 'user_message', content: 'q' });
  await c.nextOfType('typing_indicator');
  c.ws.terminate();
  await new Promise((r) => setTimeout(r, 400));
  const d = await connectWidget(ge.port, 'alice', widgetToken('alice'));
  t.equal((await d.ask('still here')).content, 'late');
  d.close();
});

void t.test('session ids may repeat across tabs; each socket has its own connection id', async (t) => {
  const s = randomUUID();
  const a = new Client(widgetUrl(g.port, 'alice', widgetToken('alice'), s));
  const b = new Client(widgetUrl(g.port, 'alice', widgetToken('alice'), s));
  const fa = await a.next();
  const fb = await b.next();
  t.not((fa.details as any).connection_id, (fb.details as any).connection_id);
  a.close();
  b.close();
});
