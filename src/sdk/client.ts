/**
 * The browser SDK of the chat widget: one WebSocket to the gateway that
 * stays connected, resumes without losing or doubling a frame, and tells the
 * page what happens. No framework, no runtime dependency; built by esbuild
 * into an ES module and a single script that defines `ChannelWidget`
 * (make build: dist/sdk/).
 *
 *   const chat = ChannelWidget.createWidgetClient({ url: 'wss://chat.example.com',
 *     creatorId: 'shop', getToken: () => fetch('/chat-token').then((r) => r.text()) });
 *   chat.on('answer', (a) => ...); chat.send('Hello');
 *
 * - The token travels in Sec-WebSocket-Protocol (`bearer.<jwt>`), never in
 *   the URL; a 4001 close ("Token expired") calls getToken() once more.
 * - widget.v2: both streams' last offsets are kept and sent back on
 *   reconnect; a frame already seen is dropped; `continuity_lost` is an event.
 * - Reconnects follow the close-code table (sdk/policy.ts) with full-jitter
 *   back-off; they pause while the browser is offline and start at once when
 *   it is back.
 * - An app-level heartbeat (`ping` every `heartbeatMs`): no frame within
 *   `pongTimeoutMs` means the link is dead (browsers cannot see protocol
 *   pings): close, reconnect.
 * - Messages sent while offline wait in a bounded queue with a
 *   `client_message_id`; they, and those unanswered when a link dropped,
 *   are sent after reconnecting, and answered once (the gateway drops a
 *   retried id).
 */
import { backoff, policyOf } from './policy.js';

/** What the SDK needs of a WebSocket (the browser's, or the `ws` package's in Node). */
export interface WsLike {
  readonly readyState: number;
  readonly protocol: string;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onmessage: ((e: { data: unknown }) => void) | null;
  onclose: ((e: { code: number; reason: string }) => void) | null;
  onerror: ((e: unknown) => void) | null;
}
export type WsCtor = new (url: string, protocols: string[]) => WsLike;

/** The browser globals the SDK uses, when there are any (none in Node). */
const web = globalThis as unknown as {
  WebSocket?: WsCtor;
  navigator?: { onLine?: boolean };
  addEventListener?: (event: string, fn: () => void) => void;
};

export interface WidgetClientOptions {
  /** The gateway's base URL: `wss://chat.example.com` (a path prefix is kept). */
  url: string;
  creatorId: string;
  /** A token, or a function that fetches one (called again after 4001). */
  token?: string;
  getToken?: () => string | Promise<string>;
  /** A session id to keep across page loads; by default the server's. */
  sessionId?: string;
  heartbeatMs?: number;
  pongTimeoutMs?: number;
  /** A connection attempt that is not open (connection_status) within this is given up and retried. */
  connectTimeoutMs?: number;
  /** Back-off base and cap. */
  baseDelayMs?: number;
  maxDelayMs?: number;
  /** Reconnects after a restart (1001, 1012) are spread over this long. */
  soonMs?: number;
  /** Messages waiting while offline (and unanswered), at most. */
  queueLimit?: number;
  /** The WebSocket class (Node: the `ws` package). */
  WebSocket?: WsCtor;
  /** Randomness for the back-off (tests). */
  random?: () => number;
}

export type Status = 'connecting' | 'open' | 'reconnecting' | 'closed';

export interface Position {
  epoch: string;
  offset: number;
}

/** Events and what they carry. */
export interface WidgetEvents {
  status: { status: Status; code?: number; reason?: string; delayMs?: number };
  answer: Record<string, unknown>;
  chunk: { messageId: string; index: number; delta: string; text: string };
  typing: boolean;
  broadcast: unknown;
  message: unknown;
  error: Record<string, unknown>;
  continuity_lost: { stream: 'session' | 'broadcast'; epoch: string; offset: number };
}

type Listener<K extends keyof WidgetEvents> = (e: WidgetEvents[K]) => void;
type Frame = Record<string, unknown> & { type?: string; offset?: number };

const id = (): string =>
  typeof crypto !== 'undefined' && crypto.randomUUID ? crypto.randomUUID() : `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;

export class WidgetClient {
  status: Status = 'connecting';
  sessionId: string | undefined;
  /** The last offset processed per stream (widget.v2). */
  readonly positions: { session?: Position; broadcast?: Position } = {};
  /** The subprotocol the server chose. */
  protocol = '';
  readonly #o: Required<Omit<WidgetClientOptions, 'token' | 'getToken' | 'sessionId' | 'WebSocket'>> & WidgetClientOptions;
  readonly #on = new Map<string, Set<(e: unknown) => void>>();
  #ws: WsLike | undefined;
  #token: string | undefined;
  #attempt = 0;
  #refreshed = false;
  #stopped = false;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #beat: ReturnType<typeof setInterval> | undefined;
  #pong: ReturnType<typeof setTimeout> | undefined;
  #waitingOnline = false;
  /** Not sent yet, and sent but unanswered: client_message_id -> content. */
  readonly #queue = new Map<string, string>();
  readonly #pending = new Map<string, string>();
  readonly #partial = new Map<string, string>();

  constructor(o: WidgetClientOptions) {
    this.#o = { heartbeatMs: 25_000, pongTimeoutMs: 10_000, connectTimeoutMs: 10_000, baseDelayMs: 500, maxDelayMs: 30_000, soonMs: 1000, queueLimit: 50, random: Math.random, ...o };
    this.#token = o.token;
    this.sessionId = o.sessionId;
    web.addEventListener?.('online', () => {
      if (this.#waitingOnline) this.#connectSoon(0);
    });
    // Next microtask: the page attaches its listeners first, and sees 'connecting'.
    queueMicrotask(() => void this.#connect());
  }

  on<K extends keyof WidgetEvents>(event: K, fn: Listener<K>): () => void {
    let set = this.#on.get(event);
    if (!set) this.#on.set(event, (set = new Set()));
    set.add(fn as (e: unknown) => void);
    return () => set.delete(fn as (e: unknown) => void);
  }

  #emit<K extends keyof WidgetEvents>(event: K, e: WidgetEvents[K]): void {
    for (const fn of this.#on.get(event) ?? []) fn(e);
  }

  #setStatus(status: Status, extra: Omit<WidgetEvents['status'], 'status'> = {}): void {
    this.status = status;
    this.#emit('status', { status, ...extra });
  }

  /** Sends a user message (now, or once reconnected); its client_message_id. Throws when the queue is full. */
  send(content: string): string {
    if (this.#queue.size + this.#pending.size >= this.#o.queueLimit) throw new Error('widget: too many messages waiting');
    const cmid = id();
    if (this.status === 'open') this.#sendMessage(cmid, content);
    else this.#queue.set(cmid, content);
    return cmid;
  }

  /** Stops a streamed answer (widget.v2). */
  cancel(messageId: string): void {
    this.#raw({ type: 'cancel', message_id: messageId });
  }

  close(): void {
    this.#stopped = true;
    this.#clear();
    this.#ws?.close(1000);
    this.#setStatus('closed', { code: 1000, reason: 'closed by the page' });
  }

  #raw(o: unknown): boolean {
    if (this.#ws?.readyState !== 1) return false;
    this.#ws.send(JSON.stringify(o));
    return true;
  }

  #sendMessage(cmid: string, content: string): void {
    this.#pending.set(cmid, content);
    this.#raw({ type: 'user_message', content, client_message_id: cmid });
  }

  async #connect(): Promise<void> {
    if (this.#stopped) return;
    if (this.#ws === undefined) this.#setStatus('connecting');
    try {
      if (this.#token === undefined) this.#token = await this.#o.getToken?.();
    } catch {
      return this.#connectSoon(backoff(this.#attempt++ + 2, this.#o.baseDelayMs, this.#o.maxDelayMs, this.#o.random), undefined, 'getToken failed');
    }
    if (this.#token === undefined) return this.#stop(4001, 'no token');
    const q: string[] = [];
    const add = (k: string, v: string | undefined) => v !== undefined && q.push(`${k}=${encodeURIComponent(v)}`);
    add('session_id', this.sessionId);
    for (const k of ['session', 'broadcast'] as const) {
      const p = this.positions[k];
      if (p) add(`resume_${k}`, `${p.epoch}:${p.offset}`);
    }
    if (this.positions.session || this.positions.broadcast) add('replay', 'batch'); // a resume's frames in a few `replay` frames
    const Ws = this.#o.WebSocket ?? web.WebSocket;
    if (!Ws) return this.#stop(1006, 'no WebSocket in this environment');
    const ws = new Ws(`${this.#o.url.replace(/\/$/, '')}/api/v1/channels/widget/${encodeURIComponent(this.#o.creatorId)}/connect${q.length ? `?${q.join('&')}` : ''}`, [
      'widget.v2',
      'widget.v1',
      `bearer.${this.#token}`,
    ]);
    this.#ws = ws;
    ws.onmessage = (m) => {
      if (ws !== this.#ws) return;
      try {
        this.#frame(JSON.parse(String(m.data)) as Frame);
      } catch {
        /* not JSON: not ours */
      }
    };
    ws.onclose = (e) => {
      if (ws === this.#ws) this.#closed(e.code, e.reason);
    };
    ws.onerror = () => {}; // a close follows; the `ws` package would throw without a listener
    // A handshake that hangs (a dead link) is given up like a dead heartbeat.
    this.#pong = setTimeout(() => this.#dead(ws, 'connect timed out'), this.#o.connectTimeoutMs);
  }

  /** The link is dead, whatever the socket says: drop it and reconnect. */
  #dead(ws: WsLike | undefined, reason: string): void {
    if (ws !== this.#ws) return;
    this.#ws = undefined;
    ws?.close(4000);
    this.#closed(1006, reason);
  }

  #frame(f: Frame): void {
    clearTimeout(this.#pong);
    this.#pong = undefined;
    const t = f.type;
    if (t === 'connection_status') return this.#opened(f);
    if (t === 'replay') {
      for (const g of f.frames as Frame[]) this.#frame(g);
      return;
    }
    if (t === 'continuity_lost') {
      const c = f as unknown as WidgetEvents['continuity_lost'];
      this.positions[c.stream] = { epoch: c.epoch, offset: c.offset };
      return this.#emit('continuity_lost', c);
    }
    if (typeof f.offset === 'number') {
      const p = this.positions[t === 'broadcast' ? 'broadcast' : 'session'];
      if (p) {
        if (f.offset <= p.offset) return; // already seen (a resume's replay, a duplicate)
        p.offset = f.offset;
      }
    }
    switch (t) {
      case 'pong':
        return;
      case 'typing_indicator':
        return this.#emit('typing', f.is_typing === true);
      case 'ai_response_chunk': {
        const m = f.message_id as string;
        const index = f.index as number;
        const have = this.#partial.get(m) ?? '';
        if (index > have.length) return; // a gap cannot happen: the server sends the text so far after a reconnect
        const text = have.slice(0, index) + (f.delta as string);
        this.#partial.set(m, text);
        return this.#emit('chunk', { messageId: m, index, delta: f.delta as string, text });
      }
      case 'ai_response':
      case 'error':
        this.#partial.delete(f.message_id as string);
        this.#pending.delete(f.client_message_id as string);
        return this.#emit(t === 'error' ? 'error' : 'answer', f);
      case 'message':
        return this.#emit('message', f.data);
      case 'broadcast':
        return this.#emit('broadcast', this.protocol === 'widget.v2' ? f.data : f);
      default:
        // widget.v1: broadcasts and targeted sends arrive as POSTed.
        return this.#emit('broadcast', f);
    }
  }

  #opened(f: Frame): void {
    const d = f.details as { session_id: string; streams?: Record<'session' | 'broadcast', Position> };
    this.protocol = this.#ws?.protocol ?? '';
    this.sessionId = d.session_id;
    // A fresh start reads from where the streams are now; a resume keeps its
    // positions (the replay moves them on, continuity_lost resets them).
    for (const k of ['session', 'broadcast'] as const) if (d.streams && !this.positions[k]) this.positions[k] = { ...d.streams[k] };
    this.#attempt = 0;
    this.#refreshed = false;
    this.#setStatus('open');
    this.#beat = setInterval(() => this.#heartbeat(), this.#o.heartbeatMs);
    // Unanswered messages again (the gateway answers a retried id once), then the queue.
    for (const [cmid, content] of [...this.#pending, ...this.#queue]) this.#sendMessage(cmid, content);
    this.#queue.clear();
  }

  #heartbeat(): void {
    if (!this.#raw({ type: 'ping' }) || this.#pong) return;
    const ws = this.#ws;
    this.#pong = setTimeout(() => this.#dead(ws, 'heartbeat timed out'), this.#o.pongTimeoutMs);
  }

  #clear(): void {
    clearInterval(this.#beat);
    clearTimeout(this.#pong);
    clearTimeout(this.#timer);
    this.#pong = undefined;
  }

  #closed(code: number, reason: string): void {
    this.#clear();
    if (this.#stopped) return;
    const p = policyOf(code);
    if (p === 'x' || p === 'n') return this.#stop(code, reason);
    if (p === 't') {
      if (this.#refreshed || !this.#o.getToken) return this.#stop(code, reason);
      this.#refreshed = true;
      this.#token = undefined; // fetched again by #connect
      return this.#connectSoon(0, code, reason);
    }
    // 's': soon, spread; 'b': back off from a longer window; both grow if it keeps failing.
    const a = this.#attempt++;
    const delay = p === 's' && a === 0 ? Math.floor(this.#o.random() * this.#o.soonMs) : backoff(p === 'b' ? a + 2 : a, this.#o.baseDelayMs, this.#o.maxDelayMs, this.#o.random);
    this.#connectSoon(delay, code, reason);
  }

  #connectSoon(delayMs: number, code?: number, reason?: string): void {
    clearTimeout(this.#timer);
    this.#setStatus('reconnecting', { ...(code !== undefined ? { code } : {}), ...(reason ? { reason } : {}), delayMs });
    if (web.navigator?.onLine === false) {
      this.#waitingOnline = true;
      return;
    }
    this.#waitingOnline = false;
    this.#timer = setTimeout(() => void this.#connect(), delayMs);
  }

  #stop(code: number, reason: string): void {
    this.#stopped = true;
    this.#setStatus('closed', { code, reason });
  }
}

export function createWidgetClient(o: WidgetClientOptions): WidgetClient {
  return new WidgetClient(o);
}
