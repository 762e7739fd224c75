/**
 * The user_message pipeline of one connection: rate limit, typing indicator,
 * AI engine, answer - in order.
 *
 * Ordering: the answers to one connection's user_messages (an ai_response, or
 * an error frame) go out in the order the messages arrived; a message waits
 * while the previous one is with the engine. At most `maxQueued` messages
 * wait per connection; the excess is refused at once with an error frame.
 *
 * `typing_indicator false` follows only a `typing_indicator true` (the seed
 * sent it after every error).
 */
import type { AiEngine } from '../ai/engine.js';
import type { RateLimiter } from './rate-limit.js';
import * as frames from '../protocol/frames.js';
import type { Logger } from '../observability/log.js';

/** What the pipeline needs of a connection. */
export interface ChatPeer {
  readonly creatorId: string;
  readonly sessionId: string;
  readonly connectionId: string;
  /** Set once the socket's close handler ran; nothing is sent after that. */
  readonly closed: boolean;
  /** Pending messages of this connection (owned by the pipeline). */
  chat: ChatState | undefined;
  /** Sends a frame; `droppable` frames may be skipped under backpressure. */
  send(frame: string, droppable: boolean): void;
  /** Runs `fn` with the socket corked (needed for sends after an await). */
  cork(fn: () => void): void;
}

export interface ChatState {
  items: Array<string | { error: string }>;
  busy: boolean;
}

export interface ChatOptions {
  maxQueued: number;
}

export class ChatPipeline {
  constructor(
    private readonly engine: AiEngine,
    private readonly limiter: RateLimiter,
    private readonly opts: ChatOptions,
    private readonly log: Logger,
  ) {}

  /** Accepts a validated, trimmed user message. Called inside a uWS handler (corked). */
  submit(peer: ChatPeer, content: string): void {
    const state = (peer.chat ??= { items: [], busy: false });
    if (state.items.length >= this.opts.maxQueued) {
      peer.send(frames.error(frames.ERRORS.QUEUE_FULL), false);
      return;
    }
    const allowed = this.limiter.take(`${peer.creatorId}\u0000${peer.sessionId}`);
    state.items.push(allowed ? content : { error: frames.ERRORS.RATE_LIMITED });
    if (!state.busy) void this.#run(peer, state, false);
  }

  async #run(peer: ChatPeer, state: ChatState, afterAwait: boolean): Promise<void> {
    state.busy = true;
    try {
      while (state.items.length > 0 && !peer.closed) {
        const item = state.items.shift()!;
        if (typeof item !== 'string') {
          this.#emit(peer, afterAwait, () => peer.send(frames.error(item.error), false));
          continue;
        }
        this.#emit(peer, afterAwait, () => peer.send(frames.typing(true), true));
        let out: string;
        try {
          const answer = await this.engine.ask({ query: item, creator_id: peer.creatorId, session_id: peer.sessionId });
          out = frames.aiResponse(answer);
        } catch (err) {
          this.log.warn({ conn: peer.connectionId, err: (err as Error).message }, 'AI engine request failed');
          out = frames.error(frames.ERRORS.FAILED);
        }
        afterAwait = true;
        if (peer.closed) break;
        peer.cork(() => {
          peer.send(out, false);
          peer.send(frames.typing(false), true);
        });
      }
    } finally {
      state.busy = false;
      if (peer.closed) state.items.length = 0;
    }
  }

  #emit(peer: ChatPeer, corkNeeded: boolean, fn: () => void): void {
    if (corkNeeded) peer.cork(fn);
    else fn();
  }
}
