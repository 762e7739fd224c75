/**
 * Hostile frames close at most their own socket, never the process, while
 * other clients keep chatting.
 */
import t, { type Test } from 'tap';
import { startGateway, type TestGateway } from './helpers/gateway.js';
import { Client, connectWidget } from './helpers/client.js';
import { widgetToken } from './helpers/tokens.js';
import { ERRORS } from '../src/protocol/frames.js';

let g: TestGateway;
let bystander: Client;
t.before(async () => {
  g = await startGateway({ RATE_LIMIT_MESSAGES: '100000', MAX_PAYLOAD_BYTES: '65536', MAX_MESSAGE_CHARS: '65536' });
  bystander = await connectWidget(g.port, 'calm', widgetToken('calm'));
});
t.teardown(async () => {
  bystander.close();
  await g.close();
});
/** A test whose last check is that a bystander on another socket still chats. */
function hostile(name: string, fn: (t: Test) => Promise<void>): void {
  void t.test(name, async (t) => {
    await fn(t);
    const r = await bystander.ask(`still fine after ${name}`);
    t.equal(r.content, `still fine after ${name}`, 'a bystander keeps chatting');
  });
}

async function attacker(): Promise<Client> {
  return connectWidget(g.port, 'evil', widgetToken('evil'));
}

hostile('binary garbage gets "Invalid JSON format"', async (t) => {
  const c = await attacker();
  c.ws.send(Buffer.from([0xde, 0xad, 0xbe, 0xef, 0x00, 0xff]), { binary: true });
  t.match(await c.next(), { type: 'error', error: ERRORS.INVALID_JSON });
  c.close();
});

hostile('binary frames holding UTF-8 JSON are accepted', async (t) => {
  const c = await attacker();
  c.ws.send(Buffer.from('{"type":"ping"}'), { binary: true });
  t.same(await c.next(), { type: 'pong' });
  c.close();
});

hostile('invalid UTF-8 in a text frame closes that socket only', async (t) => {
  const c = await attacker();
  c.ws.send(Buffer.from([0x7b, 0xff, 0xfe, 0x7d]), { binary: false });
  const closed = await c.closed;
  t.ok(closed.code === 1006 || closed.code === 1007, `closed (${closed.code})`);
});

hostile('a frame over MAX_PAYLOAD_BYTES closes with 1009', async (t) => {
  const c = await attacker();
  c.send({ type: 'user_message', content: 'x'.repeat(70_000) });
  t.same(await c.closed, { code: 1009, reason: 'Message too big' });
});

hostile('a frame of exactly MAX_PAYLOAD_BYTES is accepted', async (t) => {
  const c = await attacker();
  const pad = 65536 - '{"type":"user_message","content":""}'.length;
  c.send(`{"type":"user_message","content":"${'y'.repeat(pad)}"}`);
  t.equal(((await c.nextOfType('ai_response')).content as string).length, pad);
  c.close();
});

hostile('a frame far over the limit is cut by uWS (1006) without harm', async (t) => {
  const c = await attacker();
  c.ws.send(Buffer.alloc(1024 * 1024, 0x20));
  t.equal((await c.closed).code, 1006);
});

hostile('deeply nested JSON gets an error frame', async (t) => {
  const c = await attacker();
  const depth = 30_000;
  c.send('['.repeat(depth) + ']'.repeat(depth));
  t.match(await c.next(), { type: 'error', error: ERRORS.INVALID_MESSAGE });
  c.send(`{"type":"user_message","content":${'['.repeat(depth)}${']'.repeat(depth)}}`);
  t.match(await c.next(), { type: 'error', error: ERRORS.CONTENT_NOT_STRING });
  c.send('{"a":'.repeat(10_000) + '1' + '}'.repeat(10_000));
  t.match(await c.next(), { type: 'error', error: ERRORS.INVALID_MESSAGE });
  c.close();
});

hostile('[], 42, "x", null, true and prototype keys get error frames', async (t) => {
  const c = await attacker();
  for (const f of ['[]', '42', '"x"', 'null', 'true']) {
    c.send(f);
    t.match(await c.next(), { type: 'error', error: ERRORS.INVALID_MESSAGE }, f);
  }
  c.send('{"__proto__":{"type":"ping"}}');
  t.match(await c.next(), { type: 'error', error: ERRORS.INVALID_MESSAGE });
  c.send('{"type":"constructor"}');
  t.match(await c.next(), { type: 'error', error: 'Unknown message type: constructor' });
  c.send('{"type":"toString"}');
  t.match(await c.next(), { type: 'error', error: 'Unknown message type: toString' });
  c.close();
});

hostile('a very long unknown type is echoed cut short', async (t) => {
  const c = await attacker();
  c.send({ type: 'z'.repeat(10_000) });
  const f = await c.next();
  t.ok((f.error as string).length < 100);
  c.close();
});

hostile('an abrupt disconnect mid-exchange is harmless', async (t) => {
  const c = await attacker();
  for (let i = 0; i < 50; i++) c.send({ type: 'user_message', content: `q${i}` });
  c.ws.terminate();
  await c.closed;
  t.pass('terminated');
});

void t.test('an unexpected fault while answering closes only that socket, with 1011', async (t) => {
  // An engine whose answer cannot be serialised (a BigInt among the sources): a fault inside the gateway's send path.
  const faulty = await startGateway({}, undefined, undefined, {
    ask: async (q) => ({ response: q.query, confidence: 1, sources: q.query === 'boom' ? [1n] : [] }),
    close: async () => {},
  });
  t.teardown(() => faulty.close());
  const victim = await connectWidget(faulty.port, 'alice', widgetToken('alice'));
  const other = await connectWidget(faulty.port, 'alice', widgetToken('alice'));
  victim.send({ type: 'user_message', content: 'boom' });
  t.same(await victim.closed, { code: 1011, reason: 'Internal error' });
  t.equal((await other.ask('fine')).content, 'fine', 'the process and the other socket go on');
  other.close();
});
