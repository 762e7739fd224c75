/**
 * A worker's side of the streams: it follows the streams its sockets read,
 * puts their frames in offset order, and delivers them.
 *
 * Node level, per stream: the last offset delivered here. A frame at
 * last + 1 is delivered; an older one is a duplicate and dropped; a newer
 * one waits while the gap is read from the history (a pub/sub message lost
 * on the way); a gap the history no longer holds, or a new epoch (the store
 * lost the stream), is told to the stream's widget.v2 readers as
 * `continuity_lost`, never hidden.
 *
 * Delivery: a broadcast stream's frame goes to the creator's widget.v1 (and
 * msgpack) sockets as POSTed, through native uWS topics, and to its
 * widget.v2 sockets as `{"type":"broadcast","offset":N,"data":...}` through
 * the topic `2c/<creator>` (built once per frame per worker). A session
 * stream's frame (an ai_response, error or targeted `message`, stored
 * without its offset) goes to each widget.v2 socket of the session with
 * `"offset":N` added.
 *
 * A widget.v2 socket that opens (with or without a resume position) joins
 * both its streams "recovering": the node follows the stream (so nothing
 * appended from then on can miss it), reads the history since the
 * position, and meanwhile buffers what arrives live; it then sends the
 * replay, then the buffered frames past it, then goes live. No gap and no
 * duplicate at the seam (issue "Nothing lost").
 */
import type { TemplatedApp } from '@trufflesuite/uws-js-unofficial';
import type { Logger } from '../observability/log.js';
import { broadcastStream, creatorOfStream, extend, type Chunk, type Partial, type Position, type ReadResult, type StoredFrame, type StreamSink, type StreamStore } from './streams.js';
import { Buffer } from 'node:buffer';

/** What the hub needs of a widget.v2 socket. */
export interface StreamReader {
  readonly creatorId: string;
  readonly sessionId: string;
  /** Its session's stream name (sessionStream of the two above), made once per socket: a Map key on every frame, hashed once. */
  readonly sessionStream: string;
  readonly closed: boolean;
  /** Per-stream state, owned by the hub. */
  reading: { session: ReaderState; broadcast: ReaderState; chunks: ChunkState } | undefined;
  /** Sends a stream frame (JSON text) under the slow-consumer policy. */
  sendFrame(frame: string): void;
  /** Bytes buffered for the socket (chunks are merged while it is slow; a replay is paced). */
  buffered(): number;
  /** Closes the socket as a slow consumer (4009): it could not keep up even with a paced replay. */
  tooSlow(): void;
  /** Subscribes the socket to a uWS topic (the broadcast stream's live topic). */
  subscribe(topic: string): void;
  /** The client asked for its replays in `replay` frames (`replay=batch`), not a frame at a time. */
  readonly replayBatch?: boolean;
}

/**
 * The most frame text (UTF-8 bytes) one `replay` frame carries; it carries
 * no more than the replay's pace either (half the slow-consumer limit). A
 * frame larger than that goes alone in its own. Batches are cut by the
 * frames alone, so the sockets that share a read share its batches' text too.
 */
export const REPLAY_BATCH_BYTES = 64 * 1024;

export interface ReaderState {
  /** The last offset this socket was sent or queued (or its starting point). */
  sent: number;
  /** The replay was read: frames past `sent` go out (through `queue` while it is not empty). */
  live: boolean;
  /** Frames that arrived while the replay was read. */
  buffer: Array<{ offset: number; frame: string }>;
  /**
   * Frames to send, paced by the socket's buffer: a replay larger than the
   * slow-consumer limit goes out as the client reads it (on drain), never
   * tripping 4009 by itself. Live frames queued behind it are bounded.
   */
  queue: Array<string | StoredFrame>;
  /** Bytes of live frames queued behind a replay. */
  queuedLive: number;
}

/**
 * A session reader's view of the answers streamed to it: per message id,
 * how many characters of the node's text of it (NodeStream.answers) it was
 * sent. A chunk frame carries a delta and its `index`, the position of its
 * first character in the answer, so deltas are contiguous and a socket that
 * joins mid-answer gets the text so far as one chunk at index 0. While the
 * socket is slow, nothing is sent; the next send (or the drain) covers the
 * whole backlog as one larger chunk, and no content is dropped.
 */
export interface ChunkState {
  answers: Map<string, number>;
}

/** The uWS topic of a creator's widget.v2 broadcast frames. */
export const v2Topic = (creatorId: string): string => `2c/${creatorId}`;

interface NodeStream {
  id: string;
  creator: string;
  broadcast: boolean;
  /** Follows this node made of the stream: one per v2 reader, one for the creator's sockets on this node (broadcast streams), one while v1 sockets wait on a hold. */
  follows: number;
  /**
   * Of `follows`, creator follows that needed no follow of the store: the
   * node was already following the stream, positioned (a v1 socket's hold).
   * Undone first, so the store keeps a follow while the node has any.
   */
  adopted: number;
  epoch: string | undefined;
  last: number;
  /** Frames ahead of `last + 1`, waiting for a gap to be filled. */
  held: Map<number, StoredFrame>;
  filling: boolean;
  /** Frames that arrived before the first read told this node where the stream stands. */
  early: Array<{ epoch: string; frame: StoredFrame }>;
  /** Reads in flight. */
  reading: number;
  /** Session streams: every v2 reader. Broadcast streams: the readers not yet on the live topic. */
  readers: Set<StreamReader>;
  /** Session streams: the answers streaming now, with their text so far at this node. */
  answers: Map<string, string>;
}

/** The message id of an ai_response frame (the end of a streamed answer), if `frame` is one. */
function answerIdOf(frame: string): string | undefined {
  if (!frame.includes('"type":"ai_response"') && !frame.includes('"type":"error"')) return undefined;
  const m = /"message_id":"([^"]+)"/.exec(frame);
  return m?.[1];
}

/** A broadcast stream frame as a widget.v2 socket receives it. */
export function broadcastFrame(f: StoredFrame): string {
  return `{"type":"broadcast","offset":${f.offset},"data":${f.payload}}`;
}

/** A session stream frame (stored without its offset) as a widget.v2 socket receives it. */
export function sessionFrame(f: StoredFrame): string {
  return `{"offset":${f.offset},${f.payload.slice(1)}`;
}

/** The content of an ai_response frame. */
function contentOf(frame: string): string | undefined {
  try {
    const c = (JSON.parse(frame) as { content?: unknown }).content;
    return typeof c === 'string' ? c : undefined;
  } catch {
    return undefined;
  }
}

export function chunkFrame(c: { messageId: string; index: number; delta: string }): string {
  return `{"type":"ai_response_chunk","message_id":"${c.messageId}","index":${c.index},"delta":${JSON.stringify(c.delta)}}`;
}

export interface HubCounters {
  /** Gaps filled from history. */
  gapsFilled: number;
  /** continuity_lost sent, by stream kind. */
  continuityLost: { session: number; broadcast: number };
  /** Resumes by result. */
  resumes: { recovered: number; lost: number };
  /** Chunks merged into a slow reader's backlog. */
  chunksMerged: number;
}

export interface StreamHubOptions {
  app: TemplatedApp;
  log: Logger;
  /** Local delivery of a broadcast's v1 frame (uWS topic and its msgpack twin, with the slow-consumer check). */
  publishV1(creatorId: string, payload: string): void;
  /** Before a publish to a v2 topic (the slow-consumer check), with its size. */
  beforePublish(creatorId: string, bytes: number): void;
  /** A reader with more than this buffered gets chunks merged instead of one frame each. */
  slowChunkBytes: number;
  /** A replay is sent while less than this is buffered for the socket, the rest on drain. */
  paceBytes: number;
  /** Live frames queued behind a replay beyond this close the socket (4009). */
  maxQueuedBytes: number;
}

/** A wait that holds something until released (see StreamHub.holdCreator). */
export interface Hold {
  ready: Promise<void>;
  release: () => void;
}

export class StreamHub {
  readonly #streams = new Map<string, NodeStream>();
  /** Replayed frames' text (#replayText). */
  readonly #texts = new WeakMap<StoredFrame, string>();
  /** Replay batches' text (#batchText), by their first frame. */
  readonly #batches = new WeakMap<StoredFrame, { frames: number; text: string }>();
  /** v1 sockets waiting for their creator's broadcast stream (holdCreator), by creator: one follow for them all. */
  readonly #holds = new Map<string, { count: number; ready: Promise<void> }>();
  store!: StreamStore;
  readonly counters: HubCounters = { gapsFilled: 0, continuityLost: { session: 0, broadcast: 0 }, resumes: { recovered: 0, lost: 0 }, chunksMerged: 0 };

  constructor(private readonly o: StreamHubOptions) {}

  /** Where the store delivers (give it to the store's constructor). */
  readonly sink: StreamSink = {
    frame: (stream, epoch, frame) => {
      const ns = this.#streams.get(stream);
      if (ns === undefined) return;
      if (ns.epoch !== undefined) this.#ordered(ns, epoch, frame);
      else if (ns.reading > 0) ns.early.push({ epoch, frame });
      else this.#position(ns, epoch, frame.offset - 1, { epoch, frame });
    },
    chunk: (stream, chunk) => this.#piece(stream, chunk, false),
  };

  // ---- following

  #node(id: string): NodeStream {
    let ns = this.#streams.get(id);
    if (ns === undefined) {
      const creator = creatorOfStream(id);
      ns = {
        id,
        creator: creator ?? id.split('/')[1]!,
        broadcast: creator !== undefined,
        follows: 0,
        adopted: 0,
        epoch: undefined,
        last: 0,
        held: new Map(),
        filling: false,
        early: [],
        reading: 0,
        readers: new Set(),
        answers: new Map(),
      };
      this.#streams.set(id, ns);
    }
    return ns;
  }

  /**
   * Follows `id` once more and reads it; the node's position is set by the
   * first read. The follow counts even when the read fails (the store keeps
   * wanting the stream, e.g. its Redis subscription): the caller unfollows
   * when it gives up.
   */
  async #follow(ns: NodeStream, after?: Position): Promise<ReadResult> {
    ns.follows++;
    ns.reading++;
    try {
      const res = await this.store.follow(ns.id, after);
      this.#position(ns, res.epoch, res.top);
      return res;
    } finally {
      ns.reading--;
      // A failed first read: the next live frame tells where the stream stands.
      if (ns.epoch === undefined && ns.reading === 0) for (const e of ns.early.splice(0)) this.#position(ns, e.epoch, e.frame.offset - 1, e);
    }
  }

  /** Sets the node's position in a stream it had none for, then delivers what arrived meanwhile. */
  #position(ns: NodeStream, epoch: string, top: number, first?: { epoch: string; frame: StoredFrame }): void {
    if (ns.epoch !== undefined) {
      if (first) this.#ordered(ns, first.epoch, first.frame);
      return;
    }
    ns.epoch = epoch;
    ns.last = top;
    if (first) this.#ordered(ns, first.epoch, first.frame);
    for (const e of ns.early.splice(0)) this.#ordered(ns, e.epoch, e.frame);
  }

  #unfollow(ns: NodeStream): void {
    if (ns.follows <= 0) return;
    ns.follows--;
    if (ns.adopted > 0) ns.adopted--;
    else this.store.unfollow(ns.id);
    if (ns.follows === 0 && ns.readers.size === 0) this.#streams.delete(ns.id);
  }

  /**
   * Every socket of a creator (v1 too) makes this node follow its broadcast
   * stream. A wanted state: the follow stands even if its read failed (Redis
   * down); the first live frame then sets the node's position. A node
   * that already follows the stream and knows where it stands (the hold of
   * the v1 socket now opening) reads nothing: it counts one more follow of
   * its own.
   */
  followCreator(creatorId: string): void {
    const ns = this.#node(broadcastStream(creatorId));
    if (ns.follows > ns.adopted && ns.epoch !== undefined) {
      ns.follows++;
      ns.adopted++;
      return;
    }
    this.#follow(ns).catch((err: Error) => this.o.log.warn({ stream: ns.id, err: err.message }, 'could not read a broadcast stream; following it anyway'));
  }

  /**
   * Before a v1 socket's connection_status: undefined when this node is
   * positioned in the creator's broadcast stream (every later frame reaches
   * its readers), else a hold on it, with `ready` settling when the stream's
   * first read did (failed or not) and `release` to call once the socket
   * follows through its own (or is gone). The holds of one creator share
   * one follow and one read: a connect storm costs one, not one per socket.
   */
  holdCreator(creatorId: string): Hold | undefined {
    const ns = this.#node(broadcastStream(creatorId));
    if (ns.follows > 0 && ns.epoch !== undefined) return undefined;
    let h = this.#holds.get(creatorId);
    if (!h) {
      const ready = this.#follow(ns).then(
        () => {},
        () => {},
      );
      h = { count: 0, ready };
      this.#holds.set(creatorId, h);
    }
    h.count++;
    const held = h;
    return {
      ready: held.ready,
      release: () => {
        if (--held.count > 0 || this.#holds.get(creatorId) !== held) return;
        this.#holds.delete(creatorId);
        this.#unfollow(ns);
      },
    };
  }

  unfollowCreator(creatorId: string): void {
    const ns = this.#streams.get(broadcastStream(creatorId));
    if (ns) this.#unfollow(ns);
  }

  // ---- widget.v2 sockets

  /**
   * Joins a widget.v2 socket to its two streams. Resolves with what
   * connection_status reports; then `start` sends the replay (and any
   * continuity_lost) and makes the socket live. Rejects (coded) when the
   * store cannot be reached: the caller closes the socket with 1013.
   */
  async join(r: StreamReader, resume: { session?: Position; broadcast?: Position }): Promise<Joined> {
    const s = this.#node(r.sessionStream);
    const b = this.#node(broadcastStream(r.creatorId));
    const reader = (): ReaderState => ({ sent: 0, live: false, buffer: [], queue: [], queuedLive: 0 });
    r.reading = { session: reader(), broadcast: reader(), chunks: { answers: new Map() } };
    s.readers.add(r);
    b.readers.add(r);
    const [rs, rb] = await Promise.allSettled([this.#follow(s, resume.session), this.#follow(b, resume.broadcast)]);
    if (rs.status === 'fulfilled' && rb.status === 'fulfilled') {
      return { session: { ns: s, res: rs.value, asked: resume.session !== undefined }, broadcast: { ns: b, res: rb.value, asked: resume.broadcast !== undefined } };
    }
    // Not joined: leave both (each follow counted, failed or not).
    s.readers.delete(r);
    b.readers.delete(r);
    r.reading = undefined;
    this.#unfollow(s);
    this.#unfollow(b);
    throw rs.status === 'rejected' ? rs.reason : (rb as PromiseRejectedResult).reason;
  }

  /** After connection_status: replays each stream (or tells it lost), flushes what arrived meanwhile, goes live. */
  start(r: StreamReader, j: Joined): void {
    if (r.closed || r.reading === undefined) return;
    this.#start(r, j.session, r.reading.session, 'session');
    // An answer being streamed in this session: the text so far as one chunk, then the rest live.
    const p = j.session.res.partial;
    if (p) this.#known(j.session.ns, p);
    this.flushChunks(r);
    this.#start(r, j.broadcast, r.reading.broadcast, 'broadcast');
  }

  #start(r: StreamReader, part: JoinedStream, st: ReaderState, kind: 'session' | 'broadcast'): void {
    const { ns, res, asked } = part;
    if (asked) {
      if (res.lost) {
        this.counters.resumes.lost++;
        this.#tellLost(r, kind, res.epoch, res.top);
      } else this.counters.resumes.recovered++;
    }
    st.sent = res.top;
    if (asked && !res.lost && res.frames.length > 0) {
      // The replay is queued as stored (turned into text as it is sent): paced by the socket.
      st.queue.push(...res.frames);
      st.sent = res.frames.at(-1)!.offset;
    }
    st.live = true;
    const buffered = st.buffer.splice(0).sort((x, y) => x.offset - y.offset);
    for (const b of buffered) this.#offer(r, st, b.offset, b.frame);
    this.#pump(r, st, ns);
  }

  /** Sends a reader's queue while its socket keeps up; a broadcast reader then joins the live topic. */
  #pump(r: StreamReader, st: ReaderState, ns: NodeStream): void {
    while (st.queue.length > 0 && !r.closed && r.buffered() <= this.o.paceBytes) {
      const next = st.queue[0]!;
      if (typeof next === 'string') {
        st.queue.shift();
        st.queuedLive -= next.length;
        r.sendFrame(next);
      } else if (r.replayBatch) r.sendFrame(this.#batchText(ns, st.queue));
      else r.sendFrame(this.#replayText(ns, st.queue.shift() as StoredFrame));
    }
    if (st.queue.length === 0) st.queuedLive = 0;
    if (ns.broadcast) this.#maybeToTopic(ns, r, st);
  }

  /** The socket drained: its paced replays go on, then what it lacks of its streamed answers. */
  drain(r: StreamReader): void {
    const st = r.reading;
    if (!st) return;
    for (const [kind, id] of [['session', r.sessionStream], ['broadcast', broadcastStream(r.creatorId)]] as const) {
      const ns = this.#streams.get(id);
      if (ns && st[kind].queue.length > 0) this.#pump(r, st[kind], ns);
    }
    this.flushChunks(r);
  }

  /** A broadcast reader joins the live topic once the node has delivered up to where it is, and its queue is sent. */
  #maybeToTopic(ns: NodeStream, r: StreamReader, st: ReaderState): void {
    if (!st.live || r.closed || st.queue.length > 0 || ns.last < st.sent || !ns.readers.has(r)) return;
    ns.readers.delete(r);
    r.subscribe(v2Topic(ns.creator));
  }

  /** A widget.v2 socket closed: it leaves both streams. */
  leave(r: StreamReader): void {
    if (r.reading === undefined) return;
    r.reading = undefined;
    for (const id of [r.sessionStream, broadcastStream(r.creatorId)]) {
      const ns = this.#streams.get(id);
      if (!ns) continue;
      ns.readers.delete(r);
      this.#unfollow(ns);
    }
  }

  // ---- chunks of streamed answers (ephemeral)

  /**
   * A piece of an answer streamed on this node: to this node's readers of
   * the session now, and through the store to the other nodes (which also
   * keeps the text so far for a socket that joins mid-answer).
   */
  chunk(stream: string, c: Chunk): void {
    this.#piece(stream, c, true);
    this.store.chunk(stream, c);
  }

  /** A piece reaches this node: the answer's text grows; on a gap, the text so far is read from the store. */
  #piece(stream: string, c: Chunk, own: boolean): void {
    const ns = this.#streams.get(stream);
    if (!ns || (ns.readers.size === 0 && !own)) return;
    const text = extend(ns.answers.get(c.messageId) ?? '', c);
    if (text !== undefined) {
      ns.answers.set(c.messageId, text);
      for (const r of ns.readers) this.#sendChunk(r, c.messageId, text, c);
      return;
    }
    // A piece went missing on the way (between nodes): read the text so far.
    this.store.follow(stream).then(
      (res) => {
        this.store.unfollow(stream);
        if (res.partial?.messageId === c.messageId) this.#known(ns, res.partial);
      },
      () => {},
    );
  }

  /** The text so far of an answer, from the store (a join, or a gap): readers get what they lack. */
  #known(ns: NodeStream, p: Partial): void {
    const have = ns.answers.get(p.messageId) ?? '';
    if (p.text.length <= have.length) return;
    ns.answers.set(p.messageId, p.text);
    for (const r of ns.readers) this.#sendChunk(r, p.messageId, p.text);
  }

  /**
   * Sends a reader what it lacks of an answer, unless it is replaying or
   * slow (then it is merged into the next send). `piece`: the piece that
   * just arrived, sent as it is when the reader is up to it (the common
   * case: no slice of a long text).
   */
  #sendChunk(r: StreamReader, messageId: string, text: string, piece?: Chunk): void {
    const st = r.reading;
    if (!st || r.closed || !st.session.live) return;
    const sent = st.chunks.answers.get(messageId) ?? 0;
    if (sent >= text.length) return;
    if (r.buffered() > this.o.slowChunkBytes) {
      this.counters.chunksMerged++;
      return;
    }
    if (piece && piece.index === sent) {
      st.chunks.answers.set(messageId, sent + piece.delta.length);
      r.sendFrame(chunkFrame(piece));
    } else this.#sendDelta(r, messageId, sent, text);
  }

  /** Sends what the reader lacks of `text`, at most `slowChunkBytes` of it at a time (the rest on the next piece or drain). */
  #sendDelta(r: StreamReader, messageId: string, sent: number, text: string): void {
    const chunks = r.reading?.chunks;
    if (!chunks) return;
    const end = Math.min(text.length, sent + this.o.slowChunkBytes);
    chunks.answers.set(messageId, end);
    r.sendFrame(chunkFrame({ messageId, index: sent, delta: text.slice(sent, end) }));
  }

  /** Sends a reader what it lacks of the answers streaming in its session (the socket drained, or it just joined). */
  flushChunks(r: StreamReader): void {
    const st = r.reading;
    if (!st || r.closed || !st.session.live) return;
    const ns = this.#streams.get(r.sessionStream);
    if (!ns) return;
    for (const [m, text] of ns.answers) {
      let sent = st.chunks.answers.get(m) ?? 0;
      while (sent < text.length && !r.closed) {
        if (r.buffered() > this.o.slowChunkBytes) return;
        this.#sendDelta(r, m, sent, text);
        sent = st.chunks.answers.get(m) ?? text.length;
      }
    }
  }

  // ---- frames

  /** The frame as a socket receives it. */
  #frame(ns: NodeStream, f: StoredFrame): string {
    return ns.broadcast ? broadcastFrame(f) : sessionFrame(f);
  }

  /**
   * A replayed frame as text, made once for all the sockets that share the
   * read it came from (streams/reads.ts: a reconnect storm's resumes share
   * one), kept while any of them still has it queued.
   */
  #replayText(ns: NodeStream, f: StoredFrame): string {
    let text = this.#texts.get(f);
    if (text === undefined) this.#texts.set(f, (text = this.#frame(ns, f)));
    return text;
  }

  /**
   * Takes the replayed frames at the head of `queue` (up to a live frame,
   * or REPLAY_BATCH_BYTES of text, or the pace) as one `replay` frame:
   * `{"type":"replay","stream":"session"|"broadcast","frames":[...]}`, each
   * frame as it would have been sent alone, in order. Made once for all the
   * sockets sharing the read (its first frame is the key: cut by the frames
   * alone, the same frames make the same batch).
   */
  #batchText(ns: NodeStream, queue: ReaderState['queue']): string {
    const first = queue[0] as StoredFrame;
    const cached = this.#batches.get(first);
    // Replayed frames precede any live text in a queue: the span is all replayed frames if its last one is.
    if (cached !== undefined && queue.length >= cached.frames && typeof queue[cached.frames - 1] !== 'string') {
      queue.splice(0, cached.frames);
      return cached.text;
    }
    const texts: string[] = [];
    // Within the pace too, so a batch never takes a socket that keeps up past the slow-consumer limit.
    const most = Math.min(REPLAY_BATCH_BYTES, this.o.paceBytes);
    let bytes = 0;
    while (queue.length > 0 && typeof queue[0] !== 'string') {
      const t = this.#replayText(ns, queue[0]!);
      const n = Buffer.byteLength(t);
      if (texts.length > 0 && bytes + n > most) break;
      texts.push(t);
      bytes += n;
      queue.shift();
    }
    const text = `{"type":"replay","stream":"${ns.broadcast ? 'broadcast' : 'session'}","frames":[${texts.join(',')}]}`;
    this.#batches.set(first, { frames: texts.length, text });
    return text;
  }

  #ordered(ns: NodeStream, epoch: string, f: StoredFrame): void {
    if (epoch !== ns.epoch) {
      // The store lost the stream (restarted empty, expired, evicted): a new epoch.
      this.o.log.warn({ stream: ns.id, from: ns.epoch, to: epoch }, 'stream history lost: new epoch');
      ns.epoch = epoch;
      ns.last = f.offset - 1;
      ns.held.clear();
      this.#lostToAll(ns, epoch, ns.last);
    }
    if (f.offset <= ns.last) {
      if (!ns.filling) this.store.suspect?.(ns.id, ns.epoch!, ns.last);
      return;
    }
    if (f.offset > ns.last + 1) {
      ns.held.set(f.offset, f);
      this.#fill(ns);
      return;
    }
    this.#deliver(ns, f);
    let next: StoredFrame | undefined;
    while ((next = ns.held.get(ns.last + 1)) !== undefined) {
      ns.held.delete(next.offset);
      this.#deliver(ns, next);
    }
  }

  /** Reads the gap after `last` from the history; what it no longer holds is told lost. */
  #fill(ns: NodeStream): void {
    if (ns.filling || ns.epoch === undefined) return;
    ns.filling = true;
    const from: Position = { epoch: ns.epoch, offset: ns.last };
    this.store.follow(ns.id, from).then(
      (res) => {
        this.store.unfollow(ns.id);
        ns.filling = false;
        if (res.lost) {
          const upTo = ns.held.size > 0 ? Math.min(...ns.held.keys()) - 1 : res.top;
          this.o.log.warn({ stream: ns.id, from: ns.last, to: upTo }, 'a gap no longer in the history: continuity lost');
          ns.epoch = res.epoch;
          ns.last = res.epoch === from.epoch ? upTo : 0;
          this.#lostToAll(ns, res.epoch, ns.last);
        } else {
          this.counters.gapsFilled++;
          for (const f of res.frames) if (f.offset === ns.last + 1) this.#deliver(ns, f);
        }
        for (const k of [...ns.held.keys()].sort((a, b) => a - b)) {
          const f = ns.held.get(k)!;
          ns.held.delete(k);
          if (f.offset === ns.last + 1) this.#deliver(ns, f);
          else if (f.offset > ns.last + 1) {
            ns.held.set(k, f);
            this.#fill(ns);
            break;
          }
        }
      },
      (err: Error) => {
        ns.filling = false;
        this.o.log.warn({ stream: ns.id, err: err.message }, 'could not read a stream gap; retrying');
        setTimeout(() => this.#fill(ns), 500).unref();
      },
    );
  }

  #deliver(ns: NodeStream, f: StoredFrame): void {
    ns.last = f.offset;
    if (ns.broadcast) {
      this.o.publishV1(ns.creator, f.payload);
      const topic = v2Topic(ns.creator);
      const hasTopic = this.o.app.numSubscribers(topic) > 0;
      if (!hasTopic && ns.readers.size === 0) return;
      const frame = this.#frame(ns, f);
      if (hasTopic) {
        this.o.beforePublish(ns.creator, frame.length);
        this.o.app.publish(topic, frame, false);
      }
      for (const r of [...ns.readers]) {
        const st = r.reading?.broadcast;
        if (!st) continue;
        this.#offer(r, st, f.offset, frame);
        this.#maybeToTopic(ns, r, st);
      }
      return;
    }
    if (ns.readers.size === 0) return;
    const frame = this.#frame(ns, f);
    // Only an answer streaming at this node has state to end (no parse of every frame for it).
    const ends = ns.answers.size > 0 ? answerIdOf(frame) : undefined;
    // The final answer of a streamed one: its content is the whole text (an
    // error ends it as it is), so a reader first gets what it lacks of it,
    // then the frame; the answer's chunk state is done.
    const content = ends !== undefined && ns.answers.has(ends) ? contentOf(frame) : undefined;
    for (const r of ns.readers) {
      const st = r.reading?.session;
      if (!st) continue;
      const chunks = r.reading?.chunks;
      if (ends !== undefined && chunks) {
        const sent = chunks.answers.get(ends);
        chunks.answers.delete(ends);
        // (a send may close the socket at once: its close handler then runs before this returns)
        if (content !== undefined && sent !== undefined && st.live && sent < content.length) {
          r.sendFrame(chunkFrame({ messageId: ends, index: sent, delta: content.slice(sent) }));
        }
      }
      this.#offer(r, st, f.offset, frame);
    }
    if (ends !== undefined) ns.answers.delete(ends);
  }

  #offer(r: StreamReader, st: ReaderState, offset: number, frame: string): void {
    if (r.closed || offset <= st.sent) return;
    if (!st.live) {
      st.buffer.push({ offset, frame });
      return;
    }
    st.sent = offset;
    if (st.queue.length === 0 && r.buffered() <= this.o.paceBytes) {
      r.sendFrame(frame);
      return;
    }
    st.queue.push(frame);
    st.queuedLive += frame.length;
    if (st.queuedLive > this.o.maxQueuedBytes) r.tooSlow();
  }

  #lostToAll(ns: NodeStream, epoch: string, top: number): void {
    const kind = ns.broadcast ? 'broadcast' : 'session';
    const frame = lostFrame(kind, epoch, top);
    if (ns.broadcast && this.o.app.numSubscribers(v2Topic(ns.creator)) > 0) {
      this.counters.continuityLost.broadcast++;
      this.o.app.publish(v2Topic(ns.creator), frame, false);
    }
    for (const r of ns.readers) {
      const st = r.reading?.[kind];
      if (!st) continue;
      st.sent = top;
      st.buffer.length = 0;
      st.queue.length = 0;
      st.queuedLive = 0;
      this.#tellLost(r, kind, epoch, top);
    }
  }

  #tellLost(r: StreamReader, kind: 'session' | 'broadcast', epoch: string, top: number): void {
    this.counters.continuityLost[kind]++;
    r.sendFrame(lostFrame(kind, epoch, top));
  }

  /** The streams this node follows with their position (the Redis position check). */
  positions(): Array<{ stream: string; epoch: string; last: number }> {
    const out: Array<{ stream: string; epoch: string; last: number }> = [];
    for (const ns of this.#streams.values()) if (ns.epoch !== undefined && ns.follows > 0) out.push({ stream: ns.id, epoch: ns.epoch, last: ns.last });
    return out;
  }

  /** The store says `stream` is at `top` in `epoch`: fill what this node missed (a lost last message). */
  behind(stream: string, epoch: string, top: number): void {
    const ns = this.#streams.get(stream);
    if (!ns || ns.epoch === undefined) return;
    if (epoch !== ns.epoch) {
      this.o.log.warn({ stream: ns.id, from: ns.epoch, to: epoch }, 'stream history lost: new epoch');
      ns.epoch = epoch;
      ns.last = top;
      ns.held.clear();
      this.#lostToAll(ns, epoch, top);
      return;
    }
    if (top > ns.last) this.#fill(ns);
  }

  get following(): number {
    return this.#streams.size;
  }
}

interface JoinedStream {
  ns: NodeStream;
  res: ReadResult;
  /** The socket asked to resume this stream. */
  asked: boolean;
}

export interface Joined {
  session: JoinedStream;
  broadcast: JoinedStream;
}

export function lostFrame(stream: 'session' | 'broadcast', epoch: string, offset: number): string {
  return `{"type":"continuity_lost","stream":"${stream}","epoch":"${epoch}","offset":${offset}}`;
}
