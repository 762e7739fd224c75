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
 *
 * widget.v2 (the peer reads its session stream):
 *   - the answer (or error) goes into the session stream, and still does
 *     when the socket closed while the engine was answering;
 *   - a streamed answer is relayed as `ai_response_chunk` frames, gathered
 *     per event-loop turn, to every widget.v2 socket of the session on every
 *     node (streams/hub.ts), then the final `ai_response` with the same
 *     message id carries the whole content;
 *   - `cancel` aborts the engine request and ends the answer with what was
 *     sent so far (`"cancelled": true`);
 *   - a `client_message_id` already claimed in the session is not sent to
 *     the engine again: its answer comes from the history (or live, if it is
 *     still being answered).
 */
import type { AiEngine, CancelSignal } from '../ai/engine.js';
import { aiFailureLabel, GatewayError } from '../errors.js';
import type { MessageLimit } from '../limits/admit.js';
import * as frames from '../protocol/frames.js';
import type { Logger } from '../observability/log.js';
import type { Metrics } from '../observability/metrics.js';
import type { Claim, Chunk } from '../streams/streams.js';
import { performance } from 'node:perf_hooks';

/** What the pipeline needs of a connection. */
export interface ChatPeer {
  readonly creatorId: string;
  readonly sessionId: string;
  readonly connectionId: string;
  /** The session's stream name (streams.ts sessionStream), made once per connection. */
  readonly sessionStream: string;
  /** Set once the socket's close handler ran; nothing is sent after that. */
  readonly closed: boolean;
  /** Pending messages of this connection (owned by the pipeline). */
  chat: ChatState | undefined;
  /** widget.v2: the answer goes into the session stream (and still does after the socket closed). */
  readonly v2: boolean;
  /** Sends a typing indicator (may be skipped under backpressure). */
  typing(isTyping: boolean): void;
  /**
   * widget.v2: the message id of the answer whose frame, when the session
   * stream delivers it to this socket, is followed at once by typing false
   * in the same write (then this is cleared). Set by the pipeline.
   */
  typingOffAfter: string | undefined;
  /** Sends an ai_response frame (widget.v2: resolves once in the session stream and delivered here). */
  answer(a: frames.Answer, clientMessageId?: string): void | Promise<void>;
  /**
   * Sends an error frame with this text (widget.v2: likewise). `messageId`:
   * the streamed answer it ends (its chunks are to be discarded; the error
   * frame names it).
   */
  error(text: string, clientMessageId?: string, messageId?: string): void | Promise<void>;
  /** Runs `fn` with the socket corked (needed for sends after an await); a closed socket runs it uncorked (its sends are no-ops, its appends are not). */
  cork(fn: () => void): void;
  /** Closes the socket after an unexpected fault (1011). */
  fail(): void;
}

/** widget.v2 peers: their session's stream (claims, chunks, a retried answer). */
export interface SessionStreams {
  claim(peer: ChatPeer, cmid: string): Promise<Claim>;
  /** Sends this socket the stored answer at `at` again (a retried client_message_id); false if no longer kept. */
  resend(peer: ChatPeer, at: { epoch: string; offset: number }): Promise<boolean>;
  chunk(peer: ChatPeer, chunk: Chunk): void;
}

interface Item {
  content: string;
  cmid: string | undefined;
  limited: MessageLimit | undefined;
}

export interface ChatState {
  items: Array<Item | { error: string }>;
  busy: boolean;
  /** widget.v2: the answer with the engine now (one at a time: the next message waits), for `cancel`. */
  answering: Cancel | undefined;
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
    private readonly streams?: SessionStreams,
  ) {}

  /**
   * Accepts a validated, trimmed user message; `limited`: the budget that
   * refused it, answered with its error in turn. Called inside a uWS handler
   * (corked).
   */
  submit(peer: ChatPeer, content: string, limited?: MessageLimit, cmid?: string): void {
    const state = (peer.chat ??= { items: [], busy: false, answering: undefined });
    if (state.items.length >= this.opts.maxQueued) {
      void peer.error(frames.ERRORS.QUEUE_FULL, cmid);
      return;
    }
    state.items.push({ content, cmid: peer.v2 ? cmid : undefined, limited });
    this.#kick(peer, state);
  }

  /** Answers an error in turn with the other answers (widget.v2: a malformed client_message_id). */
  refuse(peer: ChatPeer, error: string): void {
    const state = (peer.chat ??= { items: [], busy: false, answering: undefined });
    state.items.push({ error });
    this.#kick(peer, state);
  }

  /** widget.v2: aborts the answer `messageId` streaming on this connection; false if there is none. */
  cancel(peer: ChatPeer, messageId: string | undefined): boolean {
    const a = peer.chat?.answering;
    if (a === undefined || a.messageId !== messageId) return false;
    a.abort();
    return true;
  }

  #kick(peer: ChatPeer, state: ChatState): void {
    if (state.busy) return;
    this.#run(peer, state, false).catch((err: unknown) => {
      // A fault in sending (never in the engine: that is answered) closes this socket only.
      this.log.error({ conn: peer.connectionId, err: err instanceof Error ? err.message : String(err) }, 'socket handler failed');
      peer.fail();
    });
  }

  async #run(peer: ChatPeer, state: ChatState, afterAwait: boolean): Promise<void> {
    state.busy = true;
    try {
      while (state.items.length > 0 && !peer.closed) {
        const item = state.items.shift()!;
        if (!('content' in item)) {
          await this.#emit(peer, afterAwait, () => peer.error(item.error));
          continue;
        }
        if (item.cmid !== undefined && this.streams) {
          const claim = await this.streams.claim(peer, item.cmid).catch((): Claim => ({ state: 'new' }));
          afterAwait = true;
          if (claim.state === 'pending') continue; // being answered: it reaches this socket through the session stream
          if (claim.state === 'answered' && (await this.streams.resend(peer, claim))) continue;
        }
        if (item.limited !== undefined) {
          await this.#emit(peer, afterAwait, () => peer.error(item.limited === 'session' ? frames.ERRORS.RATE_LIMITED : frames.ERRORS.AI_BUDGET, item.cmid));
          continue;
        }
        if (peer.v2) {
          await this.#ask(peer, state, item, afterAwait);
          afterAwait = true;
          continue;
        }
        // widget.v1: no stream, no relay, no cancel: the seed's exchange with one
        // await, and the answer and typing false in one write.
        void this.#emit(peer, afterAwait, () => peer.typing(true));
        let out: frames.Answer | undefined;
        const started = performance.now();
        try {
          out = await this.engine.ask({ query: item.content, creator_id: peer.creatorId, session_id: peer.sessionId });
          this.metrics.aiLatency.observe((performance.now() - started) / 1000);
        } catch (err) {
          this.#failed(peer, err);
        }
        afterAwait = true;
        if (peer.closed) break;
        peer.cork(() => {
          if (out !== undefined) void peer.answer(out);
          else void peer.error(frames.ERRORS.FAILED);
          peer.typing(false);
        });
      }
    } finally {
      state.busy = false;
      if (peer.closed) state.items.length = 0;
    }
  }

  /** A failed engine request: counted by its code, logged (the caller answers "Failed to process message"). */
  #failed(peer: ChatPeer, err: unknown): void {
    const reason = aiFailureLabel(err);
    this.metrics.aiFailures.labels(reason).inc();
    this.log.warn({ conn: peer.connectionId, reason, err: (err as Error).message }, 'AI engine request failed');
  }

  /** widget.v2: one answer, streamed through the session stream, cancellable. */
  async #ask(peer: ChatPeer, state: ChatState, item: Item, afterAwait: boolean): Promise<void> {
    void this.#emit(peer, afterAwait, () => peer.typing(true)); // a plain send: nothing to wait for
    const messageId = frames.newMessageId();
    const relay = this.streams ? new AnswerRelay(this.streams, peer, messageId) : undefined;
    const abort = new Cancel(messageId);
    state.answering = abort;
    let out: frames.Answer | undefined;
    const started = performance.now();
    try {
      const a = await this.engine.ask(
        { query: item.content, creator_id: peer.creatorId, session_id: peer.sessionId },
        relay ? { onDelta: (d) => relay.delta(d), signal: abort } : { signal: abort },
      );
      out = { response: a.response, confidence: a.confidence, sources: a.sources, messageId };
      this.metrics.aiLatency.observe((performance.now() - started) / 1000);
    } catch (err) {
      if (err instanceof GatewayError && err.code === 'GW_ERR_AI_CANCELLED' && relay) {
        // Cancelled: the answer ends with what was sent so far.
        out = { response: relay.text, confidence: 0, sources: [], messageId, cancelled: true };
      } else this.#failed(peer, err);
    } finally {
      state.answering = undefined;
    }
    relay?.finish(out !== undefined && out.cancelled !== true);
    // The session keeps its answer even if this socket left. Typing false
    // leaves with the answer's frame when the stream delivers it (one write, not two).
    const withFrame = out !== undefined;
    if (withFrame) peer.typingOffAfter = messageId;
    if (out !== undefined) await this.#emit(peer, true, () => peer.answer(out, item.cmid));
    else await this.#emit(peer, true, () => peer.error(frames.ERRORS.FAILED, item.cmid, relay?.started ? messageId : undefined));
    if (withFrame) {
      if (peer.typingOffAfter !== messageId) return; // sent with the frame
      peer.typingOffAfter = undefined;
    }
    if (!peer.closed) peer.cork(() => peer.typing(false));
  }

  /** Runs a send, corked when after an await; returns a widget.v2 append to wait for (nothing for a plain send: no promise hop). */
  #emit(peer: ChatPeer, corkNeeded: boolean, fn: () => void | Promise<void>): void | Promise<void> {
    if (!corkNeeded) return fn();
    let p: void | Promise<void> = undefined;
    peer.cork(() => {
      p = fn();
    });
    return p;
  }
}

/**
 * The chunks of one streamed answer: the engine's pieces gathered per
 * event-loop turn into one piece, relayed to the session.
 */
class AnswerRelay {
  /** Pieces relayed, and those not yet (joined, never sliced: linear in the answer's length). */
  readonly #parts: string[] = [];
  #pending: string[] = [];
  #sent = 0;
  #scheduled = false;

  constructor(
    private readonly streams: SessionStreams,
    private readonly peer: ChatPeer,
    private readonly messageId: string,
  ) {}

  get started(): boolean {
    return this.#sent > 0;
  }

  /** What was relayed so far (a cancelled answer ends with it). */
  get text(): string {
    return this.#parts.join('');
  }

  delta(d: string): void {
    this.#pending.push(d);
    if (this.#scheduled) return;
    this.#scheduled = true;
    setImmediate(() => this.flush());
  }

  /**
   * The answer ended. Complete, after chunks: the rest goes as a last chunk,
   * so the deltas join into the content. Complete before any chunk left (an
   * answer within one turn): no chunk at all, the answer carries it.
   * Cancelled or failed: what is pending is dropped (a cancelled answer's
   * content is what was sent; a failed one's chunks are discarded).
   */
  finish(complete: boolean): void {
    if (complete && this.started) this.flush();
    else this.#pending = [];
  }

  flush(): void {
    this.#scheduled = false;
    if (this.#pending.length === 0) return;
    const delta = this.#pending.join('');
    this.#pending = [];
    if (delta === '') return;
    const chunk: Chunk = { messageId: this.messageId, index: this.#sent, delta };
    this.#sent += delta.length;
    this.#parts.push(delta);
    this.streams.chunk(this.peer, chunk);
  }
}

/** A cancel signal for one engine request (engine.ts CancelSignal): what an AbortController does here, for less. */
class Cancel implements CancelSignal {
  aborted = false;
  #listeners: Array<() => void> = [];

  /** The answer it cancels. */
  constructor(readonly messageId: string) {}

  addEventListener(_type: 'abort', fn: () => void): void {
    this.#listeners.push(fn);
  }

  removeEventListener(_type: 'abort', fn: () => void): void {
    const i = this.#listeners.indexOf(fn);
    if (i >= 0) this.#listeners.splice(i, 1);
  }

  abort(): void {
    if (this.aborted) return;
    this.aborted = true;
    for (const fn of this.#listeners.splice(0)) fn();
  }
}
