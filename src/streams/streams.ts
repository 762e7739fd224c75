/**
 * Streams: what makes widget.v2 delivery recoverable ("Nothing lost").
 *
 * Every widget.v2 socket reads two streams: its session's (`s/<creator>/<session>`:
 * answers, errors and targeted sends of the session) and its creator's
 * broadcast stream (`b/<creator>`). A stream has an epoch (a string that
 * changes whenever its history is lost: the store restarted empty, the
 * stream expired or was evicted) and offsets contiguous per epoch from 1.
 * The store keeps the last HISTORY_SIZE frames of each stream for
 * HISTORY_TTL_S after its last append.
 *
 * A `StreamStore` is where streams live: this process (`LocalStreams`,
 * standalone), the primary (`EmbeddedStreams`, over IPC; it survives
 * worker crashes) or Redis (`RedisStreams`, every host). Guarantees, for
 * every implementation (test/streams-contract.test.ts):
 *   - `append` assigns the next offset and stores the frame atomically with
 *     its live delivery: every node following the stream gets it, so history
 *     and live never disagree; it resolves after this node's own delivery
 *     (embedded mode, a session leased to this worker: delivered here first
 *     and stored by the primary in the same turn; a worker lost between the
 *     two gives the stream a new epoch, primary/streams.ts);
 *   - live frames reach a following node in offset order, at most once
 *     (the hub, streams/hub.ts, drops duplicates and fills a gap from
 *     history, so a frame lost on the way is recovered);
 *   - `follow` resolves once following is in effect: a frame appended after
 *     it is delivered live, and one appended before is in what it read;
 *   - every call settles within a deadline; a store that cannot be reached
 *     rejects with a coded error, never a hang.
 */

/** A position in a stream: the epoch and the last offset (0: nothing yet). */
export interface Position {
  epoch: string;
  offset: number;
}

/**
 * A frame of a stream, as stored: JSON text without the offset (hub.ts adds
 * it). Text, not bytes, end to end: a frame is made as a string, sent to
 * sockets as one, and crosses cluster IPC as one (V8's serializer copies a
 * string natively, where a Uint8Array goes through a JS callback each way).
 */
export interface StoredFrame {
  offset: number;
  payload: string;
}

/**
 * A piece of a streamed answer (issue "AI answers streamed"): `delta` starts
 * at character `index` of the answer. Pieces travel between nodes as they
 * are (linear, whatever the answer's length); a node keeps each answer's
 * text so far, appends a piece that starts where the text ends, skips what
 * it has, and reads the text so far from the store when it finds a gap.
 */
export interface Chunk {
  messageId: string;
  index: number;
  delta: string;
}

/** A streamed answer's text so far. */
export interface Partial {
  messageId: string;
  text: string;
}

/** Appends `c` to an answer's text so far: the new text, or undefined on a gap (a piece went missing). */
export function extend(text: string, c: Chunk): string | undefined {
  if (c.index > text.length) return undefined;
  const end = c.index + c.delta.length;
  return end <= text.length ? text : text + c.delta.slice(text.length - c.index);
}

/** What `follow` read. */
export interface ReadResult {
  /** The stream's epoch and top now (following creates a stream that does not exist yet: top 0). */
  epoch: string;
  top: number;
  /**
   * With `after`: the frames after it, in order, when they are all still
   * kept in that epoch (`lost` false); else `lost` is true and `frames` empty.
   */
  frames: StoredFrame[];
  lost: boolean;
  /** Session streams: the answer being streamed now, if one is. */
  partial?: Partial;
  /**
   * Embedded mode: this follow made the worker the holder of the session
   * stream's offsets (primary/streams.ts, leases), from `epoch` and `top`.
   */
  lease?: true;
}

/** A client_message_id's state in its session stream. */
export type Claim = { state: 'new' } | { state: 'pending' } | { state: 'answered'; epoch: string; offset: number };

/** Where a store delivers the live frames and chunks of the streams this node follows (the hub). */
export interface StreamSink {
  frame(stream: string, epoch: string, frame: StoredFrame): void;
  chunk(stream: string, chunk: Chunk): void;
}

export interface StreamStore {
  /**
   * Appends `payload` to `stream` and delivers it to every following node.
   * `o.cmid`: the client_message_id this frame answers (marks it answered);
   * `o.ends`: the message id of the streamed answer it completes (its
   * partial is dropped).
   */
  append(stream: string, payload: string, o?: AppendOptions): Promise<Position>;
  /**
   * Records a streamed answer's progress (for a socket that joins
   * mid-answer) and delivers it to every other node following the stream.
   * Fire and forget: a chunk lost on the way is made up by the next, or by
   * the final answer.
   */
  chunk(stream: string, chunk: Chunk): void;
  /**
   * Follows `stream` on this node (counted: one unfollow per follow, also
   * when the read fails: the store keeps wanting the stream) and reads it:
   * its top, and with `after` the frames since.
   */
  follow(stream: string, after?: Position): Promise<ReadResult>;
  unfollow(stream: string): void;
  /** Claims `cmid` in a session stream (first come: 'new'; kept HISTORY_TTL_S). */
  claim(stream: string, cmid: string): Promise<Claim>;
  /** The frame at `offset`, if still kept in that epoch (a retried client_message_id's answer). */
  frameAt(stream: string, at: Position): Promise<StoredFrame | undefined>;
  /**
   * A live frame came at or below what this node already delivered (`last`)
   * in the same epoch: a duplicate, or the store went back (a Redis failover
   * that lost the newest writes, so offsets are being given again). A store
   * that can go back checks, and if so gives the stream a new epoch, so
   * readers get continuity_lost instead of frames dropped as duplicates.
   */
  suspect?(stream: string, epoch: string, last: number): void;
  close(): Promise<void>;
}

export interface AppendOptions {
  cmid?: string;
  ends?: string;
}

export interface HistoryOptions {
  /** Frames kept per stream (HISTORY_SIZE). */
  size: number;
  /** A stream is forgotten this long after its last append (HISTORY_TTL_S). */
  ttlMs: number;
  /** Embedded store: the most bytes of frames kept in all (HISTORY_MAX_BYTES); the least recently appended streams go first. */
  maxBytes: number;
}

export const sessionStream = (creatorId: string, sessionId: string): string => `s/${creatorId}/${sessionId}`;
export const broadcastStream = (creatorId: string): string => `b/${creatorId}`;

/** The creator of a broadcast stream, or undefined. */
export function creatorOfStream(stream: string): string | undefined {
  return stream.startsWith('b/') ? stream.slice(2) : undefined;
}

const EPOCH = /^[A-Za-z0-9_-]{1,64}$/;

/**
 * Parses a resume position `EPOCH:OFFSET` from a connect URL; undefined when
 * malformed (the socket is then refused with 4400).
 */
export function parsePosition(raw: string): Position | undefined {
  if (raw.length > 96) return undefined;
  const i = raw.lastIndexOf(':');
  if (i <= 0) return undefined;
  const epoch = raw.slice(0, i);
  const digits = raw.slice(i + 1);
  if (!EPOCH.test(epoch) || !/^\d{1,15}$/.test(digits)) return undefined;
  return { epoch, offset: Number(digits) };
}

/** 64 random bits as hex, drawn once per process. */
const EPOCH_PREFIX = crypto.getRandomValues(new Uint8Array(8)).reduce((s, b) => s + b.toString(16).padStart(2, '0'), '');
let epochCount = 0;

/**
 * A new epoch: this process's random prefix and a counter, so never one
 * another process or an earlier epoch of this one had. Cheap on purpose:
 * every Redis append passes one (used only if the stream has to be created).
 */
export function newEpoch(): string {
  return `${EPOCH_PREFIX}${(epochCount++).toString(36)}`;
}

/**
 * Whether every frame after `after` can be read from a stream at (`epoch`,
 * `top`) whose oldest kept offset is `oldest` (top + 1 when none is kept).
 */
export function recoverable(after: Position, epoch: string, top: number, oldest: number): boolean {
  return after.epoch === epoch && after.offset <= top && after.offset + 1 >= oldest;
}
