/**
 * A cluster worker: one uWS gateway node listening on PORT (SO_REUSEPORT
 * lets every worker bind the same port; Linux spreads connections).
 *
 * Shutdown (a `shutdown` message from the primary, or SIGTERM/SIGINT sent to
 * the process group): Gateway.close() in its fixed order, then the logger is
 * flushed and the process exits 0.
 */
import cluster from 'node:cluster';
import os from 'node:os';
import { randomBytes } from 'node:crypto';
import { loadConfig, type Config } from '../config/index.js';
import { loadUws } from '../uws/loader.js';
import { createLogger, type Logger } from '../observability/log.js';
import { createTokenVerifier } from '../auth/verifier.js';
import { createEngine } from '../ai/index.js';
import { RedisRateStore } from '../limits/redis-store.js';
import { IpcBus } from '../bus/ipc.js';
import { RedisBus } from '../bus/redis.js';
import { RedisLink } from '../redis/link.js';
import { EmbeddedCluster } from '../cluster/embedded.js';
import { BatchingPort, type IpcEnd } from '../cluster/ipc-port.js';
import type { WorkerToPrimary } from '../cluster/ipc.js';
import { RedisCluster } from '../cluster/redis.js';
import { EmbeddedStreams } from '../streams/embedded.js';
import { PrimaryChatList, RedisChatList } from '../channels/telegram/chats.js';
import { RedisStreams } from '../streams/redis.js';
import { Gateway, type GatewayDeps } from './gateway.js';

export async function runWorker(): Promise<void> {
  let cfg: Readonly<Config>;
  try {
    cfg = loadConfig();
  } catch (err) {
    process.stderr.write(`channel-gateway worker: ${(err as Error).message}\n`);
    process.exit(1);
  }
  const log = createLogger(cfg.logLevel, { role: 'worker', worker: cluster.worker?.id });
  process.on('uncaughtException', (err) => fatal(log, err));
  process.on('unhandledRejection', (err) => fatal(log, err));

  const { uws, source, version } = loadUws();
  let gw: Gateway | undefined;
  let stopping = false;
  // One port for the whole IPC channel: messages batched per turn, in the order sent.
  const port = new BatchingPort<WorkerToPrimary>(process as unknown as IpcEnd);
  const host = new EmbeddedCluster(port);

  async function stop(code: 1001 | 1012, deadlineMs = cfg.shutdownTimeoutS * 1000): Promise<void> {
    if (stopping) return;
    stopping = true;
    log.info({ code }, 'worker shutting down');
    // Leave a second of the deadline for the bus, the logger and the exit.
    await gw?.close(code, Math.max(500, deadlineMs - 1500));
    await host.close();
    log.info('worker stopped');
    log.flush();
    // A moment for the last close frames to leave the socket buffers.
    setTimeout(() => process.exit(0), 50);
  }
  process.on('SIGTERM', () => void stop(1001));
  process.on('SIGINT', () => void stop(1001));
  // Reload is the primary's (a rolling restart): a SIGHUP sent to the whole
  // process group (systemctl kill -s HUP, a terminal) must not kill workers.
  process.on('SIGHUP', () => log.debug('SIGHUP ignored by the worker (the primary rolls the cluster)'));
  // The primary gone (kill -9): Node's cluster code would exit at once, before
  // our clients get 1001 and our registry entries are removed. Taking the
  // disconnect as ours (exitedAfterDisconnect) lets the gateway stop in order,
  // within a short deadline, unsupervised.
  cluster.worker?.on('disconnect', () => {
    cluster.worker!.exitedAfterDisconnect = true;
    log.warn('the primary is gone; stopping');
    void stop(1001, Math.min(cfg.shutdownTimeoutS * 1000, 5000));
  });

  const verifier = createTokenVerifier(cfg, log);
  await verifier.start();
  gw = new Gateway({
    cfg,
    uws,
    log,
    verifier,
    engine: createEngine(cfg),
    ...clusterParts(cfg, log, host, port),
  });
  const g = gw;
  host.attach({
    localStats: () => g.localStats(),
    localDeliver: (id, payload) => g.deliverLocal(id, payload),
    localMetrics: async () => await g.metrics.registry.getMetricsAsJSON(),
    shutdown: (code) => void stop(code),
  });
  try {
    const port = await gw.listen(cfg.host, cfg.port);
    log.info({ host: cfg.host, port, uws: `${source}@${version}` }, 'worker listening');
    host.send({ t: 'ready' });
    // The primary declares the host ready only when every worker's own
    // dependencies are: each reports its own, on change.
    let reported: boolean | undefined;
    const report = (): void => {
      const ok = g.healthy();
      if (ok !== reported) host.send({ t: 'health', ready: (reported = ok) });
    };
    report();
    setInterval(report, 250).unref();
  } catch (err) {
    log.fatal({ err: (err as Error).message }, 'worker cannot listen');
    log.flush();
    process.exit(1);
  }
}

/**
 * Embedded mode: the bus relays through the primary, which also answers
 * stats and keeps the session and creator budgets. Redis mode: every worker
 * is a node of the Redis bus, registry and budgets, over one RedisLink.
 */
function clusterParts(cfg: Readonly<Config>, log: Logger, host: EmbeddedCluster, port: BatchingPort<WorkerToPrimary>): Pick<GatewayDeps, 'busFactory' | 'cluster' | 'rateStore' | 'redisHealth' | 'linkReady' | 'streams' | 'telegramChats'> {
  if (!cfg.redis) {
    return { busFactory: (onMessage) => new IpcBus(port, onMessage, undefined, () => host.request('sync')), cluster: host, rateStore: host.rateStore, streams: (sink) => new EmbeddedStreams(host, sink), telegramChats: new PrimaryChatList(host) };
  }
  const nodeId = `${os.hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`;
  const link = new RedisLink({ target: cfg.redis, name: nodeId, log, commandTimeoutMs: cfg.redisCommandTimeoutMs, maxPendingBytes: cfg.redisMaxPendingBytes });
  const view = new RedisCluster(host, link, { prefix: cfg.redisPrefix, nodeId, leaseMs: cfg.registryLeaseS * 1000, log });
  return {
    busFactory: (onMessage) => new RedisBus(link, { prefix: cfg.redisPrefix, nodeId, log }, onMessage),
    streams: (sink, hub) =>
      new RedisStreams(
        link,
        view,
        sink,
        { ...cfg.history, prefix: cfg.redisPrefix, nodeId, log, partialTtlMs: cfg.aiEngineTimeoutMs + 5000 },
        () => hub.positions(),
        (stream, epoch, top) => hub.behind(stream, epoch, top),
      ),
    cluster: view,
    redisHealth: () => view.health(),
    linkReady: () => link.ready(),
    rateStore: new RedisRateStore(link, cfg.redisPrefix, nodeId),
    telegramChats: new RedisChatList(link, cfg.redisPrefix),
  };
}

function fatal(log: Logger, err: unknown): void {
  log.fatal({ err: err instanceof Error ? { message: err.message, stack: err.stack } : String(err) }, 'worker crashed');
  log.flush();
  process.exit(1);
}
