/**
 * The msgpack subprotocol: binary MessagePack frames in and out, the same
 * shapes and errors as JSON, in every validation mode, for broadcasts and
 * targeted sends across nodes; JSON stays the default.
 */
import t from 'tap';
import WebSocket from 'ws';
import { pack, unpack } from 'msgpackr';
import { startGateway, type TestGateway } from './helpers/gateway.js';
import { connectWidget, widgetUrl } from './helpers/client.js';
import { serviceToken, widgetToken } from './helpers/tokens.js';
import { MemoryHub } from '../src/bus/memory.js';
import { startCluster } from './helpers/cluster.js';
import { ERRORS } from '../src/protocol/frames.js';

interface Frame {
  type: string;
  [k: string]: unknown;
}

/** A client that chose `msgpack`: every frame it gets must be binary MessagePack. */
class MsgpackClient {
  readonly ws: WebSocket;
  readonly inbox: Frame[] = [];
  /** Frames that arrived as text (must stay empty). */
  readonly text: string[] = [];
  readonly opened: Promise<void>;
  #wake: (() => void) | undefined;

  constructor(url: string, protocols = ['widget.v1', 'msgpack']) {
    this.ws = new WebSocket(url, protocols);
    this.ws.on('message', (data, isBinary) => {
      if (isBinary) this.inbox.push(unpack(data as Buffer) as Frame);
      else this.text.push(data.toString());
      this.#wake?.();
    });
    this.opened = new Promise((resolve, reject) => {
      this.ws.once('open', () => resolve());
      this.ws.once('error', reject);
    });
  }

  send(value: unknown): void {
    this.ws.send(pack(value));
  }

  async next(timeoutMs = 5000): Promise<Frame> {
    const end = Date.now() + timeoutMs;
    while (this.inbox.length === 0) {
      if (Date.now() > end) throw new Error(`no frame; text frames: ${JSON.stringify(this.text)}`);
      await new Promise<void>((r) => {
        const timer = setTimeout(r, 50);
        this.#wake = () => {
          clearTimeout(timer);
          r();
        };
      });
    }
    return this.inbox.shift()!;
  }

  close(): void {
    this.ws.close();
  }
}

async function msgpackClient(g: TestGateway, creator: string): Promise<MsgpackClient> {
  const c = new MsgpackClient(widgetUrl(g.port, creator, widgetToken(creator)));
  await c.opened;
  return c;
}

for (const mode of ['inline', 'pool'] as const) {
  void t.test(`msgpack framing (${mode} validation)`, async (t) => {
    const g = await startGateway({ VALIDATION_MODE: mode, RATE_LIMIT_MESSAGES: '1000', MAX_MESSAGE_CHARS: '65536' });
    t.teardown(() => g.close());

    await t.test('offering msgpack selects it; every server frame is binary MessagePack of the JSON shape', async (t) => {
      const c = await msgpackClient(g, 'alice');
      t.teardown(() => c.close());
      t.equal(c.ws.protocol, 'msgpack');
      t.match(await c.next(), { type: 'connection_status', status: 'connected', details: { session_id: String, connection_id: String }, timestamp: String });
      c.send({ type: 'ping' });
      t.same(await c.next(), { type: 'pong' });
      c.send({ type: 'user_message', content: '  hello  ' });
      t.match(await c.next(), { type: 'typing_indicator', is_typing: true });
      t.match(await c.next(), { type: 'ai_response', content: 'hello', confidence: Number, sources: Array, message_id: String });
      t.match(await c.next(), { type: 'typing_indicator', is_typing: false });
      t.same(c.text, [], 'no text frame at all');
    });

    await t.test('the same schema and errors as JSON', async (t) => {
      const c = await msgpackClient(g, 'alice');
      t.teardown(() => c.close());
      await c.next();
      const cases: Array<[unknown, string]> = [
        [{ type: 'user_message', content: '   ' }, ERRORS.EMPTY],
        [{ type: 'user_message', content: 42 }, ERRORS.CONTENT_NOT_STRING],
        [{ type: 'shout' }, 'Unknown message type: shout'],
        [[1, 2], ERRORS.INVALID_MESSAGE],
        ['just a string', ERRORS.INVALID_MESSAGE],
      ];
      for (const [value, error] of cases) {
        c.send(value);
        t.match(await c.next(), { type: 'error', error }, JSON.stringify(value));
      }
      c.ws.send(Buffer.from([0xc1, 0xff, 0x00])); // not MessagePack
      t.match(await c.next(), { type: 'error', error: ERRORS.INVALID_MSGPACK });
      c.ws.send(Buffer.from([0xdd, 0xff, 0xff, 0xff, 0xff])); // an array claiming 4 G elements
      t.match(await c.next(), { type: 'error', error: ERRORS.INVALID_MSGPACK });
      c.ws.send(Buffer.concat([Buffer.alloc(60_000, 0x91), Buffer.from([0xc0])])); // 60,000 nested arrays
      t.match(await c.next(), { type: 'error' }, 'deep nesting is an error frame, not a crash');
      c.ws.send('{"type":"ping"}'); // text frames are still JSON
      t.same(await c.next(), { type: 'pong' });
      c.send({ type: 'user_message', content: 'x'.repeat(40_000) }); // a large frame (to the pool in pool mode)
      await c.next();
      t.match(await c.next(), { type: 'ai_response', content: 'x'.repeat(40_000) });
      await c.next();
    });
  });
}

void t.test('broadcasts and targeted sends reach JSON and msgpack sockets, each in its framing, across nodes', async (t) => {
  const hub = new MemoryHub();
  const g1 = await startGateway({}, hub);
  const g2 = await startGateway({}, hub);
  t.teardown(async () => {
    await g1.close();
    await g2.close();
  });
  const json1 = await connectWidget(g1.port, 'alice', widgetToken('alice'));
  const mp1 = await msgpackClient(g1, 'alice');
  const mp2 = await msgpackClient(g2, 'alice');
  const status2 = await mp2.next();
  await mp1.next();
  const post = (port: number, path: string, body: unknown) =>
    fetch(`http://127.0.0.1:${port}${path}`, { method: 'POST', headers: { authorization: `Bearer ${serviceToken()}` }, body: JSON.stringify(body) });
  t.equal((await post(g1.port, '/api/v1/creators/alice/broadcast', { type: 'news', n: 1, list: ['a', { b: true }] })).status, 202);
  const want = { type: 'news', n: 1, list: ['a', { b: true }] };
  t.same(await json1.next(), want, 'JSON socket: JSON text');
  t.same(await mp1.next(), want, 'msgpack socket on the same node');
  t.same(await mp2.next(), want, 'msgpack socket on the other node (through the bus)');
  const id = (status2.details as { connection_id: string }).connection_id;
  t.equal((await post(g2.port, `/api/v1/connections/${id}/messages`, { type: 'note', text: 'for you' })).status, 202);
  t.same(await mp2.next(), { type: 'note', text: 'for you' }, 'a targeted send to a msgpack socket');
  t.same([mp1.text, mp2.text], [[], []]);
  json1.close();
  mp1.close();
  mp2.close();
});

void t.test('random bytes to a msgpack socket: error frames, and the process and a bystander carry on', async (t) => {
  const g = await startGateway({ RATE_LIMIT_MESSAGES: '100000' });
  t.teardown(() => g.close());
  const c = await msgpackClient(g, 'alice');
  const bystander = await connectWidget(g.port, 'alice', widgetToken('alice'));
  await c.next();
  let seed = 42;
  const rnd = () => ((seed = (seed * 1103515245 + 12345) >>> 0) / 2 ** 32);
  const N = 500;
  for (let i = 0; i < N; i++) c.ws.send(Buffer.from(Array.from({ length: 1 + Math.floor(rnd() * 64) }, () => Math.floor(rnd() * 256))));
  const answered: string[] = [];
  for (let i = 0; i < N; i++) {
    const f = await c.next();
    if (f.type === 'typing_indicator') {
      i--;
      continue;
    }
    answered.push(f.type);
  }
  t.ok(answered.every((x) => x === 'error' || x === 'pong' || x === 'ai_response'), 'one answer per frame');
  t.equal((await bystander.ask('still here')).content, 'still here');
  c.close();
  bystander.close();
});

void t.test('without msgpack in the offer, nothing changes: JSON text, binary frames read as UTF-8 JSON', async (t) => {
  const g = await startGateway();
  t.teardown(() => g.close());
  const c = await connectWidget(g.port, 'alice', widgetToken('alice'));
  c.ws.send(Buffer.from('{"type":"ping"}'));
  t.same(await c.next(), { type: 'pong' });
  c.ws.send(pack({ type: 'ping' }));
  t.match(await c.next(), { type: 'error', error: ERRORS.INVALID_JSON }, 'MessagePack from a JSON socket is not JSON');
  c.close();
});

void t.test('the real cluster (2 workers): targeted sends and broadcasts reach msgpack sockets on either worker', async (t) => {
  const host = await startCluster();
  t.teardown(() => host.stop('SIGKILL'));
  const clients: MsgpackClient[] = [];
  const ids: string[] = [];
  // SO_REUSEPORT picks the worker by the connection's hash: 8 sockets all land
  // on one worker once in 128 runs, so open more until both hold some.
  let byWorker: Record<string, number> = {};
  for (let i = 0; i < 40 && (clients.length < 8 || Object.values(byWorker).filter((n) => n > 0).length < 2); i++) {
    const c = await msgpackClient({ port: host.port } as TestGateway, 'alice');
    clients.push(c);
    ids.push(((await c.next()).details as { connection_id: string }).connection_id);
    if (clients.length >= 8) byWorker = (await host.get('/api/v1/stats')).body.connections_by_worker as Record<string, number>;
  }
  t.equal(Object.values(byWorker).filter((n) => n > 0).length, 2, `sockets on both workers (${JSON.stringify(byWorker)})`);
  const post = (path: string, body: unknown) =>
    fetch(`http://127.0.0.1:${host.port}${path}`, { method: 'POST', headers: { authorization: `Bearer ${serviceToken()}` }, body: JSON.stringify(body) });
  for (let i = 0; i < clients.length; i++) {
    t.equal((await post(`/api/v1/connections/${ids[i]}/messages`, { type: 'note', to: i })).status, 202);
    t.same(await clients[i]!.next(), { type: 'note', to: i });
  }
  t.equal((await post('/api/v1/creators/alice/broadcast', { type: 'news' })).status, 202);
  for (const c of clients) t.same(await c.next(), { type: 'news' });
  t.ok(clients.every((c) => c.text.length === 0 && c.inbox.length === 0), 'nothing else, nothing as text');
  for (const c of clients) c.close();
});
