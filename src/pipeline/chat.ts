/**
 * The user_message pipeline of one connection: typing indicator, AI engine,
 * answer - in order. (Rate limits are applied before, in the validation
 * stage; a refused message is answered here, in its turn.)
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
import { aiFailureLabel } from '../errors.js';
import type { MessageLimit } from '../limits/admit.js';
import * as frames from '../protocol/frames.js';
import type { Logger } from '../observability/log.js';
import type { Metrics } from '../observability/metrics.js';

/** What the pipeline needs of a connection. */
export interface ChatPeer {
  readonly creatorId: string;
  readonly sessionId: string;
  readonly connectionId: string;
  /** Set once the socket's close handler ran; nothing is sent after that. */
  readonly closed: boolean;
  /** Pending messages of this connection (owned by the pipeline). */
  chat: ChatState | undefined;
  /** Sends a typing indicator (may be skipped under backpressure). */
  typing(isTyping: boolean): void;
  /** Sends an ai_response frame. */
  answer(a: frames.Answer): void;
  /** Sends an error frame with this text. */
  error(text: string): void;
  /** Runs `fn` with the socket corked (needed for sends after an await). */
  cork(fn: () => void): void;
  /** Closes the socket after an unexpected fault (1011). */
  fail(): void;
}

export type OutKind = 'typing_indicator' | 'ai_response' | 'error' | 'pong' | 'connection_status' | 'message';

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
    private readonly opts: ChatOptions,
    private readonly log: Logger,
    private readonly metrics: Metrics,
  ) {}

  /**
   * Accepts a validated, trimmed user message; `limited`: the budget that
   * refused it, answered with its error in turn. Called inside a uWS handler
   * (corked).
   */
  submit(peer: ChatPeer, content: string, limited?: MessageLimit): void {
    const state = (peer.chat ??= { items: [], busy: false });
    if (state.items.length >= this.opts.maxQueued) {
      peer.error(frames.ERRORS.QUEUE_FULL);
      return;
    }
    state.items.push(limited === undefined ? content : { error: limited === 'session' ? frames.ERRORS.RATE_LIMITED : frames.ERRORS.AI_BUDGET });
    if (!state.busy) {
      this.#run(peer, state, false).catch((err: unknown) => {
        // A fault in sending (never in the engine: that is answered) closes this socket only.
        this.log.error({ conn: peer.connectionId, err: err instanceof Error ? err.message : String(err) }, 'socket handler failed');
        peer.fail();
      });
    }
  }

  async #run(peer: ChatPeer, state: ChatState, afterAwait: boolean): Promise<void> {
    state.busy = true;
    try {
      while (state.items.length > 0 && !peer.closed) {
        const item = state.items.shift()!;
        if (typeof item !== 'string') {
          this.#emit(peer, afterAwait, () => peer.error(item.error));
          continue;
        }
        this.#emit(peer, afterAwait, () => peer.typing(true));
        let out: frames.Answer | undefined;
        const started = performance.now();
        try {
          const answer = await this.engine.ask({ query: item, creator_id: peer.creatorId, session_id: peer.sessionId });
          out = answer;
          this.metrics.aiLatency.observe((performance.now() - started) / 1000);
        } catch (err) {
          const reason = aiFailureLabel(err);
          this.metrics.aiFailures.labels(reason).inc();
          this.log.warn({ conn: peer.connectionId, reason, err: (err as Error).message }, 'AI engine request failed');
        }
        afterAwait = true;
        if (peer.closed) break;
        peer.cork(() => {
          if (out !== undefined) peer.answer(out);
          else peer.error(frames.ERRORS.FAILED);
          peer.typing(false);
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
