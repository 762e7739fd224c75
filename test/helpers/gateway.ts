/** A single gateway node in the test process, on a free port, with an in-process bus. */
import { loadConfig, type Config } from '../../src/config/index.js';
import { loadUws } from '../../src/uws/loader.js';
import { createLogger } from '../../src/observability/log.js';
import { createTokenVerifier } from '../../src/auth/verifier.js';
import { createEngine, type AiEngine } from '../../src/ai/index.js';
import type { RateStore } from '../../src/limits/store.js';
import { MemoryBus, MemoryHub } from '../../src/bus/memory.js';
import type { Bus, BusHandler } from '../../src/bus/bus.js';
import { LocalStreamHub, LocalStreams } from '../../src/streams/local.js';
import { Gateway } from '../../src/gateway/gateway.js';
import { StandaloneCluster } from '../../src/cluster/standalone.js';
import { SECRET } from './tokens.js';

/** The one stream store of the gateways sharing a bus hub. */
const shared = new WeakMap<MemoryHub, LocalStreamHub>();
function streamsOf(hub: MemoryHub, cfg: Readonly<Config>): LocalStreamHub {
  let s = shared.get(hub);
  if (!s) shared.set(hub, (s = new LocalStreamHub(cfg.history)));
  return s;
}

export interface TestGateway {
  gw: Gateway;
  port: number;
  cfg: Readonly<Config>;
  close(): Promise<void>;
}

/**
 * Gateways of one test share what a cluster shares: pass the same `hub` (the
 * bus) to several, and they share one stream store too (the primary's, in a
 * real cluster). `rateStore`: shared session and creator budgets. `bus`:
 * another bus on the hub (a transport with faults).
 */
export async function startGateway(
  env: Record<string, string> = {},
  hub = new MemoryHub(),
  rateStore?: RateStore,
  engine?: AiEngine,
  bus: (hub: MemoryHub, onMessage: BusHandler) => Bus = (h, onMessage) => new MemoryBus(h, onMessage),
): Promise<TestGateway> {
  // TEST_VALIDATION_MODE runs a whole suite with frames validated in the pool (see *-pool.test.ts).
  const mode = process.env.TEST_VALIDATION_MODE ? { VALIDATION_MODE: process.env.TEST_VALIDATION_MODE } : {};
  // Tests open sockets and send frames much faster than people do: the abuse caps are off unless a test sets them.
  const caps = { FRAME_RATE_LIMIT: '0', CONNECT_RATE_PER_IP: '0' };
  const cfg = loadConfig({ JWT_SECRET: SECRET, LOG_LEVEL: 'silent', SHUTDOWN_TIMEOUT_S: '2', ...caps, ...mode, ...env });
  const verifier = createTokenVerifier(cfg, createLogger('silent'));
  await verifier.start();
  const gw = new Gateway({
    cfg,
    uws: loadUws().uws,
    log: createLogger(cfg.logLevel),
    verifier,
    engine: engine ?? createEngine(cfg),
    rateStore,
    busFactory: (onMessage) => bus(hub, onMessage),
    streams: (sink) => new LocalStreams(streamsOf(hub, cfg), sink),
    cluster: new StandaloneCluster(),
  });
  const port = await gw.listen('127.0.0.1', 0);
  return { gw, port, cfg, close: () => gw.close() };
}
