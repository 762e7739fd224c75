/**
 * The HTTP AI engine client: `POST AI_ENGINE_URL` with
 * `{"query","creator_id","session_id"}`. The engine answers either
 *   - `application/json`: `{"response","confidence","sources"}` (the seed's), or
 *   - a stream, `application/x-ndjson` (one JSON object a line) or
 *     `text/event-stream` (one JSON object per `data:` event; `[DONE]` ends
 *     it): `{"delta":"..."}` pieces, then a final object with the other
 *     fields (`confidence`, `sources`). The answer's `response` is the pieces
 *     joined.
 *
 * Bounds: undici's Pool keeps up to `connections` keep-alive connections to
 * the engine (requests beyond them wait in its queue); at most `maxInflight`
 * requests exist per worker (the excess is refused at once); the body is
 * read as it arrives and cut at `maxResponseBytes` (an engine answering
 * 400 MB cannot take the worker's memory); deadlines for the whole answer,
 * the first piece and the gap between pieces. Every failure is a coded
 * GatewayError (ai/engine.ts). Requests go through undici's `dispatch`
 * (class Exchange below), not `fetch` or `request`: no body stream and no
 * promise per chunk, which is most of the cost of relaying a streamed
 * answer piece by piece.
 */
import type { IncomingHttpHeaders } from 'node:http';
import { Pool, type Dispatcher } from 'undici';
import { GatewayError, type ErrorCode } from '../errors.js';
import type { AiEngine, AskOptions, Query } from './engine.js';
import type { Answer } from '../protocol/frames.js';
import { Buffer } from 'node:buffer';
import { performance } from 'node:perf_hooks';

export interface HttpEngineOptions {
  url: string;
  /** The whole answer. */
  timeoutMs: number;
  /** A stream's first piece (and the response headers). */
  firstPieceTimeoutMs?: number;
  /** The gap between two pieces of a stream. */
  idleTimeoutMs?: number;
  maxInflight: number;
  /** Keep-alive connections to the engine per worker. */
  connections?: number;
  /** The most bytes of body read from one answer. */
  maxResponseBytes?: number;
}

const HEADERS = { 'content-type': 'application/json', accept: 'application/json, application/x-ndjson, text/event-stream' };

type Framing = 'json' | 'ndjson' | 'sse';

function framingOf(contentType: string | string[] | undefined): Framing {
  const ct = (Array.isArray(contentType) ? contentType[0] : contentType)?.toLowerCase() ?? '';
  if (ct.startsWith('application/x-ndjson') || ct.startsWith('application/jsonl')) return 'ndjson';
  if (ct.startsWith('text/event-stream')) return 'sse';
  return 'json';
}

export class HttpEngine implements AiEngine {
  #inflight = 0;
  #closed = false;
  readonly #pool: Pool;
  readonly #path: string;
  readonly #max: number;

  constructor(private readonly opts: HttpEngineOptions) {
    const u = new URL(opts.url);
    this.#path = `${u.pathname}${u.search}`;
    this.#max = opts.maxResponseBytes ?? 1 << 20;
    this.#pool = new Pool(u.origin, {
      connections: opts.connections ?? 256,
      pipelining: 1,
      keepAliveTimeout: 30_000,
      // Our own deadlines (below) are tighter and coded; these only stop undici's defaults from cutting long streams.
      headersTimeout: opts.timeoutMs + 1000,
      bodyTimeout: opts.timeoutMs + 1000,
    });
    this.#pool.on('connectionError', () => {}); // reported per request
  }

  get inflight(): number {
    return this.#inflight;
  }

  ask(q: Query, o: AskOptions = {}): Promise<Answer> {
    if (this.#closed) return Promise.reject(new GatewayError('GW_ERR_CLOSED', 'AI engine client is closed'));
    if (this.#inflight >= this.opts.maxInflight) {
      return Promise.reject(new GatewayError('GW_ERR_AI_SATURATED', `AI engine saturated: ${this.#inflight} requests in flight`));
    }
    if (o.signal?.aborted) return Promise.reject(new GatewayError('GW_ERR_AI_CANCELLED', 'cancelled before the request'));
    this.#inflight++;
    return new Promise<Answer>((resolve, reject) => {
      const x = new Exchange(this.opts, this.#max, o, (err, answer) => {
        this.#inflight--;
        if (err) reject(err);
        else resolve(answer!);
      });
      try {
        this.#pool.dispatch({ path: this.#path, method: 'POST', headers: HEADERS, body: JSON.stringify(q) }, x);
      } catch (err) {
        x.onResponseError(undefined, err as Error);
      }
    });
  }

  /** Aborts requests in flight and closes the connections. Safe to call twice. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#pool.destroy().catch(() => {});
  }
}

/**
 * One request to the engine, as an undici dispatch handler: the body's
 * chunks go straight to the PieceReader, with no stream object, no async
 * iterator and no promise per chunk (a streamed answer is hundreds of
 * chunks). Settles once, through `done`; after that, whatever undici still
 * reports is ignored and the request is aborted.
 *
 * Deadlines: one timer for the whole answer; one for the first piece, then
 * the gap between pieces, which is not re-armed per piece: a piece only
 * notes its time, and the timer, when it fires, waits again for what is
 * left of the gap since the last piece.
 */
class Exchange implements Dispatcher.DispatchHandler {
  #controller: Dispatcher.DispatchController | undefined;
  #settled = false;
  #reader: PieceReader | undefined;
  #size = 0;
  /** Why the exchange was stopped (a deadline, a cancel): the error it rejects with. */
  #why: GatewayError | undefined;
  readonly #total: NodeJS.Timeout;
  #gap: NodeJS.Timeout | undefined;
  #gapMs: number | undefined;
  #gapWhat = '';
  #lastPiece = 0;
  #pieces = 0;
  readonly #onCancel = (): void => this.#stop('GW_ERR_AI_CANCELLED', 'cancelled by the client');

  constructor(
    private readonly opts: HttpEngineOptions,
    private readonly max: number,
    private readonly o: AskOptions,
    private readonly done: (err: Error | undefined, answer?: Answer) => void,
  ) {
    this.#total = setTimeout(() => this.#stop('GW_ERR_AI_TIMEOUT', `no complete answer within ${opts.timeoutMs} ms`), opts.timeoutMs);
    // Until the first piece (the headers, for a JSON answer), then between pieces.
    this.#armGap(opts.firstPieceTimeoutMs, `no first piece within ${opts.firstPieceTimeoutMs} ms`);
    o.signal?.addEventListener('abort', this.#onCancel, { once: true });
  }

  #armGap(ms: number | undefined, what: string): void {
    clearTimeout(this.#gap);
    this.#gap = undefined;
    this.#gapMs = ms;
    this.#gapWhat = what;
    this.#lastPiece = performance.now();
    if (ms !== undefined) this.#gap = setTimeout(this.#gapCheck, ms);
  }

  readonly #gapCheck = (): void => {
    const left = this.#gapMs! - (performance.now() - this.#lastPiece);
    if (left <= 0) this.#stop('GW_ERR_AI_TIMEOUT', this.#gapWhat);
    else this.#gap = setTimeout(this.#gapCheck, left);
  };

  readonly #onPiece = (): void => {
    if (this.#pieces++ === 0) this.#armGap(this.opts.idleTimeoutMs, `no piece for ${this.opts.idleTimeoutMs} ms`);
    else this.#lastPiece = performance.now();
  };

  #stop(code: ErrorCode, message: string): void {
    if (this.#settled) return;
    this.#why = new GatewayError(code, `AI engine request: ${message}`);
    this.#fail(this.#why);
  }

  #fail(err: Error): void {
    if (this.#settled) return;
    this.#finish(err);
    this.#controller?.abort(err);
  }

  #finish(err: Error | undefined, answer?: Answer): void {
    this.#settled = true;
    clearTimeout(this.#total);
    clearTimeout(this.#gap);
    this.o.signal?.removeEventListener('abort', this.#onCancel);
    this.done(err, answer);
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.#controller = controller;
    // Stopped while queued in the pool: the request never leaves.
    if (this.#settled) controller.abort(this.#why ?? new Error('settled'));
  }

  onResponseStart(_controller: Dispatcher.DispatchController, statusCode: number, headers: IncomingHttpHeaders): void {
    if (this.#settled) return;
    if (statusCode < 200 || statusCode > 299) {
      this.#fail(new GatewayError('GW_ERR_AI_HTTP_STATUS', `AI engine answered HTTP ${statusCode}`));
      return;
    }
    const framing = framingOf(headers['content-type']);
    // A JSON answer has its total deadline only; a stream's first-piece deadline runs on.
    if (framing === 'json') this.#armGap(undefined, '');
    this.#reader = new PieceReader(framing, this.o.onDelta, this.#onPiece);
  }

  onResponseData(_controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.#settled || this.#reader === undefined) return;
    this.#size += chunk.length;
    if (this.#size > this.max) {
      this.#fail(new GatewayError('GW_ERR_AI_TOO_LARGE', `AI engine answered more than ${this.max} bytes`));
      return;
    }
    try {
      this.#reader.push(chunk);
      // The stream said it is complete (SSE [DONE]): what follows is not read.
      if (this.#reader.done) this.#complete(true);
    } catch (err) {
      this.#fail(err as Error);
    }
  }

  onResponseEnd(): void {
    if (!this.#settled) this.#complete(false);
  }

  onResponseError(_controller: Dispatcher.DispatchController | undefined, err: Error): void {
    if (this.#settled) return;
    this.#finish(new GatewayError('GW_ERR_AI_UNREACHABLE', `AI engine request failed: ${err.message}`, { cause: err }));
  }

  #complete(abortRest: boolean): void {
    let answer: Answer;
    try {
      answer = this.#reader!.end();
    } catch (err) {
      this.#fail(err as Error);
      return;
    }
    this.#finish(undefined, answer);
    if (abortRest) this.#controller?.abort(new Error('answer complete'));
  }
}

/**
 * Reads an answer body as it arrives: the whole JSON document, or the
 * pieces of an NDJSON or SSE stream (each a JSON object), handing each
 * delta to `onDelta` and calling `onPiece` after each piece (the idle
 * deadline). Throws GW_ERR_AI_BAD_ANSWER on anything else.
 */
export class PieceReader {
  #buf = '';
  #chunks: Buffer[] = [];
  #deltas: string[] = [];
  #final: Record<string, unknown> | undefined;
  #pieces = 0;
  /** The stream said it is complete (SSE `[DONE]`). */
  done = false;
  readonly #decoder = new TextDecoder('utf-8', { fatal: true });

  constructor(
    private readonly framing: Framing,
    private readonly onDelta: ((d: string) => void) | undefined,
    private readonly onPiece: () => void,
  ) {}

  push(chunk: Buffer): void {
    if (this.framing === 'json') {
      this.#chunks.push(chunk);
      return;
    }
    try {
      // CRs are only line-ending noise here (JSON escapes them inside strings).
      const text = this.#decoder.decode(chunk, { stream: true });
      this.#buf += text.includes('\r') ? text.replace(/\r/g, '') : text;
    } catch {
      throw new GatewayError('GW_ERR_AI_BAD_ANSWER', 'AI engine stream is not UTF-8');
    }
    const sep = this.framing === 'ndjson' ? '\n' : '\n\n';
    let i: number;
    while (!this.done && (i = this.#buf.indexOf(sep)) >= 0) {
      const record = this.#buf.slice(0, i);
      this.#buf = this.#buf.slice(i + sep.length);
      if (this.framing === 'ndjson') this.#line(record);
      else this.#event(record);
    }
  }

  /** One SSE event: its `data:` lines joined; comments and other fields ignored. */
  #event(record: string): void {
    const data = record
      .split('\n')
      .filter((l) => l.startsWith('data:'))
      .map((l) => l.slice(l.startsWith('data: ') ? 6 : 5));
    if (data.length === 0) return;
    const text = data.join('\n');
    if (text.trim() === '[DONE]') {
      this.done = true;
      return;
    }
    this.#line(text);
  }

  #line(raw: string): void {
    const line = raw.trim();
    if (line === '') return;
    let v: unknown;
    try {
      v = JSON.parse(line);
    } catch {
      throw new GatewayError('GW_ERR_AI_BAD_ANSWER', 'AI engine stream has a line that is not JSON');
    }
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new GatewayError('GW_ERR_AI_BAD_ANSWER', 'AI engine stream has a piece that is not an object');
    if (this.#final !== undefined) throw new GatewayError('GW_ERR_AI_BAD_ANSWER', 'AI engine stream goes on after its final object');
    const o = v as Record<string, unknown>;
    this.#pieces++;
    this.onPiece();
    if ('delta' in o) {
      if (typeof o.delta !== 'string') throw new GatewayError('GW_ERR_AI_BAD_ANSWER', 'AI engine stream has a non-string "delta"');
      if (o.delta !== '') {
        this.#deltas.push(o.delta);
        this.onDelta?.(o.delta);
      }
      return;
    }
    this.#final = o;
  }

  /** The complete answer, once the body has ended. */
  end(): Answer {
    if (this.framing === 'json') {
      let body: unknown;
      try {
        body = JSON.parse(this.#decoder.decode(Buffer.concat(this.#chunks)));
      } catch {
        throw new GatewayError('GW_ERR_AI_BAD_ANSWER', 'AI engine answer is not JSON');
      }
      return parseAnswer(body);
    }
    if (!this.done && this.#buf.trim() !== '') {
      if (this.framing === 'ndjson') this.#line(this.#buf);
      else this.#event(this.#buf);
    }
    if (this.#pieces === 0) throw new GatewayError('GW_ERR_AI_BAD_ANSWER', 'AI engine stream ended without a piece');
    const final = this.#final ?? {};
    const joined = this.#deltas.join('');
    // A stream with no deltas may carry the whole text in its final object.
    const response = this.#deltas.length === 0 && typeof final.response === 'string' ? final.response : joined;
    return parseAnswer({ ...final, response });
  }
}

/** Validates an engine answer; missing confidence/sources take the seed's defaults (0.0, []). */
export function parseAnswer(body: unknown): Answer {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new GatewayError('GW_ERR_AI_BAD_ANSWER', 'AI engine answer is not a JSON object');
  }
  const { response, confidence = 0, sources = [] } = body as Record<string, unknown>;
  if (typeof response !== 'string') throw new GatewayError('GW_ERR_AI_BAD_ANSWER', 'AI engine answer has no string "response"');
  if (typeof confidence !== 'number' || !Number.isFinite(confidence)) {
    throw new GatewayError('GW_ERR_AI_BAD_ANSWER', 'AI engine answer has a non-numeric "confidence"');
  }
  if (!Array.isArray(sources)) throw new GatewayError('GW_ERR_AI_BAD_ANSWER', 'AI engine answer has non-array "sources"');
  return { response, confidence, sources };
}
