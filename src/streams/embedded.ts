/**
 * The streams of a worker in embedded mode: kept by the primary (they
 * outlive a worker's crash, but for the sessions leased to it: below),
 * asked over IPC. The
 * primary assigns offsets and relays each appended frame to every worker
 * that follows the stream; the appending worker's own copy answers its
 * append: one IPC channel per worker keeps them in offset order
 * (primary/streams.ts).
 *
 * A session that only this worker follows is leased to it
 * (primary/streams.ts): while it follows the session, it numbers the
 * session's frames itself, delivers them to its sockets at once and puts
 * them to the primary, with no round trip before the answer leaves.
 * Appends made elsewhere are forwarded here to be numbered the same way.
 *
 * Chunks of a streamed answer are relayed to the other followers, and the
 * primary keeps the text so far for a resumer; while this worker follows
 * the session and no other worker does (the primary says when one does),
 * they are held and sent merged (streams/progress.ts).
 */
import type { EmbeddedCluster } from '../cluster/embedded.js';
import type { PrimaryToWorker } from '../cluster/ipc.js';
import { PieceBuffer } from './progress.js';
import { SharedReads } from './reads.js';
import type { AppendOptions, Chunk, Claim, Position, ReadResult, StoredFrame, StreamSink, StreamStore } from './streams.js';

/** A session's offsets held by this worker: the epoch, and the last offset given. */
interface Lease {
  epoch: string;
  top: number;
}

export class EmbeddedStreams implements StreamStore {
  /** Streams this worker follows, with their follows. */
  readonly #follows = new Map<string, number>();
  /**
   * Per stream followed, which following it is (a new one each time this
   * worker starts following it): a lease granted to an earlier one, read
   * after this worker stopped following, is not taken (the primary ended
   * it when the unfollow came).
   */
  readonly #following = new Map<string, number>();
  #followings = 0;
  readonly #leases = new Map<string, Lease>();
  /** Session streams another worker follows too: their pieces go at once. */
  readonly #shared = new Set<string>();
  readonly #held: PieceBuffer;
  readonly #reads = new SharedReads((stream, after, times) => this.primary.request('follow', { arg: stream, ...(after ? { pos: after } : {}), ...(times > 1 ? { times } : {}) }));

  constructor(
    private readonly primary: EmbeddedCluster,
    private readonly sink: StreamSink,
  ) {
    primary.onStream(sink, {
      shared: (stream, shared) => {
        if (!shared) this.#shared.delete(stream);
        else if (this.#follows.has(stream)) {
          this.#shared.add(stream);
          this.#held.flush(stream);
        }
      },
      forwarded: (msg) => this.#forwarded(msg),
      unlease: (stream) => this.#leases.delete(stream),
    });
    this.#held = new PieceBuffer((stream, chunk) => this.primary.send({ t: 'chunk', stream, chunk }));
  }

  append(stream: string, payload: string, o: AppendOptions = {}): Promise<Position> {
    this.#held.beforeAppend(stream, o.ends);
    const lease = this.#leases.get(stream);
    if (lease === undefined) return this.primary.request('append', { arg: stream, frame: payload, cmid: o.cmid, ends: o.ends });
    try {
      return Promise.resolve(this.#make(stream, lease, payload, o, undefined));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /**
   * A frame of a leased session: the next offset, the put queued, then the
   * frame delivered here. The put is queued first, so it precedes on the
   * IPC channel anything the delivery makes this worker say; it reaches the
   * primary at the end of the turn, after the socket's write (a worker lost
   * in between is why the primary gives its leased sessions a new epoch).
   */
  #make(stream: string, lease: Lease, payload: string, o: AppendOptions, fwd: number | undefined): Position {
    const offset = ++lease.top;
    this.primary.put(stream, lease.epoch, offset, payload, o.cmid, o.ends, fwd);
    this.sink.frame(stream, lease.epoch, { offset, payload });
    return { epoch: lease.epoch, offset };
  }

  /** An append made elsewhere to a session leased here: numbered like this worker's own (or declined: the lease ended). */
  #forwarded(msg: Extract<PrimaryToWorker, { t: 'fwd' }>): void {
    const lease = this.#leases.get(msg.stream);
    if (lease === undefined) {
      this.primary.send({ t: 'decline', stream: msg.stream, fwd: msg.fwd });
      return;
    }
    this.#held.beforeAppend(msg.stream, msg.ends);
    this.#make(msg.stream, lease, msg.payload, { cmid: msg.cmid, ends: msg.ends }, msg.fwd);
  }

  chunk(stream: string, chunk: Chunk): void {
    // Held while this worker follows the session and no other does (the primary says when one does); else at once (another worker reads it live, or the socket that asked left: its next one may be on another worker).
    this.#held.put(stream, chunk, this.#follows.has(stream) && !this.#shared.has(stream));
  }

  /** Follows of one turn asking the same read share one request, counted `times` by the primary (streams/reads.ts). */
  async follow(stream: string, after?: Position): Promise<ReadResult> {
    const n = this.#follows.get(stream) ?? 0;
    this.#follows.set(stream, n + 1);
    if (n === 0) this.#following.set(stream, ++this.#followings);
    const following = this.#following.get(stream);
    const res = await this.#reads.follow(stream, after);
    if (res.lease && this.#following.get(stream) === following && !this.#leases.has(stream)) this.#leases.set(stream, { epoch: res.epoch, top: res.top });
    return res;
  }

  unfollow(stream: string): void {
    const n = this.#follows.get(stream) ?? 0;
    if (n > 1) this.#follows.set(stream, n - 1);
    else {
      this.#follows.delete(stream);
      this.#following.delete(stream);
      this.#leases.delete(stream);
      this.#shared.delete(stream);
    }
    // A follow of this turn not asked yet goes first: the primary counts them in order.
    this.#reads.flush();
    this.primary.send({ t: 'unfollow', stream });
  }

  claim(stream: string, cmid: string): Promise<Claim> {
    return this.primary.request('claim', { arg: stream, cmid });
  }

  async frameAt(stream: string, at: Position): Promise<StoredFrame | undefined> {
    return (await this.primary.request('frame-at', { arg: stream, pos: at })) ?? undefined;
  }

  async close(): Promise<void> {
    this.#held.close();
  }
}
