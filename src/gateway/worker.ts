/**
 * A cluster worker: one uWS gateway node listening on PORT (SO_REUSEPORT
 * lets every worker bind the same port; Linux spreads connections).
 *
 * Shutdown (a `shutdown` message from the primary, or SIGTERM/SIGINT sent to
 * the process group): Gateway.close() in its fixed order, then the logger is
 * flushed and the process exits 0.
 */
import cluster from 'node:cluster';
import { loadConfig, type Config } from '../config/index.js';
import { loadUws } from '../uws/loader.js';
import { createLogger, type Logger } from '../observability/log.js';
import { createTokenVerifier } from '../auth/verifier.js';
import { createEngine } from '../ai/index.js';
import { RedisRateStore } from '../limits/redis-store.js';
import { createRedis } from '../redis/client.js';
import { IpcBus } from '../bus/ipc.js';
import os from 'node:os';
import { randomBytes } from 'node:crypto';
import { Gateway, type GatewayDeps } from './gateway.js';
import { RedisBus } from '../bus/redis.js';
import type { Bus } from '../bus/bus.js';
import { RedisRegistry } from '../registry/redis.js';
import { RedisClusterView } from '../registry/cluster-view.js';
import { PrimaryLink } from './primary-link.js';

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
  const link = new PrimaryLink({
    localStats: () => gw?.localStats() ?? { pid: process.pid, total: 0, byCreator: {} },
    localDeliver: (topic, payload) => gw?.fanout.deliverLocal(topic, payload) ?? false,
    localMetrics: async () => (gw ? await gw.metrics.registry.getMetricsAsJSON() : []),
    shutdown: (code) => void stop(code),
  });

  async function stop(code: 1001 | 1012): Promise<void> {
    if (stopping) return;
    stopping = true;
    log.info({ code }, 'worker shutting down');
    // Leave a second of the deadline for the bus, the logger and the exit.
    await gw?.close(code, Math.max(500, cfg.shutdownTimeoutS * 1000 - 1500));
    link.close();
    log.info('worker stopped');
    log.flush();
    // A moment for the last close frames to leave the socket buffers.
    setTimeout(() => process.exit(0), 50);
  }
  process.on('SIGTERM', () => void stop(1001));
  process.on('SIGINT', () => void stop(1001));
  // The primary gone (kill -9): stop rather than serve unsupervised.
  process.on('disconnect', () => void stop(1001));

  const verifier = createTokenVerifier(cfg, log);
  await verifier.start();
  gw = new Gateway({
    cfg,
    uws,
    log,
    verifier,
    engine: createEngine(cfg),
    ...clusterParts(cfg, log, link),
  });
  try {
    const port = await gw.listen(cfg.host, cfg.port);
    log.info({ host: cfg.host, port, uws: `${source}@${version}` }, 'worker listening');
    link.send({ t: 'ready' });
  } catch (err) {
    log.fatal({ err: (err as Error).message }, 'worker cannot listen');
    log.flush();
    process.exit(1);
  }
}

/**
 * Embedded mode: the bus relays through the primary, which also answers
 * stats and keeps the session and creator budgets. Redis mode: every worker
 * is a node of the Redis bus, registry and budgets.
 */
function clusterParts(cfg: Readonly<Config>, log: Logger, link: PrimaryLink): Pick<GatewayDeps, 'busFactory' | 'cluster' | 'registry' | 'rateStore'> {
  let bus: Bus | undefined;
  if (!cfg.redisUrl) {
    // Connection topics stay off the relay: a connection lives on one worker,
    // and targeted sends find it with a 'deliver' request instead. That keeps
    // the primary free of per-connection state.
    return { busFactory: (onMessage) => new IpcBus(process, onMessage, (topic) => !topic.startsWith('k/')), cluster: link, rateStore: link.rateStore };
  }
  const url = cfg.redisUrl;
  const nodeId = `${os.hostname()}:${process.pid}:${randomBytes(3).toString('hex')}`;
  const leaseMs = cfg.registryLeaseS * 1000;
  const registry = new RedisRegistry({ url, prefix: cfg.redisPrefix, nodeId, leaseMs, sweepMs: Math.max(250, leaseMs / 3), log });
  return {
    busFactory: (onMessage) => (bus = new RedisBus({ url, prefix: cfg.redisPrefix, nodeId, log }, onMessage)),
    cluster: new RedisClusterView(link, registry, (topic, payload) => bus?.publish(topic, payload)),
    registry,
    rateStore: new RedisRateStore(
      createRedis(url, 'rate-limits', log),
      createRedis(url, 'rate-limits-sub', log, { subscriber: true }),
      cfg.redisPrefix,
      nodeId,
    ),
  };
}

function fatal(log: Logger, err: unknown): void {
  log.fatal({ err: err instanceof Error ? { message: err.message, stack: err.stack } : String(err) }, 'worker crashed');
  log.flush();
  process.exit(1);
}
