/**
 * The Telegram channel: a creator's bot receives updates on a webhook,
 * `POST /api/v1/channels/telegram/{creator_id}/webhook`, and answers through
 * the Bot API. The same chat pipeline as the widget answers it (same engine,
 * same per-session and per-creator budgets; the session is the chat:
 * `tg-<chat id>`), and creator broadcasts reach the chats that opted in.
 *
 * Webhook: the `X-Telegram-Bot-Api-Secret-Token` header is compared with the
 * creator's secret in constant time (wrong or missing: 401; a creator with
 * no bot: 404). Anything else is answered 200 at once, before it is
 * processed: Telegram retries what it thinks failed, and would retry a 4xx
 * forever, so a malformed update is counted and logged, not refused.
 * A retried update (same update_id) is processed once: claimed in the
 * history store (shared by every worker and host) for HISTORY_TTL_S, or,
 * with history off, remembered by this worker.
 *
 * Updates: a text message goes to the AI engine (sendChatAction "typing"
 * first, sendMessage with the answer, split at Telegram's 4096 characters);
 * `/start` or `/subscribe` opts the chat in to the creator's broadcasts,
 * `/stop` or `/unsubscribe` out; every other kind of update (edits, media,
 * callbacks, joins) is counted as ignored. Answers go complete: Telegram has
 * no partial messages, so a streamed answer is sent when it ends.
 *
 * Outbound calls are paced per bot (channels/telegram/outbox.ts) and retried
 * (api.ts); a full outbox refuses the call, counted and logged.
 */
import { timingSafeEqual } from 'node:crypto';
import type { ChannelHandler } from '../channel.js';
import type { Decoded } from '../../pipeline/validate.js';
import { validateMessage, type MessageSchema } from '../../pipeline/validate.js';
import type { ChatPeer, ChatPipeline, ChatState } from '../../pipeline/chat.js';
import type * as frames from '../../protocol/frames.js';
import { sessionKey, type Limits } from '../../limits/index.js';
import { nowUs } from '../../limits/buckets.js';
import type { Logger } from '../../observability/log.js';
import type { Metrics } from '../../observability/metrics.js';
import { sessionStream } from '../../streams/streams.js';
import { BotApi } from './api.js';
import { Outbox } from './outbox.js';
import type { ChatList } from './chats.js';
import { Buffer } from 'node:buffer';

export interface Bot {
  token: string;
  /** The webhook's secret token (setWebhook's secret_token). */
  secret: string;
}

export interface TelegramOptions {
  bots: ReadonlyMap<string, Bot>;
  apiUrl: string;
  chatIntervalMs: number;
  /** Calls per second per bot, this worker's share. */
  perSecond: number;
  maxQueued: number;
  /** How long an update_id is remembered (a Telegram retry comes within minutes). */
  dedupeMs: number;
}

export interface TelegramDeps {
  chat: ChatPipeline;
  limits: Limits;
  chats: ChatList;
  metrics: Metrics;
  log: Logger;
  schema: MessageSchema;
  /** Claims `key` cluster-wide: true the first time (history store); absent: this worker remembers. */
  claim?: (creatorId: string, key: string) => Promise<boolean>;
}

/** Telegram's longest message. */
export const MAX_MESSAGE = 4096;
/** A chat's pipeline state is forgotten after this long without a message (its budget slots are given back). */
const PEER_IDLE_MS = 10 * 60_000;
const MAX_PEERS = 50_000;

interface TelegramMessage {
  chat?: { id?: unknown };
  text?: unknown;
}

interface Update {
  update_id?: unknown;
  message?: TelegramMessage;
}

const CHAT_ID = /^-?\d{1,20}$/;

export class TelegramChannel implements ChannelHandler<unknown> {
  readonly type = 'telegram';
  readonly #api: BotApi;
  readonly #outboxes = new Map<string, Outbox>();
  readonly #peers = new Map<string, TelegramPeer>();
  /** update ids seen by this worker, with when (history off). */
  readonly #seen = new Map<string, number>();
  readonly #sweep: NodeJS.Timeout;

  constructor(
    private readonly o: TelegramOptions,
    private readonly d: TelegramDeps,
  ) {
    this.#api = new BotApi({ apiUrl: o.apiUrl });
    this.#sweep = setInterval(() => this.#forget(), 60_000);
    this.#sweep.unref();
  }

  /** Whether `creatorId` has a bot here. */
  has(creatorId: string): boolean {
    return this.o.bots.has(creatorId);
  }

  /**
   * A webhook call: the HTTP status to answer at once (the update is
   * processed after). 404: no bot for this creator; 401: wrong secret.
   */
  webhook(creatorId: string, secretHeader: string, body: Buffer): number {
    const bot = this.o.bots.get(creatorId);
    if (bot === undefined) return 404;
    if (!sameSecret(secretHeader, bot.secret)) {
      this.d.metrics.telegramUpdates.labels('unauthorized').inc();
      return 401;
    }
    let update: Update;
    try {
      update = JSON.parse(body.toString('utf8')) as Update;
      if (typeof update !== 'object' || update === null || !Number.isSafeInteger(update.update_id)) throw new Error('no update_id');
    } catch {
      this.d.metrics.telegramUpdates.labels('malformed').inc();
      this.d.log.warn({ creator: creatorId, bytes: body.length }, 'telegram: malformed update (answered 200, not retried)');
      return 200;
    }
    this.#update(creatorId, update).catch((err: unknown) => this.d.log.error({ creator: creatorId, err: (err as Error).message }, 'telegram: update failed'));
    return 200;
  }

  async #update(creatorId: string, update: Update): Promise<void> {
    if (!(await this.#first(creatorId, String(update.update_id)))) {
      this.d.metrics.telegramUpdates.labels('duplicate').inc();
      return;
    }
    const m = update.message;
    const chat = m?.chat?.id;
    if (m === undefined || typeof m.text !== 'string' || (typeof chat !== 'number' && typeof chat !== 'string') || !CHAT_ID.test(String(chat))) {
      this.d.metrics.telegramUpdates.labels('ignored').inc();
      return;
    }
    const chatId = String(chat);
    const text = m.text.trim();
    const command = /^\/([a-z]+)(?:@\w+)?$/i.exec(text)?.[1]?.toLowerCase();
    if (command === 'start' || command === 'subscribe') {
      this.d.metrics.telegramUpdates.labels('command').inc();
      await this.d.chats.add(creatorId, chatId);
      this.say(creatorId, chatId, 'Subscribed: this chat gets the creator\'s updates. Send /stop to unsubscribe. Ask anything to get an answer.');
      return;
    }
    if (command === 'stop' || command === 'unsubscribe') {
      this.d.metrics.telegramUpdates.labels('command').inc();
      await this.d.chats.remove(creatorId, chatId);
      this.say(creatorId, chatId, 'Unsubscribed: no more updates. Send /start to subscribe again.');
      return;
    }
    this.d.metrics.telegramUpdates.labels('message').inc();
    const decoded = this.decode({ type: 'user_message', content: m.text });
    const peer = await this.#peer(creatorId, chatId);
    if (!decoded.ok) {
      this.d.chat.refuse(peer, decoded.error);
      return;
    }
    if (decoded.msg.type !== 'user_message') return;
    const limited = this.d.limits.messages.admit(peer.slots.sessionSlot, peer.slots.creatorSlot, nowUs());
    if (limited) this.d.metrics.rateLimited.labels(limited).inc();
    this.d.chat.submit(peer, decoded.msg.content, limited);
  }

  /** Whether this is the first time `updateId` is seen for this creator. */
  async #first(creatorId: string, updateId: string): Promise<boolean> {
    if (this.d.claim) {
      try {
        return await this.d.claim(creatorId, `tg-update-${updateId}`);
      } catch {
        // The store is unreachable: fall back to this worker's memory.
      }
    }
    const key = `${creatorId}/${updateId}`;
    if (this.#seen.has(key)) return false;
    this.#seen.set(key, Date.now());
    return true;
  }

  /** The chat's pipeline peer, with its budget slots (fetched from the shared store when new). */
  async #peer(creatorId: string, chatId: string): Promise<TelegramPeer> {
    const id = `${creatorId}/${chatId}`;
    let p = this.#peers.get(id);
    if (p) {
      p.lastUsed = Date.now();
      return p;
    }
    if (this.#peers.size >= MAX_PEERS) this.#forget(true);
    const sessionId = `tg-${chatId}`;
    const key = sessionKey(creatorId, sessionId);
    await this.d.limits.prepare(creatorId, key);
    p = this.#peers.get(id); // made meanwhile
    if (p) return p;
    p = new TelegramPeer(this, creatorId, chatId, sessionId, this.d.limits.acquire(`tg/${id}`, creatorId, key));
    this.#peers.set(id, p);
    return p;
  }

  /** Drops idle peers (all idle ones when `pressed`: the map is full) and old update ids. */
  #forget(pressed = false): void {
    const now = Date.now();
    for (const [id, p] of this.#peers) {
      if ((pressed || now - p.lastUsed > PEER_IDLE_MS) && (p.chat === undefined || (!p.chat.busy && p.chat.items.length === 0))) {
        this.#peers.delete(id);
        this.d.limits.release(p.connectionId, p.creatorId, sessionKey(p.creatorId, p.sessionId));
      }
    }
    for (const [k, at] of this.#seen) if (now - at > this.o.dedupeMs) this.#seen.delete(k);
  }

  #outbox(creatorId: string): Outbox {
    let o = this.#outboxes.get(creatorId);
    if (!o) this.#outboxes.set(creatorId, (o = new Outbox({ chatIntervalMs: this.o.chatIntervalMs, perSecond: this.o.perSecond, maxQueued: this.o.maxQueued })));
    return o;
  }

  /** Queues a Bot API call for `chatId`, paced; a refusal (full outbox) or a final failure is counted and logged. */
  call(creatorId: string, chatId: string, method: string, body: Record<string, unknown>): void {
    const bot = this.o.bots.get(creatorId);
    if (!bot) return;
    const api = this.#api;
    const retried0 = api.retried;
    const throttled0 = api.throttled;
    const queued = this.#outbox(creatorId).push(chatId, async () => {
      try {
        await api.call(bot.token, method, { chat_id: chatId, ...body });
        this.d.metrics.telegramCalls.labels('ok').inc();
      } catch (err) {
        this.d.metrics.telegramCalls.labels('failed').inc();
        this.d.log.warn({ creator: creatorId, chat: chatId, method, err: (err as Error).message }, 'telegram: call failed');
      } finally {
        if (api.retried > retried0) this.d.metrics.telegramCalls.labels('retried').inc(api.retried - retried0);
        if (api.throttled > throttled0) this.d.metrics.telegramCalls.labels('throttled').inc(api.throttled - throttled0);
      }
    });
    if (!queued) {
      this.d.metrics.telegramCalls.labels('overflow').inc();
      this.d.log.warn({ creator: creatorId, chat: chatId, method, queued: this.#outbox(creatorId).queued }, 'telegram: outbox full, call refused');
    }
  }

  /** Sends `text` to a chat, in messages of at most 4096 characters. */
  say(creatorId: string, chatId: string, text: string): void {
    for (let i = 0; i < text.length; i += MAX_MESSAGE) this.call(creatorId, chatId, 'sendMessage', { text: text.slice(i, i + MAX_MESSAGE) });
    if (text.length === 0) this.call(creatorId, chatId, 'sendMessage', { text: '(empty answer)' });
  }

  /**
   * A creator broadcast: one message to every opted-in chat (the `text`
   * field if the broadcast has one, else `content` or `message`, else the
   * JSON). Resolves with how many chats it was queued for.
   */
  async broadcast(creatorId: string, frame: Record<string, unknown>): Promise<number> {
    if (!this.o.bots.has(creatorId)) return 0;
    const chats = await this.d.chats.list(creatorId);
    const text = textOf(frame);
    for (const chat of chats) this.say(creatorId, chat, text);
    return chats.length;
  }

  /** Targeted send: recipient `<creator_id>/<chat id>`. */
  async send(recipient: string, frame: Record<string, unknown>): Promise<boolean> {
    const [creatorId, chatId] = recipient.split('/');
    if (!creatorId || !chatId || !this.o.bots.has(creatorId)) return false;
    this.say(creatorId, chatId, textOf(frame));
    return true;
  }

  /** A Telegram text as a client message, under the widget's rules (MAX_MESSAGE_CHARS, not empty). */
  decode(raw: unknown): Decoded {
    return validateMessage(raw, this.d.schema);
  }

  validateRecipient(recipient: string): boolean {
    const [creatorId, chatId, extra] = recipient.split('/');
    return extra === undefined && creatorId !== undefined && chatId !== undefined && CHAT_ID.test(chatId);
  }

  /** Calls waiting in the outboxes. */
  get queued(): number {
    let n = 0;
    for (const o of this.#outboxes.values()) n += o.queued;
    return n;
  }

  async close(): Promise<void> {
    clearInterval(this.#sweep);
    let dropped = 0;
    for (const o of this.#outboxes.values()) dropped += o.close();
    if (dropped > 0) this.d.log.warn({ dropped }, 'telegram: calls still queued at shutdown were dropped');
    for (const p of this.#peers.values()) this.d.limits.release(p.connectionId, p.creatorId, sessionKey(p.creatorId, p.sessionId));
    this.#peers.clear();
    await this.#api.close();
  }
}

/** A chat as the chat pipeline sees it: typing and answers become Bot API calls. */
class TelegramPeer implements ChatPeer {
  readonly connectionId: string;
  readonly closed = false;
  readonly v2 = false;
  chat: ChatState | undefined = undefined;
  typingOffAfter: string | undefined = undefined;
  lastUsed = Date.now();

  constructor(
    private readonly channel: TelegramChannel,
    readonly creatorId: string,
    readonly chatId: string,
    readonly sessionId: string,
    readonly slots: { sessionSlot: number; creatorSlot: number },
  ) {
    this.connectionId = `tg/${creatorId}/${chatId}`;
  }

  /** Not read: a chat is not widget.v2 (no session stream of its own). */
  get sessionStream(): string {
    return sessionStream(this.creatorId, this.sessionId);
  }

  typing(isTyping: boolean): void {
    // Telegram's typing status lasts 5 s or until the next message: nothing to send for "false".
    if (isTyping) this.channel.call(this.creatorId, this.chatId, 'sendChatAction', { action: 'typing' });
  }

  answer(a: frames.Answer): void {
    this.channel.say(this.creatorId, this.chatId, a.response);
  }

  error(text: string): void {
    this.channel.say(this.creatorId, this.chatId, text);
  }

  cork(fn: () => void): void {
    fn();
  }

  fail(): void {
    // Nothing to close: the next update starts afresh.
  }
}

function sameSecret(got: string, want: string): boolean {
  const a = Buffer.from(got);
  const b = Buffer.from(want);
  // Compare equal lengths only (timingSafeEqual requires it); the length check leaks only the length.
  return a.length === b.length && timingSafeEqual(a, b);
}

function textOf(frame: Record<string, unknown>): string {
  for (const k of ['text', 'content', 'message']) if (typeof frame[k] === 'string' && frame[k] !== '') return frame[k];
  return JSON.stringify(frame);
}
