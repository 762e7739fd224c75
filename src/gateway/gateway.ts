/**
 * One gateway node: a uWS app with the widget socket and the HTTP routes,
 * its fan-out and bus, and a graceful close().
 */
import type { TemplatedApp, us_listen_socket, WebSocket } from '@trufflesuite/uws-js-unofficial';
import type { Config } from '../config/index.js';
import type { Uws } from '../uws/loader.js';
import type { TokenVerifier } from '../auth/verifier.js';
import type { AiEngine } from '../ai/engine.js';
import { GuardedEngine } from '../ai/guard.js';
import type { Bus, BusHandler } from '../bus/bus.js';
import { Limits } from '../limits/index.js';
import type { RateStore } from '../limits/store.js';
import { ChatPipeline, type SessionStreams } from '../pipeline/chat.js';
import { ChannelRouter } from '../channels/router.js';
import { WidgetChannel } from '../channels/widget.js';
import { CLOSE, type CloseCode } from '../protocol/close-codes.js';
import type { ClusterView, LocalStats, RedisHealth } from '../cluster/view.js';
import type { Logger } from '../observability/log.js';
import { GatewayError } from '../errors.js';
import { Metrics } from '../observability/metrics.js';
import { createValidator, type Validator } from '../pipeline/validator.js';
import { Fanout } from './fanout.js';
import { SocketSet, widgetBehavior, type UserData } from './sockets.js';
import { mountAdminRoutes, mountRoutes, type RouteDeps } from './routes.js';
import { mountBrowser } from './demo.js';
import { slowConsumerPolicy, type SlowConsumerPolicy } from './backpressure.js';
import { FdGuard } from './fd-guard.js';
import { TrustedProxies } from './client-ip.js';
import { creatorOfTopic, creatorTopic } from '../protocol/topics.js';
import { sessionFrame, StreamHub, v2Topic, type StreamReader } from '../streams/hub.js';
import { LocalStreamHub, LocalStreams } from '../streams/local.js';
import { broadcastStream, sessionStream, type StreamSink, type StreamStore } from '../streams/streams.js';
import { TelegramChannel } from '../channels/telegram/channel.js';
import { MemoryChatList, type ChatList } from '../channels/telegram/chats.js';
import { Buffer } from 'node:buffer';

export interface GatewayDeps {
  cfg: Readonly<Config>;
  uws: Uws;
  log: Logger;
  verifier: TokenVerifier;
  engine: AiEngine;
  /** Where session and creator budgets are shared with other workers and hosts (none: this process only). */
  rateStore?: RateStore;
  busFactory: (onMessage: BusHandler) => Bus;
  /** The rest of the cluster: stats, targeted sends, readiness; told of every socket (closed last). */
  cluster: ClusterView;
  /** Redis mode: what the metrics show of Redis. */
  redisHealth?: () => RedisHealth;
  /** Redis mode: the worker's Redis link is up with every wanted subscription confirmed. */
  linkReady?: () => boolean;
  /**
   * Where streams live (history on: HISTORY_SIZE > 0): the primary, Redis,
   * or, when absent, this process alone.
   */
  streams?: (sink: StreamSink, hub: StreamHub) => StreamStore;
  /** Telegram opt-ins, shared by every worker and host (absent: this process alone). */
  telegramChats?: ChatList;
}

/** How long a closing worker still completes handshakes it had accepted. */
export const HANDOFF_MS = 250;
/** Over how long a rolling restart spreads a worker's 1012 closes. */
export const RESTART_SPREAD_MS = 3000;
/** How often every socket's send buffer is checked against MAX_BACKPRESSURE_BYTES. */
export const SLOW_SWEEP_MS = 500;

export class Gateway {
  readonly app: TemplatedApp;
  readonly sockets: SocketSet;
  readonly fanout: Fanout;
  readonly channels = new ChannelRouter();
  readonly metrics: Metrics;
  readonly validator: Validator;
  readonly limits: Limits;
  #listen: us_listen_socket | undefined;
  #port = 0;
  #serving = false;
  /** Once closing: the close its sockets get (1001, or 1012 for a rolling restart). */
  #stopClose: CloseCode | undefined;
  /** False from the first moment of close(): readiness fails at once. */
  #ready = false;
  #closing: Promise<void> | undefined;
  readonly #sweep: NodeJS.Timeout;
  /** Keeps the worker under its descriptor limit (gateway/fd-guard.ts). */
  readonly fds: FdGuard;
  /** History on: the worker's streams (widget.v2 delivery, and broadcasts for every socket). */
  readonly streams: StreamHub | undefined;
  #host = '';
  /** The internal listener's app (ADMIN_PORT), if configured. */
  #adminApp: TemplatedApp | undefined;
  #adminListen: us_listen_socket | undefined;
  readonly #backpressure: SlowConsumerPolicy;
  /** The Telegram channel, when bots are configured. */
  readonly telegram: TelegramChannel | undefined;
  /** Bytes published to each creator's topic since its sockets were last checked. */
  readonly #publishedSince = new Map<string, number>();

  constructor(private readonly d: GatewayDeps) {
    this.sockets = new SocketSet({ countIps: d.cfg.maxConnectionsPerIp > 0 });
    this.app = d.cfg.tls
      ? d.uws.SSLApp({ cert_file_name: d.cfg.tls.certFile, key_file_name: d.cfg.tls.keyFile })
      : d.uws.App();
    this.metrics = new Metrics({
      connections: () => this.sockets.all.size,
      bus: () => this.fanout?.bus,
      poolQueued: () => this.validator?.queued ?? 0,
      limits: () => this.limits?.stats(),
      fds: () => ({ open: this.fds.open, pauses: this.fds.pauses }),
      ...(d.redisHealth ? { redis: d.redisHealth } : {}),
      breaker: () => breakerLevel(d.engine),
      telegramQueued: () => this.telegram?.queued ?? 0,
      streams: () => this.streams?.counters ?? { gapsFilled: 0, chunksMerged: 0, continuityLost: { session: 0, broadcast: 0 }, resumes: { recovered: 0, lost: 0 } },
    });
    d.cluster.serve((id, payload) => this.deliverLocal(id, payload));
    this.#backpressure = slowConsumerPolicy(d.cfg.maxBackpressureBytes, d.cfg.maxPayloadBytes, d.cfg.aiEngineMaxResponseBytes);
    if (d.cfg.history.size > 0) {
      this.streams = new StreamHub({
        app: this.app,
        log: d.log,
        publishV1: (creator, payload) => this.fanout.deliverLocal(creatorTopic(creator), payload),
        beforePublish: (creator, bytes) => this.#beforePublish(v2Topic(creator), bytes),
        slowChunkBytes: this.#backpressure.soft / 4,
        paceBytes: this.#backpressure.soft / 2,
        maxQueuedBytes: this.#backpressure.soft,
      });
      this.streams.store = d.streams ? d.streams(this.streams.sink, this.streams) : new LocalStreams(new LocalStreamHub(d.cfg.history), this.streams.sink);
    }
    this.fds = new FdGuard({ pause: () => this.#pauseAccepting(), resume: () => this.#resumeAccepting() }, d.log);
    this.fanout = new Fanout(
      this.app,
      d.busFactory,
      d.cluster,
      (id, payload) => this.deliverLocal(id, payload),
      (topic, bytes) => this.#beforePublish(topic, bytes),
    );
    const schema = { maxContentChars: d.cfg.maxMessageChars };
    const widget = new WidgetChannel(this.fanout, schema);
    this.channels.register(widget);
    this.limits = new Limits(d.cfg, d.rateStore, d.log);
    this.validator = createValidator({
      tables: this.limits.messages,
      schema,
      mode: d.cfg.validationMode,
      decode: (data, isBinary, msgpack) => widget.decode(data, isBinary, msgpack),
      thresholdBytes: d.cfg.validationThresholdBytes,
      threads: d.cfg.validationThreads,
      maxQueuedFrames: d.cfg.validationMaxQueue,
    });
    const chat = new ChatPipeline(d.engine, { maxQueued: d.cfg.maxQueuedMessages }, d.log, this.metrics, this.streams && sessionStreams(this.streams));
    const tg = d.cfg.telegram;
    const hub = this.streams;
    this.telegram = tg
      ? new TelegramChannel(
          { bots: tg.bots, apiUrl: tg.apiUrl, chatIntervalMs: tg.chatIntervalMs, perSecond: Math.max(1, Math.floor(tg.maxPerS / d.cfg.workers)), maxQueued: tg.maxQueue, dedupeMs: d.cfg.history.ttlMs },
          {
            chat,
            limits: this.limits,
            chats: d.telegramChats ?? new MemoryChatList(),
            metrics: this.metrics,
            log: d.log,
            schema,
            ...(hub ? { claim: async (creatorId: string, key: string) => (await hub.store.claim(sessionStream(creatorId, 'tg-updates'), key)).state === 'new' } : {}),
          },
        )
      : undefined;
    if (this.telegram) this.channels.register(this.telegram);

    this.app.ws<UserData>(
      '/api/v1/channels/widget/:creator_id/connect',
      widgetBehavior(
        { cfg: d.cfg, verifier: d.verifier, chat, validator: this.validator, limits: this.limits, bus: this.fanout.bus, log: d.log, sink: d.cluster, metrics: this.metrics, accepting: () => this.#serving, stopClose: () => this.#stopClose ?? CLOSE.OVERLOADED, fdPressure: () => this.fds.refusing, backpressure: this.#backpressure, streams: this.streams, trusted: new TrustedProxies(d.cfg.trustedProxies) },
        this.sockets,
      ),
    );
    this.#sweep = setInterval(() => this.#sweepSlowConsumers(), SLOW_SWEEP_MS);
    this.#sweep.unref();
    const routes: RouteDeps = {
      verifier: d.verifier,
      fanout: this.fanout,
      channels: this.channels,
      log: d.log,
      maxBodyBytes: d.cfg.maxPayloadBytes,
      serving: () => this.#serving,
      ready: () => this.healthy() && d.cluster.ready(),
      stats: () => d.cluster.stats(this.localStats()),
      broadcast: (creatorId, json) => this.broadcast(creatorId, json),
      ...(this.telegram ? { telegram: (creatorId: string, secret: string, body: Buffer) => this.telegram!.webhook(creatorId, secret, body) } : {}),
      metrics: () => d.cluster.metrics(this.metrics),
    };
    mountRoutes(this.app, routes, { admin: d.cfg.admin === undefined, browser: (app) => mountBrowser(app, d.cfg) });
    if (d.cfg.admin) {
      this.#adminApp = d.uws.App();
      mountAdminRoutes(this.#adminApp, routes);
    }
  }

  /**
   * Before a publish to a creator's topic: once `checkEvery` bytes went to
   * that creator since its sockets were last checked, check them now, so
   * none can pass the hard limit unnoticed (gateway/backpressure.ts).
   */
  #beforePublish(topic: string, bytes: number): void {
    const creator = creatorOfTopic(topic);
    if (creator === undefined) return;
    const since = (this.#publishedSince.get(creator) ?? 0) + bytes;
    if (since <= this.#backpressure.checkEvery) {
      this.#publishedSince.set(creator, since);
      return;
    }
    this.#publishedSince.delete(creator);
    const set = this.sockets.byCreator.get(creator);
    if (set) for (const ws of set) this.#checkSlow(ws);
  }

  /** Every SLOW_SWEEP_MS: every socket against the soft limit. */
  #sweepSlowConsumers(): void {
    this.#publishedSince.clear();
    for (const ws of this.sockets.all) this.#checkSlow(ws);
  }

  /** Closes `ws` with 4009 if more than the soft limit is buffered for it (a close frame still fits). */
  #checkSlow(ws: WebSocket<UserData>): void {
    const buffered = ws.getBufferedAmount();
    if (buffered <= this.#backpressure.soft) return;
    const conn = ws.getUserData().c;
    if (!conn || conn.closed) return;
    this.d.log.info({ conn: conn.connectionId, buffered }, 'slow consumer closed');
    conn.tooSlow();
  }

  /** Once the validation pool is up, listens on HOST:PORT (port 0 picks a free one), and on ADMIN_HOST:ADMIN_PORT if set; resolves to the port. */
  async listen(host: string, port: number): Promise<number> {
    // Frames are not accepted before they can be validated.
    await this.validator.ready();
    const admin = this.d.cfg.admin;
    if (admin && this.#adminApp) this.#adminListen = await listenOn(this.#adminApp, admin.host, admin.port);
    this.#listen = await listenOn(this.app, host, port);
    this.#host = host;
    this.#port = this.d.uws.us_socket_local_port(this.#listen as never);
    this.#serving = true;
    this.#ready = true;
    this.fds.start();
    return this.#port;
  }

  /** FdGuard: stop accepting (the listen socket closed; the kernel refuses or sends connects to other workers). */
  #pauseAccepting(): void {
    if (this.#listen) this.d.uws.us_listen_socket_close(this.#listen);
    this.#listen = undefined;
  }

  async #resumeAccepting(): Promise<void> {
    if (this.#listen || !this.#serving || this.#closing) return;
    this.#listen = await listenOn(this.app, this.#host, this.#port);
  }

  get port(): number {
    return this.#port;
  }

  get serving(): boolean {
    return this.#serving;
  }

  /** This node's own dependencies are up: it serves, its bus is connected and (Redis) every wanted subscription is in place. */
  healthy(): boolean {
    return this.#ready && this.fanout.bus.status === 'ready' && (this.d.linkReady?.() ?? true);
  }

  localStats(): LocalStats {
    return { pid: process.pid, total: this.sockets.all.size, byCreator: this.sockets.creatorCounts() };
  }

  /** Delivers a JSON frame to one of this worker's connections; whether it holds it (widget.v2: into its session stream). */
  deliverLocal(connectionId: string, payload: Uint8Array): boolean {
    const conn = this.sockets.byId.get(connectionId);
    if (conn === undefined || conn.closed) return false;
    conn.cork(() => conn.message(payload));
    return true;
  }

  /**
   * A broadcast to every socket of a creator, on every node. With history,
   * appended to the creator's stream first (resolves once stored, with its
   * offset), then delivered through it; without, published on the bus
   * (at-most-once). False when it cannot be taken now (the caller answers 503).
   */
  async broadcast(creatorId: string, json: string): Promise<boolean> {
    // Telegram chats that opted in: queued by the worker that took the broadcast (once, whatever the cluster).
    if (this.telegram?.has(creatorId)) {
      this.telegram.broadcast(creatorId, JSON.parse(json) as Record<string, unknown>).catch((err: Error) => this.d.log.warn({ creator: creatorId, err: err.message }, 'telegram broadcast failed'));
    }
    if (this.streams === undefined) return this.fanout.publish(creatorTopic(creatorId), json);
    await this.streams.store.append(broadcastStream(creatorId), json);
    return true;
  }

  /**
   * Graceful close, in a fixed order: refuse new sockets and fail readiness,
   * close the listen socket, end sockets in batches with `code`, wait for
   * them to go (until `deadlineMs`), then close the registry, the bus, the
   * engine, the pool and the limits (their last takes reported). Safe to call twice (the second call returns the first's promise).
   */
  close(code: number = CLOSE.SHUTDOWN.code, deadlineMs = this.d.cfg.shutdownTimeoutS * 1000): Promise<void> {
    this.#closing ??= this.#close(code, deadlineMs);
    return this.#closing;
  }

  async #close(code: number, deadlineMs: number): Promise<void> {
    const until = Date.now() + deadlineMs;
    this.#stopClose = code === CLOSE.RESTART.code ? CLOSE.RESTART : CLOSE.SHUTDOWN;
    this.#ready = false;
    clearInterval(this.#sweep);
    this.fds.stop();
    if (this.#listen) {
      this.d.uws.us_listen_socket_close(this.#listen);
      this.#listen = undefined;
    }
    // Handshakes this worker had already accepted still complete (their
    // sockets are then closed with the others); new ones go to the other
    // workers, which share the port. Only then are stragglers refused (1013).
    await new Promise((r) => setTimeout(r, Math.min(HANDOFF_MS, deadlineMs / 4)));
    this.#serving = false;
    const restart = code === CLOSE.RESTART.code;
    const reason = restart ? CLOSE.RESTART.reason : CLOSE.SHUTDOWN.reason;
    try {
      const all = [...this.sockets.all];
      // Shutdown: batches of 1000 per event-loop turn. Restart: the clients
      // reconnect to the other workers, so spread their closes over
      // RESTART_SPREAD_MS (60 slices) to avoid a reconnect storm.
      const slices = restart ? 60 : Math.ceil(all.length / 1000);
      const batch = Math.max(1, Math.ceil(all.length / Math.max(1, slices)));
      const pause = restart ? Math.min(RESTART_SPREAD_MS, deadlineMs / 3) / 60 : 0;
      for (let i = 0; i < all.length; i += batch) {
        for (const ws of all.slice(i, i + batch)) endSocket(ws, code, reason);
        await new Promise((r) => (pause > 0 ? setTimeout(r, pause) : setImmediate(r)));
      }
      // Wait for the close handshakes; after the deadline, cut what is left.
      while (this.sockets.all.size > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
      for (const ws of [...this.sockets.all]) {
        if (ws.getUserData().c?.closed === false) ws.close();
      }
    } finally {
      if (this.#adminListen) this.d.uws.us_listen_socket_close(this.#adminListen);
      this.#adminListen = undefined;
      // The limits report their last takes through the cluster's store, so
      // the cluster view (registry entries removed, Redis link closed) goes last.
      await this.telegram?.close();
      await Promise.allSettled([this.fanout.bus.close(), this.d.engine.close(), this.validator.close(), this.limits.close(), this.streams?.store.close()]);
      await this.d.cluster.close().catch((err: Error) => this.d.log.warn({ err: err.message }, 'cluster view close failed'));
      this.d.verifier.close();
      this.metrics.close();
    }
  }
}

/** The chat pipeline's view of widget.v2 session streams. */
function sessionStreams(hub: StreamHub): SessionStreams {
  return {
    claim: (peer, cmid) => hub.store.claim(peer.sessionStream, cmid),
    async resend(peer, at) {
      const f = await hub.store.frameAt(peer.sessionStream, at);
      if (f === undefined) return false;
      peer.cork(() => (peer as unknown as StreamReader).sendFrame(sessionFrame(f)));
      return true;
    },
    chunk: (peer, c) => hub.chunk(peer.sessionStream, c),
  };
}

function listenOn(app: TemplatedApp, host: string, port: number): Promise<us_listen_socket> {
  return new Promise((resolve, reject) => {
    app.listen(host, port, (ls) => {
      if (ls) resolve(ls);
      else reject(new GatewayError('GW_ERR_LISTEN', `cannot listen on ${host}:${port}`));
    });
  });
}

const BREAKER_LEVEL = { closed: 0, 'half-open': 1, open: 2 } as const;
function breakerLevel(engine: AiEngine): number {
  return engine instanceof GuardedEngine ? BREAKER_LEVEL[engine.state] : 0;
}

function endSocket(ws: WebSocket<UserData>, code: number, reason: string): void {
  if (ws.getUserData().c?.closed === false) ws.end(code, reason);
}
