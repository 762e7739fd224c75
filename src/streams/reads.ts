/**
 * Follows that share a read: a node's follows of one stream from one
 * position, asked in the same turn of the event loop, go to the store as
 * one read (counted `times`), and each gets its result. A reconnect storm
 * (a rolling restart, a network blip) brings a creator's sockets back
 * together, each resuming its broadcast stream from about the same
 * position: the store reads that history once per node per turn instead of
 * once per socket.
 *
 * Only follows of one turn share a read: every socket among them started
 * buffering live frames (streams/hub.ts) before the read leaves, so nothing
 * falls between the read and live. The result is shared: callers read it,
 * never change it.
 */
import type { Position, ReadResult } from './streams.js';

/** The store's read behind a follow; `times`: the follows it stands for. */
export type FollowRead = (stream: string, after: Position | undefined, times: number) => Promise<ReadResult>;

interface Asked {
  stream: string;
  after: Position | undefined;
  times: number;
  read: Promise<ReadResult>;
  settle: { resolve: (r: ReadResult) => void; reject: (e: unknown) => void };
}

export class SharedReads {
  /** Follows asked in this turn, by stream and position. */
  readonly #asked = new Map<string, Asked>();

  constructor(private readonly read: FollowRead) {}

  /** The read of `stream` after `after`, shared with the follows of this turn that ask the same. */
  follow(stream: string, after: Position | undefined): Promise<ReadResult> {
    const key = after ? `${stream}\n${after.epoch}:${after.offset}` : stream;
    let a = this.#asked.get(key);
    if (a === undefined) {
      let settle!: Asked['settle'];
      const read = new Promise<ReadResult>((resolve, reject) => (settle = { resolve, reject }));
      a = { stream, after, times: 0, read, settle };
      this.#asked.set(key, a);
      if (this.#asked.size === 1) setImmediate(this.#ask);
    }
    a.times++;
    return a.read;
  }

  /** Sends the reads asked so far now (before an unfollow, which must reach the store after its follow). */
  flush(): void {
    if (this.#asked.size > 0) this.#ask();
  }

  readonly #ask = (): void => {
    for (const a of this.#asked.values()) {
      let p: Promise<ReadResult>;
      try {
        p = this.read(a.stream, a.after, a.times);
      } catch (err) {
        p = Promise.reject(err);
      }
      p.then(a.settle.resolve, a.settle.reject);
    }
    this.#asked.clear();
  };
}
