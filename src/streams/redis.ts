/**
 * Streams in Redis: every host reads and writes the same history.
 *
 * Keys of a stream, all with the stream as their hash tag (so every script
 * touches one slot, and a Redis Cluster works):
 *   <prefix>{<stream>}:m        hash: e (epoch), o (top offset)
 *   <prefix>{<stream>}:l        list: the last HISTORY_SIZE frames, oldest first
 *   <prefix>{<stream>}:n        set: nodes following the session stream
 *   <prefix>{<stream>}:p        the answer being streamed now (`<message id>\n<text so far>`)
 *   <prefix>{<stream>}:c:<id>   a claimed client_message_id: "p:<node>" (pending) or "epoch:offset"
 * Every key expires HISTORY_TTL_S after its last use; the nodes following a
 * stream refresh it every HISTORY_CHECK_S.
 *
 * One Lua script appends: the offset is taken, the frame stored and trimmed,
 * and (broadcast streams) published on the stream's channel
 * `<prefix>{<stream>}:live` in the same script, so history and live can
 * never disagree; one round trip per broadcast, however many subscribers
 * (and the appends of one event-loop turn share it: at most APPEND_BATCH a run).
 * A session stream's frame goes to the nodes in its `:n` set, which the
 * script returns: the appending node delivers its own at once and publishes
 * to the others' inboxes. A node follows a broadcast stream by subscribing
 * its channel (confirmed before it reads), a session stream by adding itself
 * to `:n` in the same script that reads it. Pub/sub loses messages (a
 * reconnect, a failover): the hub fills every gap from the list, and a
 * position check every HISTORY_CHECK_S finds a lost last message. The
 * pieces of an answer streamed here go to Redis as they come only while
 * another node follows the session; else they are held and sent merged
 * (streams/progress.ts).
 */
import { Packr } from 'msgpackr';
import calculateSlot from 'cluster-key-slot';
import type { Result } from 'ioredis';
import { GatewayError } from '../errors.js';
import type { Logger } from '../observability/log.js';
import { asBuffer, type RedisLink } from '../redis/link.js';
import type { RedisCluster } from '../cluster/redis.js';
import { PieceBuffer } from './progress.js';
import { SharedReads } from './reads.js';
import { creatorOfStream, newEpoch, type AppendOptions, type Chunk, type Claim, type HistoryOptions, type Position, type ReadResult, type StoredFrame, type StreamSink, type StreamStore } from './streams.js';
import { Buffer } from 'node:buffer';

const packr = new Packr({ useRecords: false });

/**
 * Appends one or more frames, each to its own stream. KEYS: each frame's
 * stream's `m` key (the stream's other keys are named from it: same hash
 * tag, so the same slot on a Cluster). ARGV: size, ttl, publish command
 * (PUBLISH, or SPUBLISH on a Cluster), then two per frame: the payload, and
 * `<new epoch>\n<b|s><ends: message id or ''>\n<client_message_id or ''>`
 * (b: a broadcast stream, published on its channel; s: a session stream,
 * whose followers come back). One reply per frame: {epoch, offset}, and a
 * session stream's followers after them. The appends of one turn go
 * together: one round trip, one script run (on a Cluster, one per slot), and
 * few arguments (the client's cost is per argument).
 */
const APPEND = `
local out = {}
local size = tonumber(ARGV[1])
for i = 1, #KEYS do
  local m, payload, meta = KEYS[i], ARGV[2 + i * 2], ARGV[3 + i * 2]
  local base = string.sub(m, 1, -2)
  local nl = string.find(meta, '\\n', 1, true)
  local nl2 = string.find(meta, '\\n', nl + 1, true)
  local ends, cmid = string.sub(meta, nl + 2, nl2 - 1), string.sub(meta, nl2 + 1)
  local e = redis.call('HGET', m, 'e')
  if not e then e = string.sub(meta, 1, nl - 1); redis.call('HSET', m, 'e', e, 'o', 0) end
  local o = redis.call('HINCRBY', m, 'o', 1)
  local l = base .. 'l'
  if redis.call('RPUSH', l, payload) > size then redis.call('LTRIM', l, -size, -1) end
  redis.call('PEXPIRE', m, ARGV[2])
  redis.call('PEXPIRE', l, ARGV[2])
  if cmid ~= '' then redis.call('SET', base .. 'c:' .. cmid, e .. ':' .. o, 'PX', ARGV[2]) end
  if ends ~= '' then
    local p = redis.call('GET', base .. 'p')
    if p and string.sub(p, 1, #ends + 1) == ends .. '\\n' then redis.call('DEL', base .. 'p') end
  end
  if string.sub(meta, nl + 1, nl + 1) == 'b' then
    redis.call(ARGV[3], base .. 'live', cmsgpack.pack({e, o, payload}))
    out[i] = {e, o}
  else
    out[i] = {e, o, redis.call('SMEMBERS', base .. 'n')}
  end
end
return out
`;

/** KEYS: m, l, n, p. ARGV: after epoch ('' = none), after offset, ttl, new epoch, node to add ('' = none). */
const READ = `
local e = redis.call('HGET', KEYS[1], 'e')
local top = 0
if not e then
  e = ARGV[4]
  redis.call('HSET', KEYS[1], 'e', e, 'o', 0)
else
  top = tonumber(redis.call('HGET', KEYS[1], 'o'))
end
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
if ARGV[5] ~= '' then
  redis.call('SADD', KEYS[3], ARGV[5])
  redis.call('PEXPIRE', KEYS[3], ARGV[3])
end
local partial = redis.call('GET', KEYS[4]) or ''
local len = redis.call('LLEN', KEYS[2])
local oldest = top - len + 1
if ARGV[1] == '' then return {e, top, partial, 'ok'} end
local after = tonumber(ARGV[2])
if ARGV[1] ~= e or after > top or after + 1 < oldest then return {e, top, partial, 'lost'} end
local out = {e, top, partial, 'ok'}
local frames = redis.call('LRANGE', KEYS[2], after + 1 - oldest, -1)
for i = 1, #frames do out[#out + 1] = frames[i] end
return out
`;

/** KEYS: m, l, n, p. ARGV: ttl. The top, and the frames' keys of a followed stream kept alive (p, an answer's text so far, keeps its own shorter TTL). */
const TOUCH = `
for i = 1, 3 do redis.call('PEXPIRE', KEYS[i], ARGV[1]) end
return {redis.call('HGET', KEYS[1], 'e') or '', tonumber(redis.call('HGET', KEYS[1], 'o') or '0')}
`;

/**
 * KEYS: p, n. ARGV: message id, index, delta, ttl. The answer's text so far
 * (`<message id>\\n<text>`) grows by each piece (one writer, in order: the
 * node asking the engine); the first piece (index 0) starts it. Returns the
 * nodes following the session: the next pieces go to them too.
 */
const PIECE = `
local cur = redis.call('GET', KEYS[1])
local head = ARGV[1] .. '\\n'
if ARGV[2] == '0' then
  redis.call('SET', KEYS[1], head .. ARGV[3])
elseif cur and string.sub(cur, 1, #head) == head then
  redis.call('APPEND', KEYS[1], ARGV[3])
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return redis.call('SMEMBERS', KEYS[2])
`;

/** KEYS: m. ARGV: the epoch seen, a new one. Gives a stream that went back a new epoch (once: the epoch must still be the one seen). */
const REBASE = `
local e = redis.call('HGET', KEYS[1], 'e')
if e == ARGV[1] then redis.call('HSET', KEYS[1], 'e', ARGV[2]); return ARGV[2] end
return e or ''
`;

/** KEYS: c. ARGV: ttl, 'p:<node>'. -1: claimed now; else the stored value ('p:<node>' pending, 'epoch:offset'). */
const CLAIM = `
if redis.call('SET', KEYS[1], ARGV[2], 'NX', 'PX', ARGV[1]) then return -1 end
return redis.call('GET', KEYS[1])
`;

/** KEYS: c. ARGV: the pending value seen, the new one, ttl. Takes over a claim whose node died. */
const TAKEOVER = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return 1
`;

/** KEYS: m, l. ARGV: epoch, offset. */
const FRAME_AT = `
if redis.call('HGET', KEYS[1], 'e') ~= ARGV[1] then return false end
local top = tonumber(redis.call('HGET', KEYS[1], 'o'))
local len = redis.call('LLEN', KEYS[2])
local i = tonumber(ARGV[2]) - (top - len + 1)
if i < 0 then return false end
return redis.call('LINDEX', KEYS[2], i)
`;

export interface RedisStreamsOptions extends HistoryOptions {
  prefix: string;
  nodeId: string;
  /** How often followed streams are checked against Redis (HISTORY_CHECK_S). */
  checkMs: number;
  /** A streamed answer's text so far outlives its last piece this long (it cannot stream longer than the engine's deadline). */
  partialTtlMs: number;
  log: Logger;
}

type Reply = Array<string | number | Buffer>;

/** The most frames, and about the most payload bytes, one run of the append script takes (a larger turn's appends go in several, in order). */
export const APPEND_BATCH = { frames: 64, bytes: 256 * 1024 };

interface PendingAppend {
  stream: string;
  payload: string;
  /** Its UTF-8 bytes (the batch bounds count them). */
  bytes: number;
  o: AppendOptions;
  resolve(p: Position): void;
  reject(err: Error): void;
}

export class RedisStreams implements StreamStore {
  /** stream -> follows made by this node. */
  readonly #follows = new Map<string, number>();
  /**
   * Session stream -> the other nodes following it, as the last append or
   * piece script said (pieces go to them too). Kept while this node follows
   * the session or streams an answer in it.
   */
  readonly #readers = new Map<string, string[]>();
  readonly #timer: NodeJS.Timeout;
  readonly #held = new PieceBuffer((stream, chunk) => this.#piece(stream, chunk));
  readonly #reads = new SharedReads((stream, after) => this.#read(stream, after));
  #closed = false;

  constructor(
    private readonly link: RedisLink,
    private readonly cluster: RedisCluster,
    private readonly sink: StreamSink,
    private readonly o: RedisStreamsOptions,
    /** The streams this node follows with its position (the hub), for the position check. */
    private readonly positions: () => Array<{ stream: string; epoch: string; last: number }>,
    private readonly behind: (stream: string, epoch: string, top: number) => void,
  ) {
    const c = link.cmd;
    c.defineCommand('cgwAppend', { lua: APPEND }); // the number of keys first: one per frame
    link.unpipelined('cgwAppend'); // one run per turn already (#sendAppends)
    c.defineCommand('cgwRead', { numberOfKeys: 4, lua: READ });
    c.defineCommand('cgwTouch', { numberOfKeys: 4, lua: TOUCH });
    c.defineCommand('cgwClaim', { numberOfKeys: 1, lua: CLAIM });
    c.defineCommand('cgwRebase', { numberOfKeys: 1, lua: REBASE });
    c.defineCommand('cgwTakeover', { numberOfKeys: 1, lua: TAKEOVER });
    c.defineCommand('cgwPiece', { numberOfKeys: 2, lua: PIECE });
    c.defineCommand('cgwFrameAt', { numberOfKeys: 2, lua: FRAME_AT });
    // Broadcast streams' live channels.
    link.sub.on(`${o.prefix}{b/`, (channel, message) => this.#live(channel, message));
    cluster.onInbox('s', (m) => this.#inboxFrame(m));
    cluster.onInbox('h', (m) => this.#inboxChunk(m));
    this.#timer = setInterval(() => void this.#check(), o.checkMs);
    this.#timer.unref();
  }

  #key(stream: string, part: string): string {
    return `${this.o.prefix}{${stream}}:${part}`;
  }

  #keys(stream: string): [string, string, string, string] {
    return [this.#key(stream, 'm'), this.#key(stream, 'l'), this.#key(stream, 'n'), this.#key(stream, 'p')];
  }

  #channel(stream: string): string {
    return this.#key(stream, 'live');
  }

  /**
   * Appends `payload` to `stream`. The appends of one turn go to Redis
   * together: one script run for all of them (on a Cluster, one per slot),
   * so an answer costs a share of one round trip's client work, not a whole
   * command (the chat of a loaded node appends tens of answers a turn).
   */
  append(stream: string, payload: string, o: AppendOptions = {}): Promise<Position> {
    this.#held.beforeAppend(stream, o.ends);
    return new Promise((resolve, reject) => {
      const group = this.link.sharded ? calculateSlot(stream) : 0;
      const item: PendingAppend = { stream, payload, bytes: Buffer.byteLength(payload), o, resolve, reject };
      const list = this.#appends.get(group);
      if (list) list.push(item);
      else this.#appends.set(group, [item]);
      if (!this.#appending) {
        this.#appending = true;
        setImmediate(() => this.#sendAppends());
      }
    });
  }

  /** Appends waiting for the end of the turn, by slot (0 on one Redis). */
  #appends = new Map<number, PendingAppend[]>();
  #appending = false;

  #sendAppends(): void {
    this.#appending = false;
    const groups = this.#appends;
    this.#appends = new Map();
    for (const group of groups.values()) {
      // At most APPEND_BATCH frames or bytes in one script run: Redis runs a script whole, and blocks meanwhile.
      let batch: PendingAppend[] = [];
      let bytes = 0;
      for (const x of group) {
        if (batch.length > 0 && (batch.length >= APPEND_BATCH.frames || bytes + x.bytes > APPEND_BATCH.bytes)) {
          this.#sendBatch(batch);
          batch = [];
          bytes = 0;
        }
        batch.push(x);
        bytes += x.bytes;
      }
      this.#sendBatch(batch);
    }
  }

  /** One run of the append script for `items` (one slot), within the link's byte bound. */
  #sendBatch(items: PendingAppend[]): void {
    const keys: string[] = [];
    // All strings: ioredis writes a command whose arguments are all strings as one string, and one with a Buffer through a slower path that gathers buffers (10-30% of an append's client CPU, measured).
    const args: string[] = [];
    let bytes = 0;
    for (const { stream, payload, bytes: n, o } of items) {
      keys.push(this.#key(stream, 'm'));
      args.push(payload, `${newEpoch()}\n${creatorOfStream(stream) !== undefined ? 'b' : 's'}${o.ends ?? ''}\n${o.cmid ?? ''}`);
      bytes += n + 128;
    }
    const sent = this.link.send(bytes, (c) => c.cgwAppend(keys.length, ...keys, this.o.size, this.o.ttlMs, this.link.sharded ? 'SPUBLISH' : 'PUBLISH', ...args));
    if (sent === undefined) {
      const err = new GatewayError('GW_ERR_OVERLOADED', 'Redis is unreachable or too much waits for it: append refused');
      for (const x of items) x.reject(err);
      return;
    }
    sent.then(
      (replies) => {
        items.forEach((x, i) => {
          const r = (replies as Reply[])[i];
          if (r === undefined) x.reject(new GatewayError('GW_ERR_REDIS_UNAVAILABLE', 'history append failed: no reply for the frame'));
          else x.resolve(this.#appended(x.stream, x.payload, r));
        });
      },
      (err: Error) => {
        const e = new GatewayError('GW_ERR_REDIS_UNAVAILABLE', `history append failed: ${err.message}`, { cause: err });
        for (const x of items) x.reject(e);
      },
    );
  }

  /** A frame appended: a session stream's frame delivered here (if followed) and sent to the other nodes following it. */
  #appended(stream: string, payload: string, r: Reply): Position {
    const epoch = String(r[0]);
    const offset = Number(r[1]);
    if (r.length > 2) {
      const nodes = ((r[2] ?? []) as unknown as Array<string | Buffer>).map(String);
      const others = nodes.filter((n) => n !== this.o.nodeId);
      if (this.#follows.has(stream)) {
        this.#readers.set(stream, others);
        this.sink.frame(stream, epoch, { offset, payload });
      } else this.#readers.delete(stream); // the socket that asked left and its answer ended here: nothing more to send from this node
      for (const n of others) this.cluster.toInbox(n, ['s', stream, epoch, offset, payload]);
    }
    return { epoch, offset };
  }

  /**
   * A piece of an answer streamed here: held while this node follows the
   * session and knows of no other node that does; else at once (another
   * node reads it live, or the socket that asked left: its next one may be
   * on another node).
   */
  chunk(stream: string, chunk: Chunk): void {
    this.#held.put(stream, chunk, this.#follows.has(stream) && !this.#readers.get(stream)?.length);
  }

  /**
   * Adds the piece to the text so far (for a socket that joins mid-answer)
   * and sends it to the other nodes following the session, whose set comes
   * back with the same round trip (for the next piece: a node that joins
   * meanwhile gets the text so far in its read).
   */
  #piece(stream: string, chunk: Chunk): void {
    this.link
      .send(Buffer.byteLength(chunk.delta) + 128, (c) => c.cgwPiece(this.#key(stream, 'p'), this.#key(stream, 'n'), chunk.messageId, chunk.index, chunk.delta, this.o.partialTtlMs))
      ?.then((nodes) => {
        const known = this.#readers.get(stream) ?? [];
        const others = (nodes as string[]).filter((n) => n !== this.o.nodeId);
        this.#readers.set(stream, others);
        // Nodes that followed unknown to this one get this piece now (contiguous with the text so far they read, or read again on a gap).
        for (const n of others) if (!known.includes(n)) this.#toNode(n, stream, chunk);
      })
      .catch(() => {});
    for (const n of this.#readers.get(stream) ?? []) this.#toNode(n, stream, chunk);
  }

  /** Sessions whose other followers this node keeps (bounded by the sessions it follows or streams an answer for). */
  get knownReaders(): number {
    return this.#readers.size;
  }

  #toNode(node: string, stream: string, chunk: Chunk): void {
    this.cluster.toInbox(node, ['h', stream, chunk.messageId, chunk.index, chunk.delta]);
  }

  /**
   * Follows of one turn asking the same read share it (streams/reads.ts): a
   * reconnect storm reads a creator's broadcast history once per node per
   * turn, not once per socket (Redis runs the scripts one at a time).
   */
  follow(stream: string, after?: Position): Promise<ReadResult> {
    this.#follows.set(stream, (this.#follows.get(stream) ?? 0) + 1);
    return this.#reads.follow(stream, after);
  }

  async #read(stream: string, after: Position | undefined): Promise<ReadResult> {
    try {
      const broadcast = creatorOfStream(stream) !== undefined;
      if (broadcast) {
        // Subscribed (and confirmed) before reading: nothing appended after the read can miss this node.
        const ch = this.#channel(stream);
        this.link.sub.want(ch);
        await withDeadline(this.link.sub.whenConfirmed(ch), this.o.checkMs + 2000, 'subscription to a broadcast stream');
      }
      const r = (await this.link.run('history read', (c) =>
        c.cgwRead(...this.#keys(stream), after?.epoch ?? '', after?.offset ?? 0, this.o.ttlMs, newEpoch(), broadcast ? '' : this.o.nodeId),
      )) as Reply;
      const epoch = String(r[0]);
      const top = Number(r[1]);
      const raw = r[2] as string;
      const res: ReadResult = { epoch, top, frames: [], lost: String(r[3]) === 'lost' };
      if (raw && raw.length > 0) {
        const nl = raw.indexOf('\n');
        if (nl > 0) res.partial = { messageId: raw.slice(0, nl), text: raw.slice(nl + 1) };
      }
      if (after !== undefined && !res.lost) {
        const frames = r.slice(4) as string[];
        const first = top - frames.length + 1;
        res.frames = frames.map((payload, i) => ({ offset: first + i, payload }));
      }
      return res;
    } catch (err) {
      // The follow stands (its subscription stays wanted): the caller unfollows when it gives up.
      throw err instanceof GatewayError ? err : new GatewayError('GW_ERR_REDIS_UNAVAILABLE', `history read failed: ${(err as Error).message}`, { cause: err });
    }
  }

  unfollow(stream: string): void {
    const n = this.#follows.get(stream);
    if (n === undefined) return;
    if (n > 1) {
      this.#follows.set(stream, n - 1);
      return;
    }
    this.#follows.delete(stream);
    this.#readers.delete(stream);
    if (creatorOfStream(stream) !== undefined) this.link.sub.unwant(this.#channel(stream));
    else {
      // A follow of this turn has not sent its read (and SADD) yet: send it first, or the SREM would
      // reach Redis before it and leave this node among the session's followers.
      this.#reads.flush();
      this.link.send(64, (c) => c.srem(this.#key(stream, 'n'), this.o.nodeId))?.catch(() => {});
    }
  }

  /**
   * Claims a client_message_id: pending under this node's id. A claim
   * pending under a node whose lease is gone (it died before answering) is
   * taken over: the retry is answered instead of waiting forever.
   */
  async claim(stream: string, cmid: string): Promise<Claim> {
    const key = this.#key(stream, `c:${cmid}`);
    const mine = `p:${this.o.nodeId}`;
    const v = (await this.link.run('claim', (c) => c.cgwClaim(key, this.o.ttlMs, mine))) as number | string | Buffer;
    if (v === -1) return { state: 'new' };
    const s = String(v);
    if (s.startsWith('p:')) {
      const owner = s.slice(2);
      if (owner === this.o.nodeId) return { state: 'pending' };
      const alive = await this.link.run('claim', (c) => c.exists(this.cluster.registry.leaseKey(owner)));
      if (alive === 0 && (await this.link.run('claim', (c) => c.cgwTakeover(key, s, mine, this.o.ttlMs))) === 1) return { state: 'new' };
      return { state: 'pending' };
    }
    const i = s.lastIndexOf(':');
    return { state: 'answered', epoch: s.slice(0, i), offset: Number(s.slice(i + 1)) };
  }

  async frameAt(stream: string, at: Position): Promise<StoredFrame | undefined> {
    const v = (await this.link.run('history read', (c) => c.cgwFrameAt(this.#key(stream, 'm'), this.#key(stream, 'l'), at.epoch, at.offset))) as string | null;
    return v ? { offset: at.offset, payload: v } : undefined;
  }

  /** A broadcast stream's frame from its channel. */
  #live(channel: Buffer, message: Buffer): void {
    if (this.#closed) return;
    const name = channel.toString('latin1');
    const stream = name.slice(this.o.prefix.length + 1, name.length - '}:live'.length);
    let v: unknown;
    try {
      v = packr.unpack(message);
    } catch {
      return;
    }
    if (!Array.isArray(v) || v.length !== 3) return;
    const [epoch, offset, payload] = v as [unknown, unknown, unknown];
    // Lua's cmsgpack packs a string as msgpack str: it unpacks as one.
    this.sink.frame(stream, String(epoch), { offset: Number(offset), payload: payload instanceof Uint8Array ? asBuffer(payload).toString() : String(payload) });
  }

  #inboxFrame(m: unknown[]): void {
    const [, stream, epoch, offset, payload] = m as [string, string, string, number, string];
    if (this.#follows.has(stream)) this.sink.frame(stream, epoch, { offset, payload });
  }

  #inboxChunk(m: unknown[]): void {
    const [, stream, messageId, index, delta] = m as [string, string, string, number, string];
    if (this.#follows.has(stream)) this.sink.chunk(stream, { messageId, index, delta });
  }

  /** When each stream was last suspected (at most one check per stream per second). */
  readonly #suspected = new Map<string, number>();

  /** A live frame came at or below what was delivered: if the stream's top in Redis went back, a new epoch (#rebase). */
  suspect(stream: string, epoch: string, last: number): void {
    const now = Date.now();
    if (now - (this.#suspected.get(stream) ?? 0) < 1000) return;
    this.#suspected.set(stream, now);
    if (this.#suspected.size > 10_000) this.#suspected.clear();
    this.link
      .run('history check', (c) => c.cgwTouch(...this.#keys(stream), this.o.ttlMs))
      .then((v) => {
        const [e, top] = [String((v as unknown[])[0]), Number((v as unknown[])[1])];
        return e === epoch && top < last ? this.#rebase(stream, epoch, top) : undefined;
      })
      .catch(() => {}); // the periodic check tries again
  }

  /** The stream went back (top below what was delivered): a new epoch, so its readers hear of the loss. */
  async #rebase(stream: string, epoch: string, top: number): Promise<void> {
    this.o.log.warn({ stream, epoch, top }, 'stream went back (a Redis failover lost its newest frames): new epoch');
    const e = String(await this.link.run('history rebase', (c) => c.cgwRebase(this.#key(stream, 'm'), epoch, newEpoch())));
    if (e !== '') this.behind(stream, e, top);
  }

  /** Every HISTORY_CHECK_S: followed streams against their top in Redis (a lost last message), and kept alive. */
  async #check(): Promise<void> {
    if (this.#closed || this.link.cmd.status !== 'ready') return;
    const mine = this.positions();
    for (let i = 0; i < mine.length; i += 500) {
      const batch = mine.slice(i, i + 500);
      try {
        // One command per stream (streams live on different slots of a Cluster), sent together: one write on one Redis (auto-pipelined), one command each to its slot's node on a Cluster.
        const res = await this.link.run('history check', (c) =>
          Promise.all(batch.map((s) => c.cgwTouch(...this.#keys(s.stream), this.o.ttlMs).then((v): [Error | null, unknown] => [null, v], (err: Error): [Error | null, unknown] => [err, undefined]))),
        );
        batch.forEach((s, j) => {
          const [err, v] = res?.[j] ?? [];
          if (err || !Array.isArray(v)) return;
          const epoch = String(v[0]);
          const top = Number(v[1]);
          if (epoch === s.epoch && top < s.last) void this.#rebase(s.stream, epoch, top);
          else if (epoch !== '' && (epoch !== s.epoch || top > s.last)) this.behind(s.stream, epoch, top);
        });
      } catch (err) {
        this.o.log.warn({ err: (err as Error).message }, 'history position check failed');
        return;
      }
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearInterval(this.#timer);
    this.#held.close();
    for (const stream of [...this.#follows.keys()]) {
      this.#follows.set(stream, 1);
      this.unfollow(stream);
    }
  }
}

function withDeadline<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new GatewayError('GW_ERR_REDIS_TIMEOUT', `${what} not confirmed within ${ms} ms`)), ms);
    p.then(
      (v) => {
        clearTimeout(t);
        resolve(v);
      },
      (e) => {
        clearTimeout(t);
        reject(e);
      },
    );
  });
}

declare module 'ioredis' {
  interface RedisCommander<Context> {
    cgwRebase(m: string, seen: string, epoch: string): Result<string, Context>;
    cgwAppend(numberOfKeys: number, ...keysThenArgs: Array<string | number>): Result<unknown, Context>;
    cgwRead(m: string, l: string, n: string, p: string, afterEpoch: string, afterOffset: number, ttl: number, epoch: string, node: string): Result<unknown, Context>;
    cgwTouch(m: string, l: string, n: string, p: string, ttl: number): Result<unknown, Context>;
    cgwClaim(c: string, ttl: number, pending: string): Result<unknown, Context>;
    cgwTakeover(c: string, seen: string, mine: string, ttl: number): Result<unknown, Context>;
    cgwPiece(p: string, n: string, messageId: string, index: number, delta: string, ttl: number): Result<unknown, Context>;
    cgwFrameAt(m: string, l: string, epoch: string, offset: number): Result<unknown, Context>;
  }
  interface ChainableCommander {
    cgwTouch(m: string, l: string, n: string, p: string, ttl: number): ChainableCommander;
  }
}
