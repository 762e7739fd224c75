/**
 * The streams of a worker in embedded mode: kept by the primary (so a
 * worker that crashes loses nothing), asked over IPC. The primary assigns
 * offsets and relays each appended frame to every worker that follows the
 * stream; the appending worker's own copy answers its append: one IPC
 * channel per worker keeps them in offset order (primary/streams.ts). Chunks of a
 * streamed answer are relayed to the other followers, and the primary keeps
 * the text so far for a resumer; while this worker follows the session and
 * no other worker does (the primary says when one does), they are held and
 * sent merged (streams/progress.ts).
 */
import type { EmbeddedCluster } from '../cluster/embedded.js';
import { PieceBuffer } from './progress.js';
import { SharedReads } from './reads.js';
import type { AppendOptions, Chunk, Claim, Position, ReadResult, StoredFrame, StreamSink, StreamStore } from './streams.js';

export class EmbeddedStreams implements StreamStore {
  /** Streams this worker follows, with their follows. */
  readonly #follows = new Map<string, number>();
  /** Session streams another worker follows too: their pieces go at once. */
  readonly #shared = new Set<string>();
  readonly #held: PieceBuffer;
  readonly #reads = new SharedReads((stream, after, times) => this.primary.request('follow', { arg: stream, ...(after ? { pos: after } : {}), ...(times > 1 ? { times } : {}) }));

  constructor(
    private readonly primary: EmbeddedCluster,
    sink: StreamSink,
  ) {
    primary.onStream(sink, (stream, shared) => {
      if (!shared) this.#shared.delete(stream);
      else if (this.#follows.has(stream)) {
        this.#shared.add(stream);
        this.#held.flush(stream);
      }
    });
    this.#held = new PieceBuffer((stream, chunk) => this.primary.send({ t: 'chunk', stream, chunk }));
  }

  append(stream: string, payload: Uint8Array, o: AppendOptions = {}): Promise<Position> {
    this.#held.beforeAppend(stream, o.ends);
    return this.primary.request('append', { arg: stream, payload, cmid: o.cmid, ends: o.ends });
  }

  chunk(stream: string, chunk: Chunk): void {
    // Held while this worker follows the session and no other does (the primary says when one does); else at once (another worker reads it live, or the socket that asked left: its next one may be on another worker).
    this.#held.put(stream, chunk, this.#follows.has(stream) && !this.#shared.has(stream));
  }

  /** Follows of one turn asking the same read share one request, counted `times` by the primary (streams/reads.ts). */
  follow(stream: string, after?: Position): Promise<ReadResult> {
    this.#follows.set(stream, (this.#follows.get(stream) ?? 0) + 1);
    return this.#reads.follow(stream, after);
  }

  unfollow(stream: string): void {
    const n = this.#follows.get(stream) ?? 0;
    if (n > 1) this.#follows.set(stream, n - 1);
    else {
      this.#follows.delete(stream);
      this.#shared.delete(stream);
    }
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
