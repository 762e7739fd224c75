/**
 * The widget WebSocket: upgrade (authentication), open, message, close.
 *
 * Authentication happens in the upgrade handler, synchronously, before any
 * per-connection state exists. A refused client is still upgraded, with a
 * user-data object that holds only the close code, and closed in `open` with
 * 4001/4003/4400 - closing before the upgrade would give the client an HTTP
 * 403 and no close code at all (the seed's defect).
 *
 * uWS rules followed here: nothing is read from `req` after the handler
 * returns; nothing touches a `ws` after its close handler ran (`closed`);
 * sends after an await are corked (see pipeline/chat.ts).
 */
import { randomUUID } from 'node:crypto';
import type { WebSocket, WebSocketBehavior, HttpRequest, us_socket_context_t } from '@trufflesuite/uws-js-unofficial';
import type { Config } from '../config/index.js';
import type { TokenVerifier } from '../auth/verifier.js';
import { isValidId } from '../auth/ids.js';
import { CLOSE, type CloseCode } from '../protocol/close-codes.js';
import * as frames from '../protocol/frames.js';
import { connectionTopic, creatorTopic } from '../protocol/topics.js';
import type { ChatPeer, ChatPipeline, ChatState } from '../pipeline/chat.js';
import type { ChannelHandler } from '../channels/channel.js';
import type { Bus } from '../bus/bus.js';
import type { Logger } from '../observability/log.js';
import type { Res } from './http.js';
import type { ConnectionSink } from '../registry/registry.js';

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
}

/** Per-connection state of an authenticated socket. */
export class Conn implements ChatPeer {
  closed = false;
  chat: ChatState | undefined = undefined;
  ws: WebSocket<UserData> | undefined = undefined;

  constructor(
    readonly creatorId: string,
    readonly sessionId: string,
    readonly connectionId: string,
    private readonly maxBackpressure: number,
    readonly connectedAt = Date.now(),
  ) {}

  /**
   * The slow-consumer policy for direct sends: droppable frames (typing
   * indicators) are skipped once half of MAX_BACKPRESSURE_BYTES is buffered;
   * any other frame that would pass the limit closes the socket with 4009
   * so that no answer is ever lost without the client knowing.
   */
  send(frame: string, droppable: boolean): void {
    const ws = this.ws;
    if (this.closed || ws === undefined) return;
    const buffered = ws.getBufferedAmount();
    if (droppable && buffered > this.maxBackpressure / 2) return;
    if (buffered + frame.length > this.maxBackpressure) {
      ws.end(CLOSE.SLOW_CONSUMER.code, CLOSE.SLOW_CONSUMER.reason);
      return;
    }
    ws.send(frame, false);
  }

  cork(fn: () => void): void {
    if (!this.closed && this.ws) this.ws.cork(fn);
  }
}

export interface SocketDeps {
  cfg: Pick<Config, 'maxPayloadBytes' | 'maxBackpressureBytes' | 'idleTimeoutS'>;
  verifier: TokenVerifier;
  channel: ChannelHandler<ArrayBuffer>;
  chat: ChatPipeline;
  bus: Bus;
  log: Logger;
  /** Told of every authenticated socket that opens and closes (the registry, with Redis). */
  sink: ConnectionSink | undefined;
  /** False once the worker is shutting down: new sockets are refused with 1013. */
  accepting: () => boolean;
}

/** The live sockets of this worker, by creator, for stats and shutdown. */
export class SocketSet {
  readonly all = new Set<WebSocket<UserData>>();
  readonly byCreator = new Map<string, number>();

  add(ws: WebSocket<UserData>, creatorId: string): void {
    this.all.add(ws);
    this.byCreator.set(creatorId, (this.byCreator.get(creatorId) ?? 0) + 1);
  }

  delete(ws: WebSocket<UserData>, creatorId: string): void {
    if (!this.all.delete(ws)) return;
    const n = (this.byCreator.get(creatorId) ?? 1) - 1;
    if (n <= 0) this.byCreator.delete(creatorId);
    else this.byCreator.set(creatorId, n);
  }
}

/**
 * uWS v20.30 closes a socket whose frame is over maxPayloadLength without a
 * close frame (1006). To give clients the documented 1009, uWS accepts frames
 * up to 4x MAX_PAYLOAD_BYTES and we close the ones over MAX_PAYLOAD_BYTES
 * ourselves; beyond 4x, uWS cuts the connection (1006) so a hostile client
 * cannot make us buffer more.
 */
export const HARD_PAYLOAD_FACTOR = 4;

export function widgetBehavior(deps: SocketDeps, sockets: SocketSet): WebSocketBehavior<UserData> {
  const { cfg, verifier, channel, chat, bus, log } = deps;

  function reject(res: Res, req: HttpRequest, ctx: us_socket_context_t, code: CloseCode): void {
    const data: UserData = { c: undefined, reject: code };
    res.upgrade(
      data,
      req.getHeader('sec-websocket-key'),
      req.getHeader('sec-websocket-protocol'),
      req.getHeader('sec-websocket-extensions'),
      ctx,
    );
  }

  return {
    maxPayloadLength: cfg.maxPayloadBytes * HARD_PAYLOAD_FACTOR,
    idleTimeout: cfg.idleTimeoutS,
    sendPingsAutomatically: true,
    maxBackpressure: cfg.maxBackpressureBytes,
    // Slow consumers: a socket over MAX_BACKPRESSURE_BYTES is closed rather
    // than silently skipped, so no frame is ever lost without the client
    // knowing. Direct sends check first and close with 4009 (see send()).
    closeOnBackpressureLimit: 1,

    upgrade(res, req, ctx) {
      const r = res as Res;
      if (!deps.accepting()) return reject(r, req, ctx, CLOSE.OVERLOADED);
      const creatorId = req.getParameter(0) ?? '';
      const token = req.getQuery('token') ?? '';
      if (token === '') return reject(r, req, ctx, CLOSE.AUTH_REQUIRED);
      if (!isValidId(creatorId)) return reject(r, req, ctx, CLOSE.AUTH_INVALID);
      const auth = verifier.verifyWidget(token, creatorId);
      if (!auth.ok) {
        log.info({ creator: creatorId, reason: auth.reason }, 'widget token refused');
        return reject(r, req, ctx, CLOSE.AUTH_INVALID);
      }
      const given = req.getQuery('session_id') ?? '';
      if (given !== '' && !isValidId(given)) return reject(r, req, ctx, CLOSE.BAD_REQUEST);

      const conn = new Conn(creatorId, given || randomUUID(), randomUUID(), cfg.maxBackpressureBytes);
      const data: UserData = { c: conn, reject: undefined };
      r.upgrade(
        data,
        req.getHeader('sec-websocket-key'),
        req.getHeader('sec-websocket-protocol'),
        req.getHeader('sec-websocket-extensions'),
        ctx,
      );
    },

    open(ws) {
      const { c: conn, reject } = ws.getUserData();
      if (conn === undefined) {
        if (reject) ws.end(reject.code, reject.reason);
        return;
      }
      conn.ws = ws;
      sockets.add(ws, conn.creatorId);
      deps.sink?.add(conn);
      ws.subscribe(creatorTopic(conn.creatorId));
      ws.subscribe(connectionTopic(conn.connectionId));
      ws.send(frames.connectionStatus(conn.sessionId, conn.connectionId), false);
      log.debug({ conn: conn.connectionId, creator: conn.creatorId, session: conn.sessionId }, 'socket open');
    },

    message(ws, data, isBinary) {
      const conn = ws.getUserData().c;
      if (conn === undefined || conn.closed) return;
      if (data.byteLength > cfg.maxPayloadBytes) {
        ws.end(CLOSE.TOO_BIG.code, CLOSE.TOO_BIG.reason);
        return;
      }
      const d = channel.decode(data, isBinary);
      if (!d.ok) {
        conn.send(frames.error(d.error), false);
      } else if (d.msg.type === 'ping') {
        conn.send(frames.PONG, false);
      } else {
        chat.submit(conn, d.msg.content);
      }
    },

    subscription(_ws, topic, newCount, oldCount) {
      // The bus listens to a topic while at least one local socket does.
      if (oldCount === 0 && newCount > 0) bus.subscribe(Buffer.from(topic).toString());
      else if (newCount === 0 && oldCount > 0) bus.unsubscribe(Buffer.from(topic).toString());
    },

    close(ws, code) {
      const conn = ws.getUserData().c;
      if (conn === undefined) return;
      conn.closed = true;
      conn.ws = undefined;
      sockets.delete(ws, conn.creatorId);
      deps.sink?.remove(conn);
      log.debug({ conn: conn.connectionId, code }, 'socket closed');
    },
  };
}
