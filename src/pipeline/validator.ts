/**
 * The validation stage, in front of the chat pipeline: inline on the uWS
 * thread, or in a piscina pool for large frames, so big payloads never stall
 * the event loop that serves everyone else.
 *
 * - `inline`: every frame is decoded on the uWS thread.
 * - `pool`: every frame goes to the pool.
 * - `auto`: frames of at least `thresholdBytes` go to the pool, smaller ones
 *   stay inline (handing a 50-byte frame to a thread costs more than
 *   parsing it).
 *
 * Frames for the pool are gathered per event-loop turn into one task per
 * batch, their bytes transferred to the thread, not copied again. The pool's
 * queue is bounded: when it is full, a frame is answered "Server busy"
 * instead of piling up in memory. Results are delivered in arrival order per
 * connection, whichever path each frame took, and a valid user_message is
 * charged to the connection's session and creator budgets (limits/) as it
 * is delivered: on the uWS thread, in arrival order, so both paths limit
 * alike and the budgets need no memory shared between threads. A
 * connection that closed while its frame was in the pool is not charged.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { Piscina } from 'piscina';
import type { Decoded, MessageSchema } from './validate.js';
import type { MessageTables } from '../limits/admit.js';
import { nowUs } from '../limits/buckets.js';
import { ERRORS } from '../protocol/frames.js';
import type { ValidateBatch, ValidateWorkerData } from '../pool/validate-task.js';

export type ValidationMode = 'inline' | 'pool' | 'auto';

/** Which buckets a connection's messages are charged to (slots of the message tables). */
export interface MessageSlots {
  sessionSlot: number;
  creatorSlot: number;
}

/** Per-connection ordering state, owned by the validator, and the connection's rate-limit slots. */
export interface Ordered extends MessageSlots {
  /** The socket speaks the msgpack subprotocol (its binary frames are MessagePack). */
  readonly msgpack: boolean;
  /** The socket's close handler ran: its results are delivered uncharged (its slots are given back). */
  readonly closed: boolean;
  pending: Array<{ d: Decoded | undefined; done: (d: Decoded) => void }> | undefined;
}

export interface Validator {
  /** Decodes and admits `data`; calls `done` with the result, in arrival order per `conn`. */
  submit(conn: Ordered, data: ArrayBuffer, isBinary: boolean, done: (d: Decoded) => void): void;
  /** Frames waiting for or inside the pool (a metric). */
  readonly queued: number;
  /** Resolves once frames can be validated at once: the pool's first thread has loaded its task (a cold thread takes seconds on a busy host). */
  ready(): Promise<void>;
  close(): Promise<void>;
}

export interface ValidatorOptions {
  mode: ValidationMode;
  /** The schema's bounds, for the pool's threads; the inline decoder must use the same. */
  schema: MessageSchema;
  /** The inline decoder: the channel's (the pool task runs the same decodeFrame). */
  decode: (data: ArrayBuffer, isBinary: boolean, msgpack: boolean) => Decoded;
  /** The session and creator budgets, charged on this thread. */
  tables: MessageTables;
  thresholdBytes: number;
  threads: number;
  /** Frames allowed to wait for the pool before "Server busy". */
  maxQueuedFrames: number;
  /** The task module (default: pool/validate-task); tests give one that fails on purpose. */
  taskFile?: string;
}

const BUSY: Decoded = Object.freeze({ ok: false, error: ERRORS.BUSY });

/**
 * Charges a decoded user_message, about to be delivered, to its session's
 * and creator's budgets, marking it `limited` if one refused it. Nothing is
 * charged for a closed connection (its slots may be another key's now).
 */
function admit(o: ValidatorOptions, conn: Ordered, d: Decoded): Decoded {
  if (!d.ok || d.msg.type !== 'user_message' || conn.closed) return d;
  const limited = o.tables.admit(conn.sessionSlot, conn.creatorSlot, nowUs());
  return limited === undefined ? d : { ok: true, msg: d.msg, limited };
}

export function createValidator(o: ValidatorOptions): Validator {
  if (o.mode === 'inline') {
    return {
      submit: (c, data, bin, done) => done(admit(o, c, o.decode(data, bin, c.msgpack))),
      queued: 0,
      ready: async () => {},
      close: async () => {},
    };
  }
  return new PoolValidator(o);
}

/** The compiled task next to this module, or its TypeScript source when running from src/ (tests, under tsx). */
function taskFile(): string {
  const js = new URL('../pool/validate-task.js', import.meta.url);
  return existsSync(fileURLToPath(js)) ? js.href : new URL('../pool/validate-task.ts', import.meta.url).href;
}

type Slot = { d: Decoded | undefined; done: (d: Decoded) => void };
type Batch = ValidateBatch & { waiting: Array<{ conn: Ordered; slot: Slot }> };

class PoolValidator implements Validator {
  readonly #pool: Piscina<ValidateBatch, Decoded[]>;
  #batch: Batch | undefined;
  #queued = 0;
  #closed = false;

  constructor(private readonly o: ValidatorOptions) {
    this.#pool = new Piscina({
      filename: o.taskFile ?? taskFile(),
      minThreads: 1,
      maxThreads: o.threads,
      idleTimeout: 60_000,
      workerData: { schema: o.schema } satisfies ValidateWorkerData,
    });
  }

  get queued(): number {
    return this.#queued;
  }

  /** An empty batch: answered once a thread has loaded the task. A pool that cannot load it fails here, at start-up. */
  async ready(): Promise<void> {
    await this.#pool.run({ frames: [], binary: [], msgpack: [] });
  }

  submit(conn: Ordered, data: ArrayBuffer, isBinary: boolean, done: (d: Decoded) => void): void {
    const toPool = this.o.mode === 'pool' || data.byteLength >= this.o.thresholdBytes;
    if (!toPool && conn.pending === undefined) {
      done(admit(this.o, conn, this.o.decode(data, isBinary, conn.msgpack))); // fast path: nothing of this connection is in the pool
      return;
    }
    const slot: Slot = { d: undefined, done };
    (conn.pending ??= []).push(slot);
    if (!toPool) {
      slot.d = this.o.decode(data, isBinary, conn.msgpack);
      return this.#drain(conn);
    }
    if (this.#closed || this.#queued >= this.o.maxQueuedFrames) {
      slot.d = BUSY;
      return this.#drain(conn);
    }
    this.#queued++;
    // uWS reuses `data` after the handler returns: copy once, then transfer the copy.
    const copy = data.slice(0);
    if (!this.#batch) {
      this.#batch = { frames: [], binary: [], msgpack: [], waiting: [] };
      setImmediate(() => this.#flush());
    }
    this.#batch.frames.push(copy);
    this.#batch.binary.push(isBinary);
    this.#batch.msgpack.push(conn.msgpack);
    this.#batch.waiting.push({ conn, slot });
  }

  #flush(): void {
    const b = this.#batch;
    this.#batch = undefined;
    if (!b) return;
    const settle = (results: Decoded[] | undefined) => {
      this.#queued -= b.waiting.length;
      b.waiting.forEach(({ conn, slot }, i) => {
        slot.d = results?.[i] ?? BUSY; // a task that threw or a thread that died: the frame is refused, not lost silently
        this.#drain(conn);
      });
    };
    this.#pool.run({ frames: b.frames, binary: b.binary, msgpack: b.msgpack }, { transferList: b.frames }).then(settle, () => settle(undefined));
  }

  /** Delivers the connection's results that are ready, in order, each charged as it goes. */
  #drain(conn: Ordered): void {
    const q = conn.pending;
    if (!q) return;
    while (q.length > 0 && q[0]!.d !== undefined) {
      const s = q.shift()!;
      s.done(admit(this.o, conn, s.d!));
    }
    if (q.length === 0) conn.pending = undefined;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#pool.close({ force: true }).catch(() => {});
  }
}
