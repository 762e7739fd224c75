/**
 * The primary's half of embedded-mode streams: the store (streams/memory.ts)
 * and which worker follows which stream. An append is stored and relayed to
 * every following worker, all on each worker's one IPC channel, so every
 * worker sees a stream's frames in offset order. The appending worker's own
 * copy of the frame answers its request (a `res` does when it does not
 * follow the stream), so its own delivery precedes its answer.
 *
 * Leases (a session's offsets held by the worker of its socket). A session
 * stream is mostly read by one socket, on one worker, and mostly appended
 * to by that worker (the answers to its socket). So the first worker to
 * follow a session that no other worker follows is given its offsets with
 * its read (`lease` in the result): while it follows the stream, it numbers
 * its own appends, delivers them to its sockets at once (no round trip; an
 * instant answer leaves in the same write as its typing indicators) and
 * `put`s them here, where they are stored and relayed to the other followers. Any
 * other append of a leased stream (a targeted send through another worker,
 * the answer of a socket that moved) is forwarded to the holder, which
 * numbers it like its own, so one place gives a stream's offsets at any
 * time. The lease ends when the holder follows the stream no more (every
 * put it sent precedes that on its channel; forwards not yet made are then
 * made here), or if a put does not fit the stream (it expired, was evicted
 * or started again: a new epoch, so readers are told). A holder that exits
 * without ending its leases (a crash) may have delivered frames it never
 * put: those streams start again in a new epoch, so a resume from an
 * offset this store never had is told continuity_lost, and no offset is
 * given twice.
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

/** A session stream's offsets, held by a worker. */
interface Lease {
  holder: StreamFollower;
  /** Appends forwarded to the holder and not made yet, by forward id (in the order forwarded). */
  waiting: Map<number, Waiting>;
}

/** An append request of `from` (its request `id`). */
interface Waiting {
  from: StreamFollower;
  id: number;
  payload: string;
  o: AppendOptions;
}

export class StreamService {
  readonly store: MemoryStreamStore;
  /** stream -> follower -> follows. */
  readonly #followers = new Map<string, Map<StreamFollower, number>>();
  readonly #leases = new Map<string, Lease>();
  #nextForward = 1;

  constructor(o: HistoryOptions) {
    this.store = new MemoryStreamStore(o);
  }

  /** Stores a frame and relays it to every worker following the stream: a broadcast, or a stream no worker holds (workers append through appendFor). */
  append(stream: string, payload: string, o: AppendOptions): Position {
    const pos = this.store.append(stream, payload, o);
    this.#relay(stream, pos, payload, undefined, undefined, 0);
    return pos;
  }

  /**
   * A worker's append request `id`: when that worker follows the stream,
   * its own copy of the frame carries the id and answers the request (one
   * message, not two); else a `res` does. A leased stream's append is
   * forwarded to its holder.
   */
  appendFor(from: StreamFollower, id: number, stream: string, payload: string, o: AppendOptions): void {
    const lease = this.#leases.get(stream);
    if (lease !== undefined) {
      const fwd = this.#nextForward++;
      lease.waiting.set(fwd, { from, id, payload, o });
      lease.holder.send({ t: 'fwd', stream, payload, cmid: o.cmid, ends: o.ends, fwd });
      return;
    }
    this.#appendAnswering(from, id, stream, payload, o);
  }

  #appendAnswering(from: StreamFollower, id: number, stream: string, payload: string, o: AppendOptions): void {
    let pos: Position;
    try {
      pos = this.store.append(stream, payload, o);
    } catch (err) {
      from.send({ t: 'res', id, error: (err as Error).message });
      return;
    }
    if (!this.#relay(stream, pos, payload, undefined, from, id)) from.send({ t: 'res', id, result: pos });
  }

  /**
   * Sends a stored frame to the stream's followers but `skip`; `to`'s copy
   * carries its request `id`. Whether `to` got one (else its request is
   * answered by a `res`).
   */
  #relay(stream: string, pos: Position, payload: string, skip: StreamFollower | undefined, to: StreamFollower | undefined, id: number): boolean {
    const followers = this.#followers.get(stream);
    if (!followers) return false;
    const msg: PrimaryToWorker = { t: 'smsg', stream, epoch: pos.epoch, offset: pos.offset, payload };
    let answered = false;
    for (const f of followers.keys()) {
      if (f === skip) continue;
      if (f === to) {
        f.send({ t: 'smsg', stream, epoch: pos.epoch, offset: pos.offset, payload, id });
        answered = true;
      } else f.send(msg);
    }
    return answered;
  }

  /**
   * A frame `from` numbered itself (it holds the stream's offsets, or did):
   * stored and relayed to the other followers, and the forwarded append it
   * made (`fwd`), if any, answered. A put that does not fit (the lease
   * ended, the stream expired, was evicted or started again) ends the
   * lease and starts the stream again in a new epoch; it and the holder's
   * puts after it are stored as plain appends, relayed to every follower,
   * `from` too: readers are told continuity_lost, never given two frames
   * at one offset.
   */
  put(from: StreamFollower, stream: string, epoch: string, offset: number, payload: string, o: AppendOptions, fwd?: number): void {
    const lease = this.#leases.get(stream);
    const holds = lease?.holder === from;
    const waiting = holds && fwd !== undefined ? lease!.waiting.get(fwd) : undefined;
    if (waiting) lease!.waiting.delete(fwd!);
    else if (fwd !== undefined) return; // made here already, when its lease ended
    const pos = holds ? this.store.put(stream, epoch, offset, payload, o) : undefined;
    if (pos !== undefined) {
      // The holder delivered its copy itself: a forwarded append of its own, or of a worker that follows no more, is answered by a res.
      if (!this.#relay(stream, pos, payload, from, waiting?.from, waiting?.id ?? 0) && waiting) waiting.from.send({ t: 'res', id: waiting.id, result: pos });
      return;
    }
    if (holds) {
      // The first put that does not fit: a new epoch, then what waited for the holder, then this.
      this.store.rebase(stream);
      from.send({ t: 'unlease', stream });
      this.#endLease(stream, lease!);
    } // else the holder's puts sent before it heard of that: plain appends in the new epoch
    if (waiting) this.#appendAnswering(waiting.from, waiting.id, stream, payload, o);
    else this.append(stream, payload, o);
  }

  /** `from` could not make forwarded append `fwd` (it holds the lease no more): the lease ends, the appends wait no more. */
  decline(from: StreamFollower, stream: string, fwd: number): void {
    const lease = this.#leases.get(stream);
    if (lease?.holder === from && lease.waiting.has(fwd)) this.#endLease(stream, lease);
  }

  /** Ends a lease: the appends forwarded to its holder and not made are made here, in the order they came. */
  #endLease(stream: string, lease: Lease): void {
    this.#leases.delete(stream);
    for (const w of lease.waiting.values()) this.#appendAnswering(w.from, w.id, stream, w.payload, w.o);
    lease.waiting.clear();
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
    const res = this.store.follow(stream, after, count);
    if (n === 0 && m.size === 1 && creatorOfStream(stream) === undefined && !this.#leases.has(stream)) {
      // The only worker following this session: it numbers the session's frames from now on.
      this.#leases.set(stream, { holder: from, waiting: new Map() });
      return { ...res, lease: true };
    }
    return res;
  }

  unfollow(from: StreamFollower, stream: string): void {
    const m = this.#followers.get(stream);
    const n = m?.get(from);
    if (m === undefined || n === undefined) return;
    if (n <= 1) this.#leave(m, from, stream);
    else m.set(from, n - 1);
    this.store.unfollow(stream);
  }

  /** `from` follows `stream` no more: its lease of it ends, and the one worker left following a session is told it is no longer shared. */
  #leave(m: Map<StreamFollower, number>, from: StreamFollower, stream: string): void {
    m.delete(from);
    const lease = this.#leases.get(stream);
    if (lease?.holder === from) this.#endLease(stream, lease);
    if (m.size === 0) this.#followers.delete(stream);
    else if (m.size === 1 && creatorOfStream(stream) === undefined) for (const f of m.keys()) f.send({ t: 'shared', stream, shared: false });
  }

  claim(from: StreamFollower, stream: string, cmid: string) {
    return this.store.claim(stream, cmid, String(from.id));
  }

  /** Forgets a worker that exited: its follows end with it (and its leases: see above), its unanswered claims and unfinished answers are released. */
  remove(from: StreamFollower): void {
    this.store.release(String(from.id));
    // Leases it did not end: frames it delivered may never have been put.
    for (const [stream, lease] of this.#leases) if (lease.holder === from) this.store.rebase(stream);
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
