/**
 * Streams kept in this process: the store of a standalone gateway (tests,
 * embedding), shared by every node of one process through a
 * `LocalStreamHub` (as the primary shares its store with its workers).
 * Delivery is asynchronous (a microtask) and ordered, as on every real
 * transport; the appending node's own delivery comes before `append`
 * resolves.
 */
import { MemoryStreamStore } from './memory.js';
import type { AppendOptions, Chunk, Claim, HistoryOptions, Position, ReadResult, StoredFrame, StreamSink, StreamStore } from './streams.js';

export class LocalStreamHub {
  readonly store: MemoryStreamStore;
  readonly nodes = new Set<LocalStreams>();

  constructor(o: HistoryOptions) {
    this.store = new MemoryStreamStore(o);
  }
}

export class LocalStreams implements StreamStore {
  readonly #following = new Map<string, number>();
  #closed = false;

  constructor(
    private readonly hub: LocalStreamHub,
    private readonly sink: StreamSink,
  ) {
    hub.nodes.add(this);
  }

  async append(stream: string, payload: string, o?: AppendOptions): Promise<Position> {
    const pos = this.hub.store.append(stream, payload, o);
    const frame: StoredFrame = { offset: pos.offset, payload };
    for (const node of this.hub.nodes) {
      if (node.#following.has(stream)) queueMicrotask(() => node.#deliver(stream, pos.epoch, frame));
    }
    await new Promise<void>((r) => queueMicrotask(r));
    return pos;
  }

  chunk(stream: string, chunk: Chunk): void {
    this.hub.store.progress(stream, chunk);
    for (const node of this.hub.nodes) {
      if (node !== this && node.#following.has(stream)) queueMicrotask(() => node.#closed || node.sink.chunk(stream, chunk));
    }
  }

  #deliver(stream: string, epoch: string, frame: StoredFrame): void {
    if (!this.#closed && this.#following.has(stream)) this.sink.frame(stream, epoch, frame);
  }

  async follow(stream: string, after?: Position): Promise<ReadResult> {
    this.#following.set(stream, (this.#following.get(stream) ?? 0) + 1);
    return this.hub.store.follow(stream, after);
  }

  unfollow(stream: string): void {
    const n = this.#following.get(stream);
    if (n === undefined) return;
    if (n <= 1) this.#following.delete(stream);
    else this.#following.set(stream, n - 1);
    this.hub.store.unfollow(stream);
  }

  async claim(stream: string, cmid: string): Promise<Claim> {
    return this.hub.store.claim(stream, cmid);
  }

  async frameAt(stream: string, at: Position): Promise<StoredFrame | undefined> {
    return this.hub.store.frameAt(stream, at);
  }

  async close(): Promise<void> {
    this.#closed = true;
    for (const [stream, n] of this.#following) for (let i = 0; i < n; i++) this.hub.store.unfollow(stream);
    this.#following.clear();
    this.hub.nodes.delete(this);
  }
}
