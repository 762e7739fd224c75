/** The validation stage: ordering across paths, the bounded queue, and a pool that survives failures. */
import t from 'tap';
import { createValidator, type Ordered } from '../src/pipeline/validator.js';
import { decodeFrame, DEFAULT_SCHEMA as schema, type Decoded } from '../src/pipeline/validate.js';
import { ERRORS } from '../src/protocol/frames.js';
import { MessageTables } from '../src/limits/admit.js';
import { BucketTable } from '../src/limits/buckets.js';

/** Budgets that never refuse (the limits have their own test below). */
const tables = new MessageTables(new BucketTable(4, 1_000_000, 1000), undefined);
const newConn = (): Ordered => ({ pending: undefined, sessionSlot: 1, creatorSlot: 0, msgpack: false, closed: false });

const ab = (s: string) => {
  const b = Buffer.from(s);
  return b.buffer.slice(b.byteOffset, b.byteOffset + b.length) as ArrayBuffer;
};
const ping = ab('{"type":"ping"}');
const msg = (content: string) => ab(JSON.stringify({ type: 'user_message', content }));
const describe = (d: Decoded) => (d.ok ? (d.msg.type === 'ping' ? 'ping' : d.limited ? `limited:${d.limited}` : d.msg.type === 'user_message' ? d.msg.content : d.msg.type) : `error:${d.error}`);

function collect(n: number) {
  const got: string[] = [];
  let resolve!: () => void;
  const all = new Promise<void>((r) => (resolve = r));
  return {
    got,
    all,
    done: (d: Decoded) => {
      got.push(describe(d));
      if (got.length === n) resolve();
    },
  };
}

void t.test('auto: a large frame goes to the pool, the small ones after it wait for it (order per connection)', async (t) => {
  const v = createValidator({ tables, schema, mode: 'auto', decode: decodeFrame, thresholdBytes: 1000, threads: 1, maxQueuedFrames: 100 });
  t.teardown(() => v.close());
  const conn: Ordered = newConn();
  const other: Ordered = newConn();
  const c = collect(4);
  v.submit(conn, msg('x'.repeat(5000)), false, c.done);
  v.submit(conn, ping, false, c.done);
  v.submit(conn, msg('small'), false, c.done);
  let otherDone = '';
  v.submit(other, msg('other connection'), false, (d) => (otherDone = describe(d)));
  t.equal(otherDone, 'other connection', 'another connection is answered inline at once');
  v.submit(conn, ab('not json'), false, c.done);
  await c.all;
  t.same(c.got, ['x'.repeat(5000), 'ping', 'small', `error:${ERRORS.INVALID_JSON}`]);
  t.equal(conn.pending, undefined, 'nothing left pending');
  t.equal(v.queued, 0);
});

void t.test('pool mode answers exactly as inline does', async (t) => {
  const v = createValidator({ tables, schema, mode: 'pool', decode: decodeFrame, thresholdBytes: 1, threads: 2, maxQueuedFrames: 1000 });
  t.teardown(() => v.close());
  const frames = ['{"type":"ping"}', '[]', '42', '{"type":"x"}', '{"type":"user_message","content":" a "}', '{', '{"type":"user_message","content":1}'];
  const c = collect(frames.length);
  const conn: Ordered = newConn();
  for (const f of frames) v.submit(conn, ab(f), false, c.done);
  await c.all;
  t.same(c.got, frames.map((f) => describe(decodeFrame(ab(f), false))));
});

void t.test('a full pool queue answers "Server busy", in order, and recovers', async (t) => {
  const v = createValidator({ tables, schema, mode: 'pool', decode: decodeFrame, thresholdBytes: 1, threads: 1, maxQueuedFrames: 3 });
  t.teardown(() => v.close());
  const conn: Ordered = newConn();
  const c = collect(5);
  for (let i = 0; i < 5; i++) v.submit(conn, msg(`m${i}`), false, c.done);
  await c.all;
  t.same(c.got, ['m0', 'm1', 'm2', `error:${ERRORS.BUSY}`, `error:${ERRORS.BUSY}`]);
  const again = collect(1);
  v.submit(conn, msg('later'), false, again.done);
  await again.all;
  t.same(again.got, ['later'], 'accepted again once the queue drained');
});

void t.test('the pool survives a task that throws and a thread that dies', async (t) => {
  const taskFile = new URL('./fixtures/failing-task.ts', import.meta.url).href;
  const v = createValidator({ tables, schema, mode: 'pool', decode: decodeFrame, thresholdBytes: 1, threads: 1, maxQueuedFrames: 100, taskFile });
  t.teardown(() => v.close());
  const conn: Ordered = newConn();
  const run = async (frames: string[]) => {
    const c = collect(frames.length);
    for (const f of frames) v.submit(conn, ab(f), false, c.done);
    await c.all;
    // next turn: a new batch
    await new Promise((r) => setImmediate(r));
    return c.got;
  };
  t.same(await run(['THROW']), [`error:${ERRORS.BUSY}`], 'a throwing task: its frames are refused, not lost silently');
  t.same(await run(['{"type":"ping"}']), ['ping'], 'the next task runs');
  t.same(await run(['EXIT']), [`error:${ERRORS.BUSY}`], 'a dead thread: its frames are refused');
  t.same(await run(['{"type":"ping"}', '{"type":"user_message","content":"ok"}']), ['ping', 'ok'], 'piscina replaced the thread');
});

void t.test('rate limits are the same whichever path a frame takes: each result is charged as it is delivered, in arrival order', async (t) => {
  const limited = new MessageTables(new BucketTable(4, 5, 60_000), new BucketTable(4, 7, 60_000));
  const v = createValidator({ tables: limited, schema, mode: 'auto', decode: decodeFrame, thresholdBytes: 1000, threads: 2, maxQueuedFrames: 100 });
  t.teardown(() => v.close());
  const a: Ordered = { pending: undefined, sessionSlot: 1, creatorSlot: 1, msgpack: false, closed: false };
  const b: Ordered = { pending: undefined, sessionSlot: 2, creatorSlot: 1, msgpack: false, closed: false };
  const c = collect(10);
  // Alternate large (pool thread) and small (inline) frames of one session.
  for (let i = 0; i < 10; i++) v.submit(a, msg(i % 2 === 0 ? `${i}`.padEnd(2000, '.') : `${i}`), false, c.done);
  await c.all;
  t.same(
    c.got.map((g) => (g.startsWith('limited:') ? g : 'ok')),
    [...Array<string>(5).fill('ok'), ...Array<string>(5).fill('limited:session')],
    'the first 5 in arrival order admitted across both paths (the session limit), the excess marked, to be answered "Rate limit exceeded" in its turn',
  );
  const d = collect(4);
  for (let i = 0; i < 4; i++) v.submit(b, msg(i % 2 === 0 ? 'x'.repeat(2000) : 'y'), false, d.done);
  await d.all;
  t.same(
    d.got.map((g) => (g.startsWith('limited:') ? g : 'ok')),
    ['ok', 'ok', 'limited:creator', 'limited:creator'],
    'another session of the creator gets the 2 left of the creator budget (7), its first two',
  );
});

void t.test('a connection that closed while its frame was in the pool is not charged: its slot may be another key\'s by then', async (t) => {
  const session = new BucketTable(4, 1, 60_000, true);
  const v = createValidator({ tables: new MessageTables(session, undefined), schema, mode: 'pool', decode: decodeFrame, thresholdBytes: 1, threads: 1, maxQueuedFrames: 100 });
  t.teardown(() => v.close());
  await v.ready();
  const conn = { ...newConn(), closed: false };
  const c = collect(1);
  v.submit(conn, msg('late'), false, c.done);
  conn.closed = true;
  await c.all;
  t.same(c.got, ['late'], 'delivered (the socket handler drops it), not marked');
  t.equal(session.charged(1), 0, 'nothing charged');
  const open = newConn();
  const o = collect(2);
  v.submit(open, msg('one'), false, o.done);
  v.submit(open, msg('two'), false, o.done);
  await o.all;
  t.same(o.got, ['one', 'limited:session'], 'an open connection is charged as before (limit 1)');
  t.equal(session.charged(1), 1);
});
