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
 * A kept frame is its bytes as a one-byte (latin1) string on the V8 heap,
 * not a Uint8Array: lossless for any bytes, about 16 bytes of header, and
 * made in 0.2-0.4 µs where a copy into an ArrayBuffer of its own (its
 * bytes must not stay a view into the IPC message or Buffer pool they came
 * in: `keep`) takes 1.4-2.1 µs and malloc (bench ad hoc, 150-byte frames).
 * Unless the bound on history is too large for the heap: then copies.
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
  readonly #keep: (payload: Uint8Array) => Kept;
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

  append(stream: string, payload: Uint8Array, o: AppendOptions = {}): Position {
    return this.#append(this.#get(stream), payload, o);
  }

  #append(s: Stream, payload: Uint8Array, o: AppendOptions): Position {
    const cmid = o.cmid;
    if (o.ends !== undefined && s.partial?.messageId === o.ends) s.partial = undefined;
    s.top++;
    const kept = this.#keep(payload);
    s.bytes += payload.byteLength;
    this.#bytes += payload.byteLength;
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
  put(stream: string, epoch: string, offset: number, payload: Uint8Array, o: AppendOptions = {}): Position | undefined {
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
    for (let i = after.offset + 1 - oldest, offset = after.offset + 1; i < s.frames.length; i++, offset++) frames.push({ offset, payload: bytesOf(keptAt(s, i)!) });
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
    return kept === undefined ? undefined : { offset: at.offset, payload: bytesOf(kept) };
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

/** A kept frame's bytes: a latin1 string (one char per byte), or a Uint8Array of its own. */
type Kept = string | Uint8Array;

/**
 * Why a frame is never kept as the Uint8Array it came as: one received over
 * IPC (advanced serialization) is a view into the whole message it came in,
 * under load a batch of up to 512 messages (a 150-byte frame of a 50-frame
 * batch held 8.8 KB, measured); a small Buffer is a slice of Node's 8 KiB
 * pool. Kept as it came, a frame that outlives the others of its message (a
 * quiet session's last answer, kept HISTORY_TTL_S) keeps the whole message
 * alive: memory far above HISTORY_MAX_BYTES, which counts the frames' own
 * bytes. A string or a copy holds exactly its bytes.
 */
const keepAsString = (payload: Uint8Array): Kept => Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength).toString('latin1');
const keepAsCopy = (payload: Uint8Array): Kept => new Uint8Array(payload);

const keptBytes = (k: Kept): number => (typeof k === 'string' ? k.length : k.byteLength);
const bytesOf = (k: Kept): Uint8Array => (typeof k === 'string' ? Buffer.from(k, 'latin1') : k);
