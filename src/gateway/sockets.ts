/**
 * The widget WebSocket: upgrade (authentication), open, message, close.
 *
 * Authentication happens in the upgrade handler, before any per-connection
 * state exists. A refused client is still upgraded, with a user-data object
 * that holds only the close code, and closed in `open` with 4001/4003/4400 -
 * closing before the upgrade would give the client an HTTP 403 and no close
 * code at all (the seed's defect). Every upgrade is synchronous: checks that
 * end after an await (a JWKS key, the session's budget) are waited for with
 * the socket open and its frames held (Waiting), never by upgrading later.
 *
 * uWS rules followed here: nothing is read from `req` after the handler
 * returns; nothing touches a `ws` after its close handler ran (`closed`);
 * sends after an await are corked (see pipeline/chat.ts).
 */
import { randomUUID } from 'node:crypto';
import type { WebSocket, WebSocketBehavior, us_socket_context_t } from '@trufflesuite/uws-js-unofficial';
import type { Config } from '../config/index.js';
import type { TokenVerifier, WidgetAuth } from '../auth/verifier.js';
import { isValidId } from '../auth/ids.js';
import { CLOSE, type CloseCode } from '../protocol/close-codes.js';
import * as frames from '../protocol/frames.js';
import { creatorTopic } from '../protocol/topics.js';
import { busTopic, MSGPACK_PROTOCOL, msgpackTopic, packFrame, packTyping, toMsgpack } from '../protocol/msgpack.js';
import type { ChatPeer, ChatPipeline, ChatState } from '../pipeline/chat.js';
import { OUT, OUT_KINDS, type Metrics, type OutKind } from '../observability/metrics.js';
import type { Ordered, Validator } from '../pipeline/validator.js';
import type { Decoded } from '../pipeline/validate.js';
import { sessionKey, type Limits } from '../limits/index.js';
import type { Bus } from '../bus/bus.js';
import type { Logger } from '../observability/log.js';
import type { Res } from './http.js';
import type { ConnectionSink } from '../cluster/view.js';
import type { SlowConsumerPolicy } from './backpressure.js';
import { clientIp, type TrustedProxies } from './client-ip.js';
import { parsePosition, sessionStream, type Position } from '../streams/streams.js';
import type { Hold, StreamHub, StreamReader } from '../streams/hub.js';
import { Buffer } from 'node:buffer';
import { performance } from 'node:perf_hooks';

/**
 * What uWS holds for a socket. uWS.js v20.30 copies the user-data object's
 * own properties onto the WebSocket object itself (getUserData() returns the
 * socket), so user data must not have properties named like WebSocket
 * methods, and prototype methods are lost: the per-connection state lives in
 * one `Conn` instance under `c`.
 */
export interface UserData {
  /** Set for an authenticated socket. */
  c: Conn | undefined;
  /** Set for a refused socket: closed with this code as soon as it opens. */
  reject: CloseCode | undefined;
  /** Set (only) for a socket opened before its checks ended: see Waiting. */
  wait?: Waiting;
}

/** Frames a socket may send before its checks end; one more closes it with 4008. */
export const MAX_HELD_FRAMES = 32;

/** The longest a v1 socket waits for its worker to hear its creator's broadcasts (holdAudience). */
export const AUDIENCE_WAIT_MS = 2000;

/**
 * A socket whose checks end after an await (a JWKS key to fetch, the
 * session's budget to fetch from the other workers, its worker's
 * subscription to its creator: holdAudience). It is upgraded at
 * once and waits open: uWS.js v20.30 closes a socket upgraded inside
 * `res.cork` after an await, now and then, right after `open` (its cork()
 * mistakes the new WebSocket for the HTTP response: uNetworking/uWebSockets
 * #1929, fixed in 2026), and an upgrade outside a cork prints a warning per
 * socket. So nothing is sent until the checks end (then connection_status,
 * or the close code of a refusal), and the frames the client sends
 * meanwhile are held, at most MAX_HELD_FRAMES, then handled in order.
 */
export class Waiting {
  readonly held: Array<[data: ArrayBuffer, isBinary: boolean]> = [];
  /** The socket closed (its ws must not be touched), or the checks ended. */
  done = false;
  /** Undoes what the wait holds (its creator's audience, see `holdAudience`), once, when it ends either way. */
  release: (() => void) | undefined = undefined;

  constructor(readonly result: Promise<Conn | CloseCode>) {}
}

/** What every Conn of a worker shares. */
export interface ConnEnv {
  backpressure: SlowConsumerPolicy;
  metrics: Metrics;
  log: Logger;
  /** History on: the worker's streams (widget.v2). */
  streams: StreamHub | undefined;
}

/** Error texts -> bounded metric labels ("Unknown message type: X" is unbounded: unknown_type). */
const ERROR_LABELS = new Map<string, string>(Object.entries(frames.ERRORS).map(([k, v]) => [v, k.toLowerCase()]));

const PONG_MSGPACK = packFrame({ type: 'pong' });

/** Per-connection state of an authenticated socket. */
export class Conn implements ChatPeer, Ordered, StreamReader {
  closed = false;
  /**
   * Rate-limit slots (limits/), taken at the socket's first frame and held
   * until it closes: an idle socket holds none (memory per idle connection).
   */
  slotted = false;
  frameSlot = 0;
  sessionSlot = 0;
  creatorSlot = 0;
  /** The socket chose the msgpack subprotocol: every frame it gets is MessagePack. */
  msgpack = false;
  /** The socket chose widget.v2: it reads its session and broadcast streams (streams/hub.ts). */
  v2 = false;
  typingOffAfter: string | undefined = undefined;
  /** widget.v2: the positions it asked to resume from (until it has joined its streams). */
  resume: { session?: Position; broadcast?: Position } | undefined = undefined;
  /** widget.v2: replays in `replay` frames (`replay=batch` in the query), not a frame at a time. */
  replayBatch = false;
  reading: StreamReader['reading'] = undefined;
  pending: Ordered['pending'] = undefined;
  chat: ChatState | undefined = undefined;
  ws: WebSocket<UserData> | undefined = undefined;
  #sessionStream: string | undefined = undefined;

  constructor(
    readonly creatorId: string,
    readonly sessionId: string,
    readonly connectionId: string,
    /** Shared by every socket of the worker. */
    private readonly env: ConnEnv,
    /** Client IP, as text. */
    readonly ip: string,
    /** The gateway made the session id up: nothing can have been spent on it elsewhere. */
    readonly newSession = false,
    readonly connectedAt = Date.now(),
  ) {}

  /** The session's rate-limit key: creator + session id. */
  get sessionKey(): string {
    return sessionKey(this.creatorId, this.sessionId);
  }

  /** widget.v2: the session's stream name, made at its first use and kept (a Map key on every append: hashed once, not per frame). */
  get sessionStream(): string {
    return (this.#sessionStream ??= sessionStream(this.creatorId, this.sessionId));
  }

  typing(isTyping: boolean): void {
    if (this.closed) return;
    this.send(this.msgpack ? packTyping(isTyping) : frames.typing(isTyping), OUT.typing_indicator);
  }

  /** widget.v2: appended to the session stream, even if this socket has closed meanwhile (the engine was paid for it). */
  answer(a: frames.Answer, cmid?: string): void | Promise<void> {
    if (this.v2) return this.#append(frames.aiResponse(a, cmid), OUT.ai_response, cmid, a.messageId);
    if (this.closed) return;
    this.send(this.msgpack ? packFrame(frames.aiResponseObject(a)) : frames.aiResponse(a), OUT.ai_response);
  }

  error(text: string, cmid?: string, messageId?: string): void | Promise<void> {
    this.env.metrics.errors.labels(ERROR_LABELS.get(text) ?? 'unknown_type').inc();
    if (this.v2) return this.#append(frames.error(text, cmid, messageId), OUT.error, cmid, messageId);
    if (this.closed) return;
    this.send(this.msgpack ? packFrame(frames.errorObject(text)) : frames.error(text), OUT.error);
  }

  /** widget.v2: a targeted send, as `{"type":"message","data":...}` in the session stream. */
  message(json: Uint8Array): void {
    if (!this.v2) return this.sendJson(json, OUT.message);
    void this.#append(`{"type":"message","data":${Buffer.from(json.buffer, json.byteOffset, json.byteLength).toString('utf8')}}`, OUT.message);
  }

  /**
   * Appends a frame to this socket's session stream; every widget.v2 socket
   * of the session gets it with its offset (streams/hub.ts). If the store
   * cannot take it, the frame goes to this socket alone, without an offset
   * (counted): late, never lost.
   */
  async #append(frame: string, kind: OutKind, cmid?: string, ends?: string): Promise<void> {
    const hub = this.env.streams;
    if (hub === undefined) return this.send(frame, kind);
    try {
      await hub.store.append(this.sessionStream, frame, { cmid, ends });
    } catch (err) {
      this.env.metrics.historyFailures.inc();
      this.env.log.warn({ conn: this.connectionId, err: (err as Error).message }, 'session stream append failed; sent without an offset');
      this.cork(() => this.send(frame, kind));
    }
  }

  /** A stream frame from the hub (JSON text with its offset); typing false follows the answer awaited (chat.ts). */
  sendFrame(frame: string): void {
    const after = this.typingOffAfter;
    if (after === undefined || !frame.startsWith('{"offset":') || !frame.includes(after)) return this.send(frame, OUT.stream);
    this.typingOffAfter = undefined;
    this.cork(() => {
      this.send(frame, OUT.stream);
      this.typing(false);
    });
  }

  subscribe(topic: string): void {
    if (!this.closed) this.ws?.subscribe(topic);
  }

  buffered(): number {
    return this.closed || this.ws === undefined ? 0 : this.ws.getBufferedAmount();
  }

  /** Closes the socket as a slow consumer (4009), counted. */
  tooSlow(): void {
    if (this.closed || this.ws === undefined) return;
    this.env.metrics.slowConsumerCloses.inc();
    this.ws.end(CLOSE.SLOW_CONSUMER.code, CLOSE.SLOW_CONSUMER.reason);
  }

  pong(): void {
    this.send(this.msgpack ? PONG_MSGPACK : frames.PONG, OUT.pong);
  }

  /** The first frame; widget.v2 adds the streams' positions and whether each resume succeeded. */
  status(extra?: Record<string, unknown>): void {
    if (extra === undefined && !this.msgpack) return this.send(frames.connectionStatus(this.sessionId, this.connectionId), OUT.connection_status);
    const s = frames.connectionStatusObject(this.sessionId, this.connectionId, extra);
    this.send(this.msgpack ? packFrame(s) : JSON.stringify(s), OUT.connection_status);
  }

  /** A JSON frame from elsewhere (a targeted send): as text, or transcoded for a msgpack socket. */
  sendJson(json: Uint8Array, kind: OutKind): void {
    if (this.closed) return;
    if (!this.msgpack) {
      this.send(json, kind, false);
      return;
    }
    try {
      this.send(toMsgpack(json), kind);
    } catch {
      // Not JSON: cannot happen for frames the gateway accepted.
    }
  }

  /**
   * Sends a frame in the socket's framing (text for JSON, binary for
   * msgpack), under the slow-consumer policy for direct sends
   * (gateway/backpressure.ts): droppable frames (typing indicators) are
   * skipped once half the soft limit is buffered; any other frame that would
   * pass the soft limit (unless nothing is buffered) closes the socket with
   * 4009 instead, while there is still room for the close frame, so no
   * answer is lost without the client knowing.
   */
  send(frame: string | Uint8Array, kind: OutKind, binary = typeof frame !== 'string'): void {
    const ws = this.ws;
    if (this.closed || ws === undefined) return;
    const { backpressure, metrics } = this.env;
    const buffered = ws.getBufferedAmount();
    if (kind === OUT.typing_indicator && buffered > backpressure.soft / 2) {
      metrics.dropped.labels(OUT_KINDS[kind]!).inc();
      return;
    }
    if (buffered > 0 && buffered + frame.length > backpressure.soft) return this.tooSlow();
    metrics.out[kind]++;
    ws.send(frame, binary);
  }

  cork(fn: () => void): void {
    if (!this.closed && this.ws) this.ws.cork(fn);
    else fn();
  }

  fail(): void {
    if (!this.closed) this.ws?.end(CLOSE.INTERNAL.code, CLOSE.INTERNAL.reason);
  }
}

export interface SocketDeps {
  cfg: Pick<
    Config,
    | 'maxPayloadBytes'
    | 'maxBackpressureBytes'
    | 'idleTimeoutS'
    | 'maxConnections'
    | 'maxConnectionsPerIp'
    | 'maxHeaderBytes'
    | 'allowedOrigins'
  >;
  verifier: TokenVerifier;
  chat: ChatPipeline;
  validator: Validator;
  /** Frame, connect, session and creator limits. */
  limits: Limits;
  bus: Bus;
  log: Logger;
  metrics: Metrics;
  /** Told of every authenticated socket that opens and closes (the registry, with Redis). */
  sink: ConnectionSink | undefined;
  /** False once the worker is shutting down: new sockets are refused with 1013. */
  accepting: () => boolean;
  /** The close a socket gets whose checks end once the worker has stopped serving: the others' (1001, or 1012 for a rolling restart). */
  stopClose: () => CloseCode;
  /** Where a socket is closed as a slow consumer. */
  backpressure: SlowConsumerPolicy;
  /** True near the descriptor limit (fd-guard.ts): new sockets get HTTP 503 and the connection is closed at once. */
  fdPressure: () => boolean;
  /** History on: the worker's streams; broadcasts reach this worker through them, and widget.v2 is offered. */
  streams: StreamHub | undefined;
  /** TRUSTED_PROXIES: whose PROXY header or X-Forwarded-For names the client. */
  trusted: TrustedProxies;
}

/**
 * The live sockets of this worker: by connection id (targeted sends), by
 * creator (stats, and the slow-consumer check before a publish) and, while
 * MAX_CONNECTIONS_PER_IP is on, by client IP, plus those that count against MAX_CONNECTIONS without
 * being served: sockets open but waiting for an asynchronous check
 * (Waiting), and refused sockets until their close completes.
 */
export class SocketSet {
  readonly all = new Set<WebSocket<UserData>>();
  readonly byId = new Map<string, Conn>();
  readonly byCreator = new Map<string, Set<WebSocket<UserData>>>();
  /** Open sockets by client IP; kept only while a per-IP cap (MAX_CONNECTIONS_PER_IP) reads it. */
  readonly #byIp: Map<string, number> | undefined;
  /** Sockets open but waiting for an asynchronous token or budget check (Waiting). */
  pending = 0;
  /**
   * Sockets refused with a close frame, per second, over the last
   * REFUSED_LINGER_S: uWS runs their close handler at once but keeps the
   * descriptor until the client answers the close handshake, or for about
   * 15 s when it never does (measured on v20.30), so each one is counted
   * for that long.
   */
  readonly #refusedRing = new Uint32Array(REFUSED_LINGER_S);
  #refusedSecond = 0;
  /** The ring's sum, kept as it changes: `held` reads it at every upgrade. */
  #refusedSum = 0;

  /** The clock of the refusal window, in ms (performance.now; a test's own). */
  readonly #now: () => number;

  constructor(o: { countIps?: boolean; now?: () => number } = {}) {
    this.#byIp = o.countIps === false ? undefined : new Map();
    this.#now = o.now ?? (() => performance.now());
  }

  /** A socket was refused with a close frame now. */
  noteRefused(): void {
    this.#refusedRing[this.#advance()]!++;
    this.#refusedSum++;
  }

  /** Refused sockets that may still hold a descriptor. */
  get refused(): number {
    // With none counted there is nothing to clear (noteRefused advances first).
    if (this.#refusedSum === 0) return 0;
    this.#advance();
    return this.#refusedSum;
  }

  /** Clears the seconds that left the window; returns the slot of this second. */
  #advance(): number {
    const now = Math.floor(this.#now() / 1000);
    const from = Math.max(this.#refusedSecond + 1, now - REFUSED_LINGER_S + 1);
    for (let s = from; s <= now; s++) {
      const i = s % REFUSED_LINGER_S;
      this.#refusedSum -= this.#refusedRing[i]!;
      this.#refusedRing[i] = 0;
    }
    if (now > this.#refusedSecond) this.#refusedSecond = now;
    return now % REFUSED_LINGER_S;
  }

  add(ws: WebSocket<UserData>, c: Conn): void {
    this.all.add(ws);
    this.byId.set(c.connectionId, c);
    let set = this.byCreator.get(c.creatorId);
    if (!set) this.byCreator.set(c.creatorId, (set = new Set()));
    set.add(ws);
    if (this.#byIp) bump(this.#byIp, c.ip, 1);
  }

  delete(ws: WebSocket<UserData>, c: Conn): void {
    if (!this.all.delete(ws)) return;
    this.byId.delete(c.connectionId);
    const set = this.byCreator.get(c.creatorId);
    if (set) {
      set.delete(ws);
      if (set.size === 0) this.byCreator.delete(c.creatorId);
    }
    if (this.#byIp) bump(this.#byIp, c.ip, -1);
  }

  /** Sockets that hold a descriptor and count against MAX_CONNECTIONS. */
  get held(): number {
    return this.all.size + this.pending + this.refused;
  }

  /** Open sockets of `ip` (0 when IPs are not counted). */
  ipCount(ip: string): number {
    return this.#byIp?.get(ip) ?? 0;
  }

  /** [creator id, open sockets] pairs (ids come from clients: never keys of a plain object). */
  creatorCounts(): Array<[string, number]> {
    return [...this.byCreator].map(([c, set]) => [c, set.size]);
  }
}

/** Adds `by` to a count (removed at 0); the new count. */
function bump(m: Map<string, number>, key: string, by: number): number {
  const n = (m.get(key) ?? 0) + by;
  if (n <= 0) m.delete(key);
  else m.set(key, n);
  return Math.max(0, n);
}

/**
 * What a Sec-WebSocket-Protocol header such as "widget.v1, bearer.<jwt>"
 * offers: the token (browsers cannot set headers on a WebSocket, but can
 * offer protocols; unlike the query string, they do not land in proxy and
 * access logs), the protocol to answer (`msgpack` if offered, else the
 * first other one; never the bearer entry), and whether that is msgpack.
 */
export function parseProtocols(header: string, v2Offered = true): { token: string; reply: string; msgpack: boolean; v2: boolean } {
  if (header === '') return { token: '', reply: '', msgpack: false, v2: false };
  let token = '';
  let reply = '';
  let msgpack = false;
  let v2 = false;
  for (const p of header.split(',')) {
    const v = p.trim();
    if (v.startsWith('bearer.')) token ||= v.slice(7);
    else if (v === MSGPACK_PROTOCOL) msgpack = true;
    else if (v === V2_PROTOCOL) v2 = v2Offered;
    else if (reply === '' && v !== '' && v !== V2_PROTOCOL) reply = v;
  }
  // widget.v2 wins over msgpack (v2 frames are JSON); without history the server does not offer v2.
  if (v2) return { token, reply: V2_PROTOCOL, msgpack: false, v2 };
  return { token, reply: msgpack ? MSGPACK_PROTOCOL : reply, msgpack, v2 };
}

/** The subprotocol of resumable delivery (offsets, history, resume: streams/). */
export const V2_PROTOCOL = 'widget.v2';

/**
 * uWS v20.30 closes a socket whose frame is over maxPayloadLength without a
 * close frame (1006). To give clients the documented 1009, uWS accepts frames
 * up to 4x MAX_PAYLOAD_BYTES and we close the ones over MAX_PAYLOAD_BYTES
 * ourselves; beyond 4x, uWS cuts the connection (1006) so a hostile client
 * cannot make us buffer more.
 */
export const HARD_PAYLOAD_FACTOR = 4;

/** How long a refused socket is counted (see SocketSet.refused). */
const REFUSED_LINGER_S = 16;
/** At most this many refusals linger at once (and at most a quarter of MAX_CONNECTIONS); beyond, refusals are plain HTTP. */
const REFUSED_LINGER_CAP = 256;

/** The HTTP status that says what a close code says, for a refusal without a close handshake. */
function httpStatusOf(code: CloseCode): string {
  switch (code.code) {
    case CLOSE.AUTH_REQUIRED.code:
      return '401 Unauthorized';
    case CLOSE.AUTH_INVALID.code:
      return '403 Forbidden';
    case CLOSE.TOO_MANY_CONNECTIONS.code:
    case CLOSE.CONNECT_RATE.code:
      return '429 Too Many Requests';
    case CLOSE.BAD_REQUEST.code:
      return '400 Bad Request';
    default:
      return '503 Service Unavailable';
  }
}

export function widgetBehavior(deps: SocketDeps, sockets: SocketSet): WebSocketBehavior<UserData> {
  const { cfg, verifier, chat, bus, log } = deps;

  /** What the upgrade needs from `req`, copied once (`req` is valid only in the handler). */
  interface Handshake {
    key: string;
    protocol: string;
    extensions: string;
  }

  function upgradeWith(res: Res, hs: Handshake, ctx: us_socket_context_t, data: UserData): void {
    res.upgrade(data, hs.key, hs.protocol, hs.extensions, ctx);
  }

  const env: ConnEnv = { backpressure: deps.backpressure, metrics: deps.metrics, log, streams: deps.streams };
  const hub = deps.streams;
  /** Bus topics by how many of their uWS topics (JSON, msgpack) have local subscribers, plus the waits holding them (holdAudience). */
  const busTopics = new Map<string, number>();

  /**
   * A v1 socket gets every broadcast published after its connection_status,
   * whichever worker or host the broadcast enters. That needs this worker
   * to hear the creator's broadcasts from the other nodes first: the
   * subscription of the creator's first socket here takes a Redis SUBSCRIBE
   * or an IPC round trip (with history: the follow of the creator's
   * broadcast stream and its read). Undefined when the worker already
   * hears them; else the socket waits open (Waiting) until `ready`, at most
   * AUDIENCE_WAIT_MS (the transport is down: readiness reports it; the
   * socket opens at most once-delivered, as before), holding the
   * subscription until `release`. widget.v2 sockets need none: their join
   * reads the stream after following it.
   */
  function holdAudience(creatorId: string): Hold | undefined {
    let held: Hold | undefined;
    if (hub) held = hub.holdCreator(creatorId);
    else {
      const t = busTopic(creatorTopic(creatorId));
      if (bump(busTopics, t, 1) === 1) bus.subscribe(t);
      const release = () => {
        if (bump(busTopics, t, -1) === 0) bus.unsubscribe(t);
      };
      const ready = bus.listening(t);
      if (!ready) release();
      else held = { ready, release };
    }
    if (!held) return undefined;
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<void>((resolve) => (timer = setTimeout(resolve, AUDIENCE_WAIT_MS)));
    return { ready: Promise.race([held.ready, late]).finally(() => clearTimeout(timer)), release: held.release };
  }
  const limits = deps.limits;
  const refusedCap = Math.min(REFUSED_LINGER_CAP, Math.max(8, cfg.maxConnections >> 2));

  /** Acts on a decoded frame. Called corked (in the uWS handler, or wrapped after the pool). */
  function handle(conn: Conn, d: Decoded): void {
    if (conn.closed) return;
    const m = deps.metrics.in;
    if (!d.ok) {
      m.invalid++;
      void conn.error(d.error);
    } else if (d.msg.type === 'ping') {
      m.ping++;
      conn.pong();
    } else if (d.msg.type === 'cancel') {
      // widget.v2 only: a v1 socket gets the answer it always got.
      m.invalid++;
      if (!conn.v2) void conn.error(frames.unknownTypeError('cancel'));
      else if (!chat.cancel(conn, d.msg.messageId)) void conn.error(frames.ERRORS.CANCEL_UNKNOWN);
    } else {
      m.user_message++;
      if (d.limited !== undefined) deps.metrics.rateLimited.labels(d.limited).inc();
      if (conn.v2 && d.msg.badCmid) chat.refuse(conn, frames.ERRORS.BAD_CMID);
      else chat.submit(conn, d.msg.content, d.limited, d.msg.cmid);
    }
  }
  let inHandler = false;

  /** An unexpected fault while handling one socket's frame closes that socket (1011), never the process. */
  function internalError(conn: Conn, err: unknown): void {
    log.error({ conn: conn.connectionId, err: err instanceof Error ? { message: err.message, stack: err.stack } : String(err) }, 'socket handler failed');
    if (!conn.closed) conn.ws?.end(CLOSE.INTERNAL.code, CLOSE.INTERNAL.reason);
  }

  function safeHandle(conn: Conn, d: Decoded): void {
    try {
      handle(conn, d);
    } catch (err) {
      internalError(conn, err);
    }
  }

  /**
   * A widget.v2 socket joins its session and broadcast streams (replaying
   * what it asked to resume), then gets connection_status with both
   * positions, then the replay, then live frames. A store that cannot be
   * reached closes it with 1013 (try again later).
   */
  function openV2(conn: Conn): void {
    const resume = conn.resume ?? {};
    conn.resume = undefined;
    hub!.join(conn, resume).then(
      (j) => {
        if (conn.closed) return;
        const pos = (x: { res: { epoch: string; top: number } }) => ({ epoch: x.res.epoch, offset: x.res.top });
        const recovered: Record<string, boolean> = {};
        if (resume.session) recovered.session = !j.session.res.lost;
        if (resume.broadcast) recovered.broadcast = !j.broadcast.res.lost;
        conn.cork(() => {
          conn.status({ streams: { session: pos(j.session), broadcast: pos(j.broadcast) }, ...(resume.session || resume.broadcast ? { recovered } : {}) });
          hub!.start(conn, j);
        });
      },
      (err: Error) => {
        log.warn({ conn: conn.connectionId, err: err.message }, 'widget.v2 socket could not join its streams');
        if (!conn.closed) conn.ws?.end(CLOSE.OVERLOADED.code, CLOSE.OVERLOADED.reason);
      },
    );
  }

  /** A socket whose checks passed: registered, subscribed, told its status. */
  function openConn(ws: WebSocket<UserData>, conn: Conn): void {
    conn.ws = ws;
    sockets.add(ws, conn);
    deps.sink?.add(conn);
    log.debug({ conn: conn.connectionId, creator: conn.creatorId, session: conn.sessionId, v2: conn.v2 }, 'socket open');
    // With history, broadcasts reach this worker through the creator's stream.
    if (hub && sockets.byCreator.get(conn.creatorId)?.size === 1) hub.followCreator(conn.creatorId);
    if (!conn.v2) {
      // A msgpack socket listens on the msgpack twin of its creator's topic (fanout.ts).
      ws.subscribe(conn.msgpack ? msgpackTopic(creatorTopic(conn.creatorId)) : creatorTopic(conn.creatorId));
      conn.status();
      return;
    }
    openV2(conn);
  }

  /** A frame of an open socket: size and frame-rate checks, then validation (inline or in the pool) and `handle`. */
  function receive(ws: WebSocket<UserData>, conn: Conn, data: ArrayBuffer, isBinary: boolean): void {
    if (data.byteLength > cfg.maxPayloadBytes) {
      ws.end(CLOSE.TOO_BIG.code, CLOSE.TOO_BIG.reason);
      return;
    }
    if (!conn.slotted) {
      conn.slotted = true;
      ({ frameSlot: conn.frameSlot, sessionSlot: conn.sessionSlot, creatorSlot: conn.creatorSlot } = limits.acquire(conn.connectionId, conn.creatorId, conn.sessionKey, conn.newSession));
    }
    if (!limits.takeFrame(conn.frameSlot)) {
      deps.metrics.rateLimited.labels('frames').inc();
      ws.end(CLOSE.FRAME_RATE.code, CLOSE.FRAME_RATE.reason);
      return;
    }
    inHandler = true;
    try {
      deps.validator.submit(conn, data, isBinary, (d) => (inHandler ? safeHandle(conn, d) : conn.cork(() => safeHandle(conn, d))));
    } catch (err) {
      internalError(conn, err);
    } finally {
      inHandler = false;
    }
  }

  /**
   * Refuses an upgrade. Normally with a WebSocket close code (the client
   * reads why); but past REFUSED_LINGER_CAP refusals still lingering (a
   * flood of bad tokens from clients that never finish the close handshake)
   * with a plain HTTP status and the connection closed at once, so refused
   * sockets cannot hold the worker's descriptors.
   */
  function reject(res: Res, hs: Handshake, ctx: us_socket_context_t, code: CloseCode): void {
    if (sockets.refused >= refusedCap) {
      deps.metrics.refused.labels(String(code.code)).inc();
      deps.metrics.refusedAsHttp.inc();
      res.writeStatus(httpStatusOf(code)).end('', true);
      return;
    }
    noteRefusal(code);
    upgradeWith(res, hs, ctx, { c: undefined, reject: code });
  }

  /** A refusal with a close frame: counted, and its socket counted as lingering (SocketSet.refused). */
  function noteRefusal(code: CloseCode): void {
    deps.metrics.refused.labels(String(code.code)).inc();
    sockets.noteRefused();
  }

  return {
    maxPayloadLength: cfg.maxPayloadBytes * HARD_PAYLOAD_FACTOR,
    idleTimeout: cfg.idleTimeoutS,
    sendPingsAutomatically: true,
    // The hard limit, where uWS would skip a frame (and the close frame too).
    // The gateway closes a socket with 4009 at the soft limit below it, so
    // the client always reads the close code (gateway/backpressure.ts).
    maxBackpressure: deps.backpressure.hard,
    closeOnBackpressureLimit: 0,

    upgrade(res, req, ctx) {
      const r = res as Res;
      const offered = req.getHeader('sec-websocket-protocol');
      const key = req.getHeader('sec-websocket-key');
      const extensions = req.getHeader('sec-websocket-extensions');
      const origin = req.getHeader('origin');
      // The headers read here, not every header: uWS parses the others in
      // its own buffer, and they never become strings (a req.forEach made
      // two strings and a call into JS per header: 6% of a connect's work).
      if (offered.length + key.length + extensions.length + origin.length > cfg.maxHeaderBytes) {
        r.writeStatus('431 Request Header Fields Too Large').end('', true);
        return;
      }
      const fromProtocol = parseProtocols(offered, hub !== undefined);
      // Never echo the bearer entry back: answer with the first other protocol offered.
      const hs: Handshake = { key, protocol: fromProtocol.reply, extensions };
      if (deps.fdPressure()) {
        // Near the descriptor limit, a close handshake is a luxury: a hostile
        // client never completes it. Answer and free the descriptor now.
        deps.metrics.refused.labels('fd_limit').inc();
        deps.metrics.refusedAsHttp.inc();
        r.writeStatus('503 Service Unavailable').writeHeader('retry-after', '1').end('', true);
        return;
      }
      if (!deps.accepting() || sockets.held >= cfg.maxConnections) {
        return reject(r, hs, ctx, CLOSE.OVERLOADED);
      }
      const ip = clientIp(r, req, deps.trusted);
      if (cfg.maxConnectionsPerIp > 0 && sockets.ipCount(ip) >= cfg.maxConnectionsPerIp) {
        return reject(r, hs, ctx, CLOSE.TOO_MANY_CONNECTIONS);
      }
      if (!limits.takeConnect(ip)) {
        deps.metrics.rateLimited.labels('connect').inc();
        return reject(r, hs, ctx, CLOSE.CONNECT_RATE);
      }
      const creatorId = req.getParameter(0) ?? '';
      const token = req.getQuery('token') || fromProtocol.token;
      if (token === '') return reject(r, hs, ctx, CLOSE.AUTH_REQUIRED);
      if (!isValidId(creatorId)) return reject(r, hs, ctx, CLOSE.AUTH_INVALID);
      if (cfg.allowedOrigins && origin !== '' && !cfg.allowedOrigins.includes(origin)) {
        log.info({ creator: creatorId, origin }, 'origin not allowed');
        return reject(r, hs, ctx, CLOSE.AUTH_INVALID);
      }
      const given = req.getQuery('session_id') ?? '';
      // widget.v2: where to resume each stream from (EPOCH:OFFSET, not secret).
      let resume: Conn['resume'];
      let replayBatch = false;
      if (fromProtocol.v2) {
        const rs = req.getQuery('resume_session') ?? '';
        const rb = req.getQuery('resume_broadcast') ?? '';
        const session = rs === '' ? undefined : parsePosition(rs);
        const broadcast = rb === '' ? undefined : parsePosition(rb);
        if ((rs !== '' && !session) || (rb !== '' && !broadcast)) return reject(r, hs, ctx, CLOSE.BAD_RESUME);
        resume = { ...(session ? { session } : {}), ...(broadcast ? { broadcast } : {}) };
        const mode = req.getQuery('replay') ?? '';
        if (mode !== '' && mode !== 'frames' && mode !== 'batch') return reject(r, hs, ctx, CLOSE.BAD_REPLAY);
        replayBatch = mode === 'batch';
      }

      /** The socket's Conn, or why it is refused. */
      const check = (auth: WidgetAuth | undefined): Conn | CloseCode => {
        if (!auth?.ok) {
          log.info({ creator: creatorId, reason: auth?.reason ?? 'verification failed' }, 'widget token refused');
          // widget.v2 tells an expired token apart (4001): a client fetches a new one. v1 keeps the seed's 4003.
          return fromProtocol.v2 && auth?.expired ? CLOSE.TOKEN_EXPIRED : CLOSE.AUTH_INVALID;
        }
        if (given !== '' && !isValidId(given)) return CLOSE.BAD_REQUEST;
        const conn = new Conn(creatorId, given || randomUUID(), randomUUID(), env, ip, given === '');
        conn.msgpack = fromProtocol.msgpack;
        conn.v2 = fromProtocol.v2;
        conn.resume = resume;
        conn.replayBatch = replayBatch;
        return conn;
      };
      /** Fetches the session's budget if this worker does not have it yet (Limits.prepare). */
      const budgetOf = (conn: Conn) => limits.prepare(creatorId, conn.newSession ? undefined : conn.sessionKey);
      /** Opens a socket whose checks end later (see Waiting); it counts against MAX_CONNECTIONS meanwhile. */
      const waitOpen = (result: Promise<Conn | CloseCode>): Waiting => {
        sockets.pending++;
        const wait = new Waiting(result);
        upgradeWith(r, hs, ctx, { c: undefined, reject: undefined, wait });
        return wait;
      };
      /** What a socket that passed its token still waits for (its session's budget; v1: its creator's audience), and what the wait holds. */
      const later = (c: Conn): { more: Promise<unknown> | undefined; release: (() => void) | undefined } => {
        const budget = budgetOf(c);
        const audience = c.v2 ? undefined : holdAudience(creatorId);
        if (!audience) return { more: budget, release: undefined };
        return { more: budget ? Promise.all([budget, audience.ready]) : audience.ready, release: audience.release };
      };

      const auth = verifier.verifyWidget(token, creatorId, origin);
      if (auth instanceof Promise) {
        const wait: Waiting = waitOpen(
          auth.then(
            (a) => {
              const c = check(a);
              if (!(c instanceof Conn)) return c;
              const { more, release } = later(c);
              if (wait.done) release?.(); // closed meanwhile
              else wait.release = release;
              return more ? more.then(() => c) : c;
            },
            () => check(undefined),
          ),
        );
        return;
      }
      const c = check(auth);
      if (!(c instanceof Conn)) return reject(r, hs, ctx, c);
      const { more, release } = later(c);
      if (more === undefined) upgradeWith(r, hs, ctx, { c, reject: undefined });
      else waitOpen(more.then(() => c)).release = release;
    },

    open(ws) {
      const { c: conn, reject, wait } = ws.getUserData();
      if (conn !== undefined) openConn(ws, conn);
      else if (reject) ws.end(reject.code, reject.reason);
      else if (wait) {
        const settle = (result: Conn | CloseCode) => {
          if (wait.done) return; // closed meanwhile
          wait.done = true;
          sockets.pending--;
          ws.cork(() => {
            if (!(result instanceof Conn)) {
              noteRefusal(result);
              ws.end(result.code, result.reason);
            } else if (!deps.accepting()) {
              // Accepted before the worker began to stop: closed as its other sockets are.
              const stop = deps.stopClose();
              ws.end(stop.code, stop.reason);
            } else {
              ws.getUserData().c = result;
              openConn(ws, result);
              for (const [data, isBinary] of wait.held.splice(0)) receive(ws, result, data, isBinary);
            }
          });
          // After openConn: the socket's own subscription now keeps what the wait held.
          wait.release?.();
        };
        wait.result.then(settle, () => settle(CLOSE.INTERNAL));
      }
    },

    message(ws, data, isBinary) {
      const { c: conn, wait } = ws.getUserData();
      if (conn !== undefined) {
        if (!conn.closed) receive(ws, conn, data, isBinary);
      } else if (wait && !wait.done) {
        // Before the checks end: held (copied: uWS reuses `data` after this call).
        if (data.byteLength > cfg.maxPayloadBytes) return ws.end(CLOSE.TOO_BIG.code, CLOSE.TOO_BIG.reason);
        if (wait.held.length >= MAX_HELD_FRAMES) return ws.end(CLOSE.FRAME_RATE.code, CLOSE.FRAME_RATE.reason);
        wait.held.push([data.slice(0), isBinary]);
      }
    },

    drain(ws) {
      // A slow widget.v2 reader caught up: send what it lacks of the answers streaming to it.
      const conn = ws.getUserData().c;
      if (conn?.v2 && hub) hub.drain(conn);
    },

    subscription(_ws, topic, newCount, oldCount) {
      // With history, broadcasts travel as stream frames (streams/hub.ts), not on the bus.
      if (hub) return;
      // The bus listens to a topic while at least one local socket does, in
      // either framing (a topic and its msgpack twin share one bus topic).
      if (oldCount === 0 && newCount > 0) {
        const t = busTopic(Buffer.from(topic).toString());
        if (bump(busTopics, t, 1) === 1) bus.subscribe(t);
      } else if (newCount === 0 && oldCount > 0) {
        const t = busTopic(Buffer.from(topic).toString());
        if (bump(busTopics, t, -1) === 0) bus.unsubscribe(t);
      }
    },

    close(ws, code) {
      deps.metrics.closes.labels(String(code)).inc();
      const { c: conn, wait } = ws.getUserData();
      if (conn === undefined) {
        // Closed while its checks ran: they end unheard.
        if (wait && !wait.done) {
          wait.done = true;
          wait.held.length = 0;
          sockets.pending--;
          wait.release?.();
        }
        return;
      }
      conn.closed = true;
      conn.ws = undefined;
      if (hub) {
        hub.leave(conn);
        if (sockets.byCreator.get(conn.creatorId)?.size === 1) hub.unfollowCreator(conn.creatorId);
      }
      if (conn.slotted) limits.release(conn.connectionId, conn.creatorId, conn.sessionKey);
      sockets.delete(ws, conn);
      deps.sink?.remove(conn);
      log.debug({ conn: conn.connectionId, code }, 'socket closed');
    },
  };
}
