/**
 * The AI engine interface: one question in, one answer out, streamed piece
 * by piece when the engine streams.
 *
 * Guarantees, for every implementation:
 *   - `ask` always settles, within the engine's deadlines (the total
 *     AI_ENGINE_TIMEOUT_MS; for a stream also the first piece and the idle
 *     gap between pieces), and never blocks the event loop;
 *   - it rejects with a GatewayError whose code says why (GW_ERR_AI_TIMEOUT,
 *     _UNREACHABLE, _HTTP_STATUS, _BAD_ANSWER, _TOO_LARGE, _SATURATED,
 *     _CIRCUIT_OPEN, _CANCELLED: errors.ts); callers switch on the code;
 *   - `onDelta` is called with each piece in order, only before `ask`
 *     settles, and the pieces joined are exactly the answer's `response`;
 *   - aborting `signal` aborts the engine request (the HTTP request is
 *     cancelled) and rejects with GW_ERR_AI_CANCELLED.
 */
import type { Answer } from '../protocol/frames.js';

export interface Query {
  query: string;
  creator_id: string;
  session_id: string;
}

export interface AskOptions {
  /** Each piece of a streamed answer, in order. */
  onDelta?: (delta: string) => void;
  /** Cancels the request. */
  signal?: CancelSignal;
}

/**
 * What `signal` must offer: an AbortSignal does, and so does the chat
 * pipeline's Cancel, which costs a fraction of an AbortController (one per
 * widget.v2 question, where most are never cancelled).
 */
export interface CancelSignal {
  readonly aborted: boolean;
  addEventListener(type: 'abort', fn: () => void, options?: { once?: boolean }): void;
  removeEventListener(type: 'abort', fn: () => void): void;
}

export interface AiEngine {
  ask(q: Query, o?: AskOptions): Promise<Answer>;
  /** Aborts requests in flight; safe to call twice. */
  close(): Promise<void>;
}
