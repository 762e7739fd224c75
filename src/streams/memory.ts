/**
 * Streams in memory: a ring of the last HISTORY_SIZE frames per stream, an
 * epoch per stream, claimed client_message_ids, and a bound on the bytes
 * kept in all (streams not followed and least recently appended go first).
 * The primary holds one in embedded mode (it survives worker crashes), a
 * standalone gateway holds one, and it is the reference the Redis script
 * follows.
 *
 * Memory per stream: about 200 bytes plus, per kept frame, its bytes and a
 * string's header (a copy's objects, where frames are kept as copies; see
 * below). bench/RESULTS.md measures the primary's RSS per frame, the heap's
 * slack included: about 650 bytes for ~150-byte frames as strings, 918 as
 * copies.
 *
 * A kept frame is its text, the string it came as (about 16 bytes of
 * header; a string received over IPC is a fresh flat string, never a view
 * into the message it came in), unless the bound on history is too large
 * for the V8 heap: then its UTF-8 bytes, in an ArrayBuffer of its own.
 * HISTORY_MAX_BYTES counts a frame's UTF-8 bytes (its size on the wire and
 * in Redis): for the usual ASCII JSON, its size on the heap too (V8 keeps a
 * string with any character past U+00FF at two bytes per character: up to
 * twice what is counted, for mostly ASCII text).
 */
import { getHeapStatistics } from 'node:v8';
import { extend, newEpoch, recoverable, type AppendOptions, type Chunk, type Claim, type HistoryOptions, type Partial, type Position, type ReadResult, type StoredFrame } from './streams.js';
import { Buffer } from 'node:buffer';

interface Stream {
  id: string;
  epoch: string;
  top: number;
  /**
   * Kept frames' bytes (`keep`): a ring of at most HISTORY_SIZE, the oldest
   * at `head` (offsets top - frames.length + 1 .. top). A full ring
   * overwrites its oldest: no Array.shift, which moves every frame (and
   * the GC's write barrier over them) on every append.
   */
  frames: Kept[];
  head: number;
  bytes: number;
  /** Last append or follow (ms): expiry. */
  touched: number;
  /** Nodes following it (they keep it from expiring). */
  followers: number;
  /** client_message_id -> the offset of its answer (0: not answered yet), with when it was claimed. */
  claims: Map<string, { offset: number; at: number; owner: string }>;
  /** The answer being streamed now. */
  partial: (Partial & { owner: string }) | undefined;
  /** The eviction order, least recently appended (or created) first: a list through the streams (no Map reordering per append). */
  older: Stream | undefined;
  newer: Stream | undefined;
}

/** The `i`-th oldest kept frame of `s`. */
const keptAt = (s: Stream, i: number): Kept | undefined => (i < 0 || i >= s.frames.length ? undefined : s.frames[(s.head + i) % s.frames.length]);

export class MemoryStreamStore {
  readonly #streams = new Map<string, Stream>();
  /** The ends of the eviction order (`older`/`newer`). */
  #oldest: Stream | undefined;
  #newest: Stream | undefined;
  #bytes = 0;
  readonly #timer: NodeJS.Timeout;
  readonly #keep: (payload: string, bytes: number) => Kept;
  /** Streams dropped for the byte bound (a metric). */
  evicted = 0;

  constructor(
    private readonly o: HistoryOptions,
    private readonly now: () => number = Date.now,
  ) {
    this.#timer = setInterval(() => this.expire(), Math.min(10_000, Math.max(1000, o.ttlMs / 4)));
    this.#timer.unref();
    // Strings live in the V8 heap, whose limit is fixed at start-up: a bound near it keeps frames off the heap.
    this.#keep = o.maxBytes <= getHeapStatistics().heap_size_limit / 4 ? keepAsString : keepAsCopy;
  }

  get bytes(): number {
    return this.#bytes;
  }

  get size(): number {
    return this.#streams.size;
  }

  #get(stream: string): Stream {
    let s = this.#streams.get(stream);
    if (s === undefined) {
      s = { id: stream, epoch: newEpoch(), top: 0, frames: [], head: 0, bytes: 0, touched: this.now(), followers: 0, claims: new Map(), partial: undefined, older: undefined, newer: undefined };
      this.#streams.set(stream, s);
      this.#link(s);
    }
    return s;
  }

  /** Puts `s` at the newest end of the eviction order. */
  #link(s: Stream): void {
    s.older = this.#newest;
    s.newer = undefined;
    if (this.#newest) this.#newest.newer = s;
    else this.#oldest = s;
    this.#newest = s;
  }

  #unlink(s: Stream): void {
    if (s.older) s.older.newer = s.newer;
    else this.#oldest = s.newer;
    if (s.newer) s.newer.older = s.older;
    else this.#newest = s.older;
    s.older = s.newer = undefined;
  }

  append(stream: string, payload: string, o: AppendOptions = {}): Position {
    return this.#append(this.#get(stream), payload, o);
  }

  #append(s: Stream, payload: string, o: AppendOptions): Position {
    const cmid = o.cmid;
    if (o.ends !== undefined && s.partial?.messageId === o.ends) s.partial = undefined;
    s.top++;
    const bytes = Buffer.byteLength(payload);
    const kept = this.#keep(payload, bytes);
    s.bytes += bytes;
    this.#bytes += bytes;
    let dropped: Kept | undefined;
    if (this.o.size === 0) dropped = kept; // HISTORY_SIZE 0: numbered, never kept
    else if (s.frames.length < this.o.size) s.frames.push(kept);
    else {
      dropped = s.frames[s.head];
      s.frames[s.head] = kept;
      s.head = (s.head + 1) % s.frames.length;
    }
    if (dropped !== undefined) {
      const n = keptBytes(dropped);
      s.bytes -= n;
      this.#bytes -= n;
    }
    const now = this.now();
    if (cmid !== undefined) s.claims.set(cmid, { offset: s.top, at: now, owner: '' });
    s.touched = now;
    if (this.#newest !== s) {
      this.#unlink(s);
      this.#link(s);
    }
    if (this.#bytes > this.o.maxBytes) this.#evict(s);
    return { epoch: s.epoch, offset: s.top };
  }

  /**
   * Stores a frame at the offset a worker holding the stream's offsets gave
   * it (primary/streams.ts); undefined, storing nothing, unless that is the
   * stream's next offset in `epoch` (the stream expired, was evicted or
   * started again meanwhile).
   */
  put(stream: string, epoch: string, offset: number, payload: string, o: AppendOptions = {}): Position | undefined {
    const s = this.#streams.get(stream);
    if (s === undefined || s.epoch !== epoch || s.top + 1 !== offset) return undefined;
    return this.#append(s, payload, o);
  }

  /**
   * Starts `stream` again in a new epoch, with no frames: offsets above its
   * top may have been given out and never stored (a worker holding its
   * offsets died), so they must not be given again in the same epoch.
   * Readers are told (continuity_lost); answered claims are forgotten (their
   * frames are gone), pending ones kept.
   */
  rebase(stream: string): void {
    const s = this.#streams.get(stream);
    if (s === undefined) return;
    s.epoch = newEpoch();
    s.top = 0;
    s.frames = [];
    s.head = 0;
    this.#bytes -= s.bytes;
    s.bytes = 0;
    for (const [k, c] of s.claims) if (c.offset !== 0) s.claims.delete(k);
  }

  /** Reads `stream` (creating it, with a new epoch, if it does not exist). */
  read(stream: string, after?: Position): ReadResult {
    const s = this.#get(stream);
    s.touched = this.now();
    const partial = s.partial ? { partial: { messageId: s.partial.messageId, text: s.partial.text } } : {};
    if (after === undefined) return { epoch: s.epoch, top: s.top, frames: [], lost: false, ...partial };
    const oldest = s.top - s.frames.length + 1;
    if (!recoverable(after, s.epoch, s.top, oldest)) return { epoch: s.epoch, top: s.top, frames: [], lost: true, ...partial };
    const frames: StoredFrame[] = [];
    for (let i = after.offset + 1 - oldest, offset = after.offset + 1; i < s.frames.length; i++, offset++) frames.push({ offset, payload: textOf(keptAt(s, i)!) });
    return { epoch: s.epoch, top: s.top, frames, lost: false, ...partial };
  }

  /** A streamed answer's progress (its text so far, for a socket that joins mid-answer). */
  progress(stream: string, c: Chunk, owner = ''): void {
    const s = this.#get(stream);
    if (s.partial === undefined || s.partial.messageId !== c.messageId) {
      if (c.index === 0) s.partial = { messageId: c.messageId, text: c.delta, owner };
      return;
    }
    const text = extend(s.partial.text, c);
    if (text !== undefined) s.partial.text = text;
  }

  /** `times`: how many follows this read stands for (each ends with an unfollow). */
  follow(stream: string, after?: Position, times = 1): ReadResult {
    this.#get(stream).followers += times;
    return this.read(stream, after);
  }

  unfollow(stream: string): void {
    const s = this.#streams.get(stream);
    if (s && s.followers > 0) s.followers--;
  }

  /** `owner`: who will answer (a worker); its pending claims are released if it dies (`release`). */
  claim(stream: string, cmid: string, owner = ''): Claim {
    const s = this.#get(stream);
    const c = s.claims.get(cmid);
    if (c === undefined) {
      s.claims.set(cmid, { offset: 0, at: this.now(), owner });
      return { state: 'new' };
    }
    return c.offset === 0 ? { state: 'pending' } : { state: 'answered', epoch: s.epoch, offset: c.offset };
  }

  frameAt(stream: string, at: Position): StoredFrame | undefined {
    const s = this.#streams.get(stream);
    if (s === undefined || s.epoch !== at.epoch) return undefined;
    const kept = keptAt(s, at.offset - (s.top - s.frames.length + 1));
    return kept === undefined ? undefined : { offset: at.offset, payload: textOf(kept) };
  }

  /**
   * A worker died: the messages it had claimed and not answered can be asked
   * again (a client's retry gets a new answer instead of waiting forever),
   * and the answers it was streaming will not complete.
   */
  release(owner: string): void {
    for (const s of this.#streams.values()) {
      for (const [k, c] of s.claims) if (c.owner === owner && c.offset === 0) s.claims.delete(k);
      if (s.partial?.owner === owner) s.partial = undefined;
    }
  }

  /** Forgets streams not appended to for HISTORY_TTL_S that nobody follows, and claims older than it. */
  expire(now = this.now()): void {
    for (const s of this.#streams.values()) {
      if (s.followers === 0 && now - s.touched >= this.o.ttlMs) this.#drop(s);
      else for (const [k, c] of s.claims) if (now - c.at >= this.o.ttlMs) s.claims.delete(k);
    }
  }

  /**
   * Over the byte bound: drop whole streams, least recently appended first,
   * those nobody follows before the others, never `keep` (just appended).
   * A dropped stream starts again in a new epoch: its readers are told
   * (continuity_lost), never left with a silent gap.
   */
  #evict(keep: Stream): void {
    for (const followedToo of [false, true]) {
      for (let s = this.#oldest; s !== undefined; ) {
        if (this.#bytes <= this.o.maxBytes) return;
        const next = s.newer;
        if (s !== keep && (s.followers === 0 || followedToo)) {
          this.#drop(s);
          this.evicted++;
        }
        s = next;
      }
    }
  }

  #drop(s: Stream): void {
    this.#streams.delete(s.id);
    this.#unlink(s);
    this.#bytes -= s.bytes;
  }

  close(): void {
    clearInterval(this.#timer);
  }
}

/** A kept frame: its text, or its UTF-8 bytes in an ArrayBuffer of their own (Buffer.from would slice Node's shared pool: the frame would keep 8 KiB alive). */
type Kept = string | Uint8Array;

const keepAsString = (payload: string): Kept => payload;
function keepAsCopy(payload: string, bytes: number): Kept {
  const b = Buffer.allocUnsafeSlow(bytes);
  b.write(payload);
  return b;
}

const keptBytes = (k: Kept): number => (typeof k === 'string' ? Buffer.byteLength(k) : k.byteLength);
const textOf = (k: Kept): string => (typeof k === 'string' ? k : Buffer.from(k.buffer, k.byteOffset, k.byteLength).toString('utf8'));
