/** HTTP routes of one node: health, readiness, stats, broadcast and targeted sends. */
import t from 'tap';
import { startGateway, type TestGateway } from './helpers/gateway.js';
import { connectWidget, connectionId } from './helpers/client.js';
import { serviceToken, widgetToken, signWith } from './helpers/tokens.js';

let g: TestGateway;
t.before(async () => {
  g = await startGateway({ MAX_PAYLOAD_BYTES: '1024' });
});
t.teardown(() => g.close());

function post(path: string, body: string, token?: string) {
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (token) headers.authorization = `Bearer ${token}`;
  return fetch(`http://127.0.0.1:${g.port}${path}`, { method: 'POST', body, headers });
}

void t.test('GET /healthz and /readyz answer 200 while serving', async (t) => {
  t.equal((await fetch(`http://127.0.0.1:${g.port}/healthz`)).status, 200);
  t.equal((await fetch(`http://127.0.0.1:${g.port}/readyz`)).status, 200);
});

void t.test('unknown paths answer 404 JSON', async (t) => {
  const r = await fetch(`http://127.0.0.1:${g.port}/nope`);
  t.equal(r.status, 404);
  t.same(await r.json(), { error: 'Not found' });
});

void t.test('broadcast', async (t) => {
  const a1 = await connectWidget(g.port, 'alice', widgetToken('alice'));
  const a2 = await connectWidget(g.port, 'alice', widgetToken('alice'));
  const b = await connectWidget(g.port, 'bob', widgetToken('bob'));
  t.teardown(() => [a1, a2, b].forEach((c) => c.close()));

  await t.test('202 and every connection of the creator gets the object as one frame', async (t) => {
    const r = await post('/api/v1/creators/alice/broadcast', JSON.stringify({ type: 'announcement', text: 'hi', n: 1 }), serviceToken());
    t.equal(r.status, 202);
    t.match(await r.json(), { status: 'accepted', creator_id: 'alice' });
    t.same(await a1.next(), { type: 'announcement', text: 'hi', n: 1 });
    t.same(await a2.next(), { type: 'announcement', text: 'hi', n: 1 });
    b.send({ type: 'ping' });
    t.same(await b.next(), { type: 'pong' }, 'another creator receives nothing');
  });

  await t.test('a creator-scoped publish token may publish to its own creator only', async (t) => {
    t.equal((await post('/api/v1/creators/alice/broadcast', '{"x":1}', serviceToken({ creator_id: 'alice' }))).status, 202);
    await a1.next();
    await a2.next();
    t.equal((await post('/api/v1/creators/bob/broadcast', '{"x":1}', serviceToken({ creator_id: 'alice' }))).status, 403);
  });

  await t.test('401 without a token or with a bad one', async (t) => {
    t.equal((await post('/api/v1/creators/alice/broadcast', '{}')).status, 401);
    t.equal((await post('/api/v1/creators/alice/broadcast', '{}', 'garbage')).status, 401);
    t.equal((await post('/api/v1/creators/alice/broadcast', '{}', signWith('other-secret-123456789', { scope: 'publish' }))).status, 401);
  });

  await t.test('403 for a valid token without the publish scope', async (t) => {
    t.equal((await post('/api/v1/creators/alice/broadcast', '{}', widgetToken('alice'))).status, 403);
    t.equal((await post('/api/v1/creators/alice/broadcast', '{}', serviceToken({ scope: 'read' }))).status, 403);
  });

  await t.test('scope may be an array', async (t) => {
    t.equal((await post('/api/v1/creators/alice/broadcast', '{"y":2}', serviceToken({ scope: ['read', 'publish'] }))).status, 202);
    await a1.next();
    await a2.next();
  });

  await t.test('400 for a body that is not a JSON object', async (t) => {
    for (const body of ['not json', '[]', '42', '"x"', 'null', '']) {
      const r = await post('/api/v1/creators/alice/broadcast', body, serviceToken());
      t.equal(r.status, 400, JSON.stringify(body));
    }
  });

  await t.test('413 for an oversized body, declared or streamed', async (t) => {
    const big = JSON.stringify({ x: 'z'.repeat(5000) });
    t.equal((await post('/api/v1/creators/alice/broadcast', big, serviceToken())).status, 413);
    const stream = new ReadableStream({
      start(c) {
        c.enqueue(new TextEncoder().encode(big));
        c.close();
      },
    });
    const r = await fetch(`http://127.0.0.1:${g.port}/api/v1/creators/alice/broadcast`, {
      method: 'POST',
      body: stream,
      duplex: 'half',
      headers: { authorization: `Bearer ${serviceToken()}` },
    } as RequestInit);
    t.equal(r.status, 413);
  });

  await t.test('nothing above reached bob', async (t) => {
    b.send({ type: 'ping' });
    t.same(await b.next(), { type: 'pong' });
  });
});

void t.test('targeted send: POST /api/v1/connections/:id/messages', async (t) => {
  const c = await connectWidget(g.port, 'alice', widgetToken('alice'));
  const other = await connectWidget(g.port, 'alice', widgetToken('alice'));
  t.teardown(() => [c, other].forEach((x) => x.close()));
  const r = await post(`/api/v1/connections/${connectionId(c)}/messages`, '{"type":"note","text":"just you"}', serviceToken());
  t.equal(r.status, 202);
  t.same(await c.next(), { type: 'note', text: 'just you' });
  other.send({ type: 'ping' });
  t.same(await other.next(), { type: 'pong' }, 'the other connection got nothing');
  t.equal((await post('/api/v1/connections/no-such-connection/messages', '{}', serviceToken())).status, 404);
  t.equal((await post(`/api/v1/connections/${connectionId(c)}/messages`, '{}')).status, 401);
  t.equal((await post(`/api/v1/connections/${connectionId(c)}/messages`, '{}', serviceToken({ creator_id: 'alice' }))).status, 403,
    'a creator-scoped token cannot address connections by id');
});

void t.test('stats count this node', async (t) => {
  const c = await connectWidget(g.port, 'carol', widgetToken('carol'));
  const s = await (await fetch(`http://127.0.0.1:${g.port}/api/v1/stats`)).json();
  t.equal(s.connections_by_creator.carol, 1);
  t.ok(s.total_connections >= 1);
  c.close();
});
