/**
 * One end of a cluster IPC channel that batches: the messages sent during
 * one turn of the event loop leave as one IPC message, `{t:'batch', m:[...]}`
 * (a single message leaves as itself), and a batch received is handed to the
 * listeners one message at a time, in order.
 *
 * Why: every IPC message costs a V8 serialization, a pipe write and, on the
 * other side, a read and a deserialization, whatever its size. Under load a
 * worker sends many small messages per turn (stream appends, chunks, bus
 * publishes, rate charges): batching pays that cost once per turn instead
 * of once per message. The latency added is at most the rest of the current
 * turn (the flush runs in setImmediate, after this turn's I/O callbacks).
 *
 * Order is kept: everything sent through one port leaves in the order sent,
 * so the worker and the primary must each send through one port per
 * channel (worker.ts and supervisor.ts build exactly one).
 */
import { isTagged } from './ipc.js';

/** What a port wraps: `process` in a worker, an adapter over a cluster Worker in the primary. */
export interface IpcEnd {
  send?: (msg: unknown) => boolean;
  readonly connected?: boolean;
  on(event: 'message', fn: (m: unknown) => void): unknown;
}

export interface Batch {
  t: 'batch';
  m: unknown[];
}

/**
 * The most messages one batch carries: a larger queue leaves as several
 * batches in order, so no single message the other side decodes is huge.
 */
export const MAX_BATCH = 512;

export class BatchingPort<Out = unknown> {
  #queue: Out[] = [];
  #scheduled = false;
  readonly #listeners = new Set<(m: unknown) => void>();
  readonly #flush = (): void => this.flush();

  constructor(private readonly end: IpcEnd) {
    end.on('message', (m) => this.#receive(m));
  }

  get connected(): boolean {
    return this.end.connected !== false && this.end.send !== undefined;
  }

  /** Queues `msg` for this turn's batch; false if the channel is closed (the message is dropped). */
  send(msg: Out): boolean {
    if (!this.connected) return false;
    this.#queue.push(msg);
    if (!this.#scheduled) {
      this.#scheduled = true;
      setImmediate(this.#flush);
    }
    return true;
  }

  /**
   * The message queued last, not sent yet (undefined when nothing is
   * queued): a caller may add to it what it would send next (nothing can
   * come between them), as a batch of like messages.
   */
  get last(): Out | undefined {
    return this.#queue.at(-1);
  }

  /** Sends what is queued now (also called by the timer). */
  flush(): void {
    this.#scheduled = false;
    const q = this.#queue;
    if (q.length === 0) return;
    this.#queue = [];
    if (!this.connected) return;
    try {
      if (q.length === 1) this.end.send!(q[0]);
      else for (let i = 0; i < q.length; i += MAX_BATCH) this.end.send!({ t: 'batch', m: q.slice(i, i + MAX_BATCH) } satisfies Batch);
    } catch {
      // The channel closed under us (the other end exited): its requests time out or are failed by the owner.
    }
  }

  on(_event: 'message', fn: (m: unknown) => void): this {
    this.#listeners.add(fn);
    return this;
  }

  off(_event: 'message', fn: (m: unknown) => void): this {
    this.#listeners.delete(fn);
    return this;
  }

  #receive(m: unknown): void {
    if (isTagged(m) && m.t === 'batch') {
      for (const x of (m as Batch).m) this.#emit(x);
    } else this.#emit(m);
  }

  #emit(m: unknown): void {
    for (const fn of this.#listeners) fn(m);
  }
}
