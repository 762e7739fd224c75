/**
 * The primary's half of embedded-mode streams: the store (streams/memory.ts)
 * and which worker follows which stream. An append is stored and relayed to
 * every following worker, all on each worker's one IPC channel, so every
 * worker sees a stream's frames in offset order. The appending worker's own
 * copy of the frame answers its request (a `res` does when it does not
 * follow the stream), so its own delivery precedes its answer.
 *
 * A worker that follows a session sends the pieces of an answer it
 * streams as they come only while another worker follows the session too
 * (they are relayed to it); while it follows alone, it sends their progress
 * now and then (streams/embedded.ts). So each follower of a session stream
 * is told when the stream becomes shared between workers, and when it
 * stops being so (a `shared` message).
 */
import { MemoryStreamStore } from '../streams/memory.js';
import { creatorOfStream } from '../streams/streams.js';
import type { AppendOptions, Chunk, HistoryOptions, Position, ReadResult } from '../streams/streams.js';
import type { PrimaryToWorker } from '../cluster/ipc.js';

export interface StreamFollower {
  readonly id: number;
  send(msg: PrimaryToWorker): void;
}

export class StreamService {
  readonly store: MemoryStreamStore;
  /** stream -> follower -> follows. */
  readonly #followers = new Map<string, Map<StreamFollower, number>>();

  constructor(o: HistoryOptions) {
    this.store = new MemoryStreamStore(o);
  }

  /** Stores a frame and relays it to every worker following the stream. */
  append(stream: string, payload: Uint8Array, o: AppendOptions): Position {
    return this.#append(stream, payload, o, undefined, 0);
  }

  /**
   * A worker's append request `id`: when that worker follows the stream,
   * its own copy of the frame carries the id and answers the request (one
   * message, not two); else a `res` does.
   */
  appendFor(from: StreamFollower, id: number, stream: string, payload: Uint8Array, o: AppendOptions): void {
    let pos: Position;
    try {
      pos = this.#append(stream, payload, o, from, id);
    } catch (err) {
      from.send({ t: 'res', id, error: (err as Error).message });
      return;
    }
    if (!this.#followers.get(stream)?.has(from)) from.send({ t: 'res', id, result: pos });
  }

  #append(stream: string, payload: Uint8Array, o: AppendOptions, from: StreamFollower | undefined, id: number): Position {
    const pos = this.store.append(stream, payload, o);
    const followers = this.#followers.get(stream);
    if (followers) {
      const msg: PrimaryToWorker = { t: 'smsg', stream, epoch: pos.epoch, offset: pos.offset, payload };
      for (const f of followers.keys()) f.send(f === from ? { t: 'smsg', stream, epoch: pos.epoch, offset: pos.offset, payload, id } : msg);
    }
    return pos;
  }

  /** A chunk of an answer streamed on `from`: kept as the text so far, relayed to the other followers. */
  chunk(from: StreamFollower, stream: string, chunk: Chunk): void {
    this.store.progress(stream, chunk, String(from.id));
    const followers = this.#followers.get(stream);
    if (!followers) return;
    const msg: PrimaryToWorker = { t: 'chunk', stream, chunk };
    for (const f of followers.keys()) if (f !== from) f.send(msg);
  }

  /** `times`: the follows one request stands for (a worker's sockets of one turn asking the same read). */
  follow(from: StreamFollower, stream: string, after: Position | undefined, times = 1): ReadResult {
    const count = Number.isSafeInteger(times) && times > 0 ? times : 1;
    let m = this.#followers.get(stream);
    if (!m) this.#followers.set(stream, (m = new Map()));
    const n = m.get(from) ?? 0;
    m.set(from, n + count);
    if (n === 0 && m.size >= 2 && creatorOfStream(stream) === undefined) {
      // A second worker follows this session: the new one, and (if it just became shared) the other, are told.
      for (const f of m.keys()) if (f === from || m.size === 2) f.send({ t: 'shared', stream, shared: true });
    }
    return this.store.follow(stream, after, count);
  }

  unfollow(from: StreamFollower, stream: string): void {
    const m = this.#followers.get(stream);
    const n = m?.get(from);
    if (m === undefined || n === undefined) return;
    if (n <= 1) this.#leave(m, from, stream);
    else m.set(from, n - 1);
    this.store.unfollow(stream);
  }

  /** `from` follows `stream` no more: the one worker left following a session is told it is no longer shared. */
  #leave(m: Map<StreamFollower, number>, from: StreamFollower, stream: string): void {
    m.delete(from);
    if (m.size === 0) this.#followers.delete(stream);
    else if (m.size === 1 && creatorOfStream(stream) === undefined) for (const f of m.keys()) f.send({ t: 'shared', stream, shared: false });
  }

  claim(from: StreamFollower, stream: string, cmid: string) {
    return this.store.claim(stream, cmid, String(from.id));
  }

  /** Forgets a worker that exited: its follows end with it, its unanswered claims and unfinished answers are released. */
  remove(from: StreamFollower): void {
    this.store.release(String(from.id));
    for (const [stream, m] of this.#followers) {
      const n = m.get(from);
      if (n === undefined) continue;
      for (let i = 0; i < n; i++) this.store.unfollow(stream);
      this.#leave(m, from, stream);
    }
  }

  close(): void {
    this.store.close();
  }
}
