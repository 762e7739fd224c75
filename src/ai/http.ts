/**
 * The HTTP AI engine client: `POST AI_ENGINE_URL` with
 * `{"query","creator_id","session_id"}`, expecting
 * `{"response","confidence","sources"}`.
 *
 * undici's Pool keeps up to `connections` keep-alive connections to the
 * engine (requests beyond them wait in the pool's queue); each request has
 * one deadline timer covering queueing, headers and body; at most
 * `maxInflight` requests exist at once per worker and the excess is refused
 * at once (the caller answers "Failed to process message") rather than
 * queued without bound. undici's `request` is used rather than `fetch`: it
 * costs a fraction of the CPU per call, which matters at thousands of
 * concurrent chats.
 */
import { Pool } from 'undici';
import { GatewayError } from '../errors.js';
import type { AiEngine, Query } from './engine.js';
import type { Answer } from '../protocol/frames.js';

export interface HttpEngineOptions {
  url: string;
  timeoutMs: number;
  maxInflight: number;
  /** Keep-alive connections to the engine per worker. */
  connections?: number;
}

const HEADERS = { 'content-type': 'application/json', accept: 'application/json' };

export class HttpEngine implements AiEngine {
  #inflight = 0;
  #closed = false;
  readonly #pool: Pool;
  readonly #path: string;

  constructor(private readonly opts: HttpEngineOptions) {
    const u = new URL(opts.url);
    this.#path = `${u.pathname}${u.search}`;
    this.#pool = new Pool(u.origin, {
      connections: opts.connections ?? 256,
      pipelining: 1,
      keepAliveTimeout: 30_000,
      headersTimeout: opts.timeoutMs,
      bodyTimeout: opts.timeoutMs,
    });
    this.#pool.on('connectionError', () => {}); // reported per request
  }

  get inflight(): number {
    return this.#inflight;
  }

  async ask(q: Query): Promise<Answer> {
    if (this.#closed) throw new GatewayError('GW_ERR_CLOSED', 'AI engine client is closed');
    if (this.#inflight >= this.opts.maxInflight) {
      throw new GatewayError('GW_ERR_AI_ENGINE', `AI engine saturated: ${this.#inflight} requests in flight`);
    }
    this.#inflight++;
    const deadline = new AbortController();
    const timer = setTimeout(() => deadline.abort(), this.opts.timeoutMs);
    try {
      let body: unknown;
      try {
        const res = await this.#pool.request({ path: this.#path, method: 'POST', headers: HEADERS, body: JSON.stringify(q), signal: deadline.signal });
        if (res.statusCode < 200 || res.statusCode > 299) {
          res.body.resume();
          throw new GatewayError('GW_ERR_AI_ENGINE', `AI engine answered HTTP ${res.statusCode}`);
        }
        body = await res.body.json();
      } catch (err) {
        if (err instanceof GatewayError) throw err;
        const why = deadline.signal.aborted ? `timed out after ${this.opts.timeoutMs} ms` : (err as Error).message;
        throw new GatewayError('GW_ERR_AI_ENGINE', `AI engine request failed: ${why}`, { cause: err });
      }
      return parseAnswer(body);
    } finally {
      clearTimeout(timer);
      this.#inflight--;
    }
  }

  /** Aborts requests in flight and closes the connections. Safe to call twice. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#pool.destroy().catch(() => {});
  }
}

/** Validates an engine answer; missing confidence/sources take the seed's defaults (0.0, []). */
export function parseAnswer(body: unknown): Answer {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) {
    throw new GatewayError('GW_ERR_AI_ENGINE', 'AI engine answer is not a JSON object');
  }
  const { response, confidence = 0, sources = [] } = body as Record<string, unknown>;
  if (typeof response !== 'string') throw new GatewayError('GW_ERR_AI_ENGINE', 'AI engine answer has no string "response"');
  if (typeof confidence !== 'number' || !Number.isFinite(confidence)) {
    throw new GatewayError('GW_ERR_AI_ENGINE', 'AI engine answer has a non-numeric "confidence"');
  }
  if (!Array.isArray(sources)) throw new GatewayError('GW_ERR_AI_ENGINE', 'AI engine answer has non-array "sources"');
  return { response, confidence, sources };
}
