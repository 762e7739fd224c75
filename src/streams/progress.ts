/**
 * The pieces of the answers this node streams, held while no other node
 * follows their session.
 *
 * Every piece of a streamed answer reaches this node's own sockets at once
 * (the hub). The store needs it for two things: other nodes following the
 * session (another tab on another worker or host), which need it at once,
 * and the text so far kept for a socket that joins mid-answer, which does
 * not. So while this node follows a session (a socket of it is here) and
 * no other node does, its pieces are held here,
 * merged, and sent every PROGRESS_MS as one piece per answer: a streamed
 * answer costs the store (an IPC message to the primary, or a Redis script)
 * a few times a second instead of once per piece. A socket that joins
 * mid-answer on another node gets the text so far as the store has it, at
 * most PROGRESS_MS old, and the rest as soon as this node learns of it
 * (embedded: the primary says so at once; Redis: the next sending's reply
 * names the new node), contiguous either way (a piece starts where the
 * store's text ends).
 */
import type { Chunk } from './streams.js';

/** How long the pieces of an answer are held at most. */
export const PROGRESS_MS = 250;

interface Held {
  messageId: string;
  index: number;
  parts: string[];
  length: number;
}

export class PieceBuffer {
  readonly #held = new Map<string, Held>();
  #timer: NodeJS.Timeout | undefined;

  constructor(
    /** Sends a piece of `stream` to the store. */
    private readonly send: (stream: string, chunk: Chunk) => void,
    private readonly everyMs = PROGRESS_MS,
  ) {}

  /**
   * A piece of `stream`: held when `hold` (the store's call: no other node
   * needs it now), else sent at once, after what is held of the stream.
   */
  put(stream: string, c: Chunk, hold: boolean): void {
    if (hold) return this.hold(stream, c);
    this.flush(stream);
    this.send(stream, c);
  }

  /**
   * Before a frame is appended to `stream`: what is held of the answer it
   * ends (`ends`) is dropped, as the frame has the whole text; anything else
   * held goes first, so the store sees a stream's pieces and frames in the
   * order they were made.
   */
  beforeAppend(stream: string, ends: string | undefined): void {
    if (this.#held.size === 0) return;
    if (ends !== undefined) this.drop(stream, ends);
    this.flush(stream);
  }

  /** Holds `c`: merged with what is held of the same answer when it continues it, else after sending that. */
  hold(stream: string, c: Chunk): void {
    const h = this.#held.get(stream);
    if (h !== undefined && h.messageId === c.messageId && h.index + h.length === c.index) {
      h.parts.push(c.delta);
      h.length += c.delta.length;
      return;
    }
    if (h !== undefined) this.flush(stream);
    this.#held.set(stream, { messageId: c.messageId, index: c.index, parts: [c.delta], length: c.delta.length });
    this.#timer ??= setTimeout(() => {
      this.#timer = undefined;
      this.flushAll();
    }, this.everyMs).unref();
  }

  /** Sends what is held of `stream` now (another node follows it, or a frame is appended to it). */
  flush(stream: string): void {
    const h = this.#held.get(stream);
    if (h === undefined) return;
    this.#held.delete(stream);
    this.send(stream, { messageId: h.messageId, index: h.index, delta: h.parts.length === 1 ? h.parts[0]! : h.parts.join('') });
  }

  /** Forgets what is held of answer `messageId` (its final frame is being appended: it has the whole text). */
  drop(stream: string, messageId: string): void {
    if (this.#held.get(stream)?.messageId === messageId) this.#held.delete(stream);
  }

  flushAll(): void {
    for (const stream of this.#held.keys()) this.flush(stream);
  }

  /** Sends everything held and stops the timer. */
  close(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    this.flushAll();
  }
}
