/**
 * The HTTP AI engine client: `POST AI_ENGINE_URL` with
 * `{"query","creator_id","session_id"}`, expecting
 * `{"response","confidence","sources"}`.
 *
 * Node's fetch (undici) keeps connections alive; each request has its own
 * time-out; at most `maxInflight` requests run at once per worker and the
 * excess is refused at once (the caller answers "Failed to process message")
 * rather than queued without bound.
 */
import { GatewayError } from '../errors.js';
import type { AiEngine, Query } from './engine.js';
import type { Answer } from '../protocol/frames.js';

export interface HttpEngineOptions {
  url: string;
  timeoutMs: number;
  maxInflight: number;
}

export class HttpEngine implements AiEngine {
  #inflight = 0;
  readonly #closing = new AbortController();

  constructor(private readonly opts: HttpEngineOptions) {}

  get inflight(): number {
    return this.#inflight;
  }

  async ask(q: Query): Promise<Answer> {
    if (this.#closing.signal.aborted) throw new GatewayError('GW_ERR_CLOSED', 'AI engine client is closed');
    if (this.#inflight >= this.opts.maxInflight) {
      throw new GatewayError('GW_ERR_AI_ENGINE', `AI engine saturated: ${this.#inflight} requests in flight`);
    }
    this.#inflight++;
    try {
      const signal = AbortSignal.any([AbortSignal.timeout(this.opts.timeoutMs), this.#closing.signal]);
      let body: unknown;
      try {
        const res = await fetch(this.opts.url, {
          method: 'POST',
          headers: { 'content-type': 'application/json', accept: 'application/json' },
          body: JSON.stringify(q),
          signal,
        });
        if (!res.ok) {
          await res.body?.cancel();
          throw new GatewayError('GW_ERR_AI_ENGINE', `AI engine answered HTTP ${res.status}`);
        }
        body = await res.json();
      } catch (err) {
        if (err instanceof GatewayError) throw err;
        throw new GatewayError('GW_ERR_AI_ENGINE', `AI engine request failed: ${(err as Error).message}`, { cause: err });
      }
      return parseAnswer(body);
    } finally {
      this.#inflight--;
    }
  }

  async close(): Promise<void> {
    this.#closing.abort();
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
