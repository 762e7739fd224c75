/**
 * Messages between the primary and its workers over cluster IPC (advanced
 * serialization, so Uint8Array payloads cross without base64; stream frames
 * cross as strings, which V8 copies natively), and the one
 * request helper both sides use: every request has an id, an answer or an
 * error, and one deadline (IPC_TIMEOUT_MS).
 */
import { GatewayError } from '../errors.js';
import type { ChargeBatch, RateUpdate } from '../limits/store.js';
import type { ClusterStats, LocalStats } from './view.js';
import type { Chunk, Claim, Position, ReadResult, StoredFrame } from '../streams/streams.js';

/** How long either side waits for the other's answer. */
export const IPC_TIMEOUT_MS = 2000;

/** Requests a worker may make of the primary, with their results. */
export interface PrimaryOps {
  stats: ClusterStats;
  /** Delivers `payload` to connection `arg` on another worker; whether one held it. */
  deliver: boolean;
  /** Prometheus text: every worker's metrics, summed. */
  metrics: string;
  /** Charges `batch` to the primary's rate-limit store (embedded mode); microseconds ahead per key. */
  rate: number[];
  /** Streams (embedded mode, streams/embedded.ts): stream `arg`. */
  append: Position;
  follow: ReadResult;
  claim: Claim;
  'frame-at': StoredFrame | null;
  /** Answered in order: once it is, the primary has handled everything the worker sent before it (a subscription change). */
  sync: null;
  /** Telegram opt-ins (embedded mode, channels/telegram/chats.ts): creator `arg`, chat `chat`. */
  'chats-add': null;
  'chats-del': null;
  chats: string[];
}

/** Requests the primary may make of a worker. */
export interface WorkerOps {
  'local-stats': LocalStats;
  /** Delivers `payload` to connection `arg` if this worker holds it; whether it did. */
  'local-deliver': boolean;
  /** The worker's registry as prom-client JSON. */
  'local-metrics': object[];
}

export interface Request<Op> {
  t: 'req';
  id: number;
  op: Op;
  arg?: string;
  payload?: Uint8Array;
  /** Streams: the frame to append (JSON text). */
  frame?: string;
  batch?: ChargeBatch;
  /** Streams: a position (`follow`'s after, `frame-at`'s offset). */
  pos?: Position;
  /** Streams: how many follows one `follow` request stands for (sockets of one turn asking the same read). */
  times?: number;
  /** Streams: the client_message_id an appended frame answers, or to claim. */
  cmid?: string;
  /** Streams: the streamed answer an appended frame completes. */
  ends?: string;
  /** Telegram opt-ins: the chat id. */
  chat?: string;
}
export interface Response {
  t: 'res';
  id: number;
  result?: unknown;
  error?: string;
}

export type WorkerToPrimary =
  | { t: 'ready' }
  /** The worker's own dependencies (Redis link, subscriptions) are up or not; sent on change. */
  | { t: 'health'; ready: boolean }
  /** The worker stops following a stream (once per earlier `follow`). */
  | { t: 'unfollow'; stream: string }
  /** A streamed answer's text so far (kept for a socket that joins, relayed to the other followers). */
  | { t: 'chunk'; stream: string; chunk: Chunk }
  /**
   * Frames this worker appended, each at the offset it gave it, to session
   * streams whose offsets it holds (primary/streams.ts, leases): PUT_FIELDS
   * values per frame (`Put`), flat, as many as were put in a row (V8's
   * serializer writes and reads a flat array of strings and numbers in
   * about half the time of one object per frame).
   */
  | { t: 'puts'; p: Array<Put[number]> }
  /** A forwarded append this worker cannot make: it holds the stream's offsets no more. */
  | { t: 'decline'; stream: string; fwd: number }
  | { t: 'pub'; topic: string; payload: Uint8Array }
  | { t: 'sub'; add: string[]; del: string[] }
  | Request<keyof PrimaryOps>
  | Response;

export type PrimaryToWorker =
  | { t: 'msg'; topic: string; payload: Uint8Array }
  | { t: 'shutdown'; code: 1001 | 1012 }
  | { t: 'cluster'; ready: boolean }
  /** Budget keys another worker charged (embedded mode). */
  | { t: 'rate'; update: RateUpdate }
  /** A frame of a stream this worker follows (embedded mode), in offset order; `id`: this worker's append request it answers (with its position). */
  | { t: 'smsg'; stream: string; epoch: string; offset: number; payload: string; id?: number }
  /** A chunk of an answer streamed on another worker, for a session this worker follows. */
  | { t: 'chunk'; stream: string; chunk: Chunk }
  /** Another worker follows (or no longer follows) a session stream this worker follows: its pieces go at once (or now and then). */
  | { t: 'shared'; stream: string; shared: boolean }
  /** An append to a session stream whose offsets this worker holds, for it to make (answered by a put with its `fwd`, in a `puts` message, or a `decline`). */
  | { t: 'fwd'; stream: string; payload: string; cmid?: string; ends?: string; fwd: number }
  /** This worker holds a stream's offsets no more (its put did not fit the stream: it expired, was evicted or started again): it appends through the primary again. */
  | { t: 'unlease'; stream: string }
  | Request<keyof WorkerOps>
  | Response;

/** One frame of a `puts` message; `fwd`: the forwarded append it made. */
export type Put = [stream: string, epoch: string, offset: number, payload: string, cmid: string | undefined, ends: string | undefined, fwd: number | undefined];
const PUT_FIELDS = 7;
/** The most frames one `puts` message carries (as MAX_BATCH bounds a batch: no message the primary decodes is huge). */
const MAX_PUTS = 512;

/** Whether a `puts` message's values `p` can take one more frame. */
export const roomForPut = (p: ReadonlyArray<Put[number]>): boolean => p.length < MAX_PUTS * PUT_FIELDS;

/** Calls `fn` with each frame of a `puts` message's flat values, in order (a short tail is ignored). */
export function eachPut(p: ReadonlyArray<Put[number]>, fn: (...put: Put) => void): void {
  for (let i = 0; i + PUT_FIELDS <= p.length; i += PUT_FIELDS) {
    fn(p[i] as string, p[i + 1] as string, p[i + 2] as number, p[i + 3] as string, p[i + 4] as string | undefined, p[i + 5] as string | undefined, p[i + 6] as number | undefined);
  }
}

/** Type guard for messages that carry a `t` tag (anything else on the channel is ignored). */
export function isTagged(m: unknown): m is { t: string } {
  return typeof m === 'object' && m !== null && typeof (m as { t?: unknown }).t === 'string';
}

/**
 * Requests to the other end of one IPC channel, each settled by its
 * `res` message or rejected after `timeoutMs` (GW_ERR_IPC_TIMEOUT).
 */
export class IpcRequests<Ops> {
  #next = 1;
  readonly #pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();

  constructor(
    private readonly send: (msg: Request<keyof Ops>) => void,
    private readonly peer: string,
    private readonly timeoutMs = IPC_TIMEOUT_MS,
  ) {}

  request<K extends keyof Ops>(op: K, fields: Omit<Request<K>, 't' | 'id' | 'op'> = {}): Promise<Ops[K]> {
    const id = this.#next++;
    return new Promise<Ops[K]>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new GatewayError('GW_ERR_IPC_TIMEOUT', `${this.peer} did not answer "${String(op)}" in ${this.timeoutMs} ms`));
      }, this.timeoutMs);
      this.#pending.set(id, { resolve: resolve as (v: unknown) => void, reject, timer });
      this.send({ t: 'req', id, op, ...fields });
    });
  }

  /** Settles the request a `res` message answers (unknown ids: late answers, ignored). */
  settle(msg: Response): void {
    const p = this.#pending.get(msg.id);
    if (!p) return;
    this.#pending.delete(msg.id);
    clearTimeout(p.timer);
    if (msg.error !== undefined) p.reject(new Error(msg.error));
    else p.resolve(msg.result);
  }

  /** Rejects every request in flight (the other end is gone). */
  close(why = 'IPC channel closed'): void {
    for (const p of this.#pending.values()) {
      clearTimeout(p.timer);
      p.reject(new GatewayError('GW_ERR_CLOSED', why));
    }
    this.#pending.clear();
  }
}

/** Answers a request with `run`'s result, or its error's message. */
export function answer(send: (r: Response) => void, id: number, run: () => unknown): void {
  let out: unknown;
  try {
    out = run();
  } catch (err) {
    send({ t: 'res', id, error: (err as Error).message });
    return;
  }
  if (out instanceof Promise) {
    out.then(
      (result: unknown) => send({ t: 'res', id, result }),
      (err: Error) => send({ t: 'res', id, error: err.message }),
    );
  } else send({ t: 'res', id, result: out });
}
