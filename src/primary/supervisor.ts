/**
 * The primary: it forks WORKERS uWS workers, replaces any that dies (with
 * back-off when one keeps dying), relays the embedded bus, answers cluster
 * stats, tells workers whether the cluster is ready, and runs the shutdown.
 * It never listens: it serves no traffic.
 *
 * Reload (SIGHUP): the configuration is read again (the environment, plus
 * GATEWAY_ENV_FILE when set) and validated; an invalid one is refused and
 * logged and the running one stays. Then a rolling restart: one worker at a
 * time, a new worker is forked and must report ready before the old one is
 * told to leave (its clients get 1012, spread over a few seconds).
 *
 * Shutdown (SIGTERM or SIGINT, to the primary or its process group): stop
 * replacing workers, send each a `shutdown` message (worker.disconnect() does
 * not know uWS listen sockets), wait for every worker to exit, exit 0. A
 * watchdog kills what is left and exits 1 after SHUTDOWN_TIMEOUT_S.
 */
import cluster, { type Worker } from 'node:cluster';
import type { Serializable } from 'node:child_process';
import { AggregatorRegistry } from 'prom-client';
import { loadConfig, workerExecArgv, type Config } from '../config/index.js';
import { reloadEnv } from '../config/env-file.js';
import { loadUws } from '../uws/loader.js';
import { createLogger, type Logger } from '../observability/log.js';
import { Relay, type RelayTarget } from './relay.js';
import { StreamService } from './streams.js';
import { chargedUpdate, MemoryRateStore } from '../limits/store.js';
import { answer, eachPut, IpcRequests, isTagged, type PrimaryOps, type PrimaryToWorker, type WorkerOps, type WorkerToPrimary } from '../cluster/ipc.js';
import { addCount, counts, type ClusterStats } from '../cluster/view.js';
import { BatchingPort } from '../cluster/ipc-port.js';
import { MemoryChatList } from '../channels/telegram/chats.js';

interface Slot {
  worker: Worker;
  /** Its IPC channel, batching per event-loop turn (cluster/ipc-port.ts): every message to it goes through here. */
  port: BatchingPort<PrimaryToWorker>;
  target: RelayTarget;
  /** Requests to this worker (one deadline policy: cluster/ipc.ts). */
  requests: IpcRequests<WorkerOps>;
  ready: boolean;
  /** The worker's own dependencies are up (its Redis link and subscriptions): its last 'health' report. */
  healthy: boolean;
  startedAt: number;
  /** Being replaced by a rolling restart: its exit is expected. */
  retiring: boolean;
  readyWaiters: Array<() => void>;
  exitWaiters: Array<() => void>;
}

/** Respawn delay after `failures` quick deaths in a row: 0.25 s doubling to 30 s. */
export function backoffMs(failures: number): number {
  return failures <= 0 ? 0 : Math.min(30_000, 250 * 2 ** (failures - 1));
}
/** A worker that lived this long counts as healthy: its death resets the back-off. */
const STABLE_MS = 10_000;

export async function runPrimary(): Promise<void> {
  let cfg: Readonly<Config>;
  let uwsLabel: string;
  try {
    cfg = loadConfig();
    const u = loadUws();
    uwsLabel = `${u.source}@${u.version}`;
  } catch (err) {
    process.stderr.write(`channel-gateway: ${(err as Error).message}\n`);
    process.exit(1);
  }
  const log = createLogger(cfg.logLevel, { role: 'primary' });
  log.info({ uws: uwsLabel, workers: cfg.workers, port: cfg.port, mode: cfg.redis ? `redis ${cfg.redis.mode}` : 'embedded' }, 'starting');
  if (cfg.jwt.generated) warnDevSecret(cfg, log);
  if (cfg.production && !cfg.admin) {
    log.warn('ADMIN_PORT is unset: /metrics and /api/v1/stats (every creator id with its visitor count) are served on the public port; set ADMIN_PORT to serve them on an internal listener');
  }
  new Supervisor(cfg, log).start();
}

function warnDevSecret(cfg: Readonly<Config>, log: Logger): void {
  log.warn('JWT_SECRET and JWT_PUBLIC_KEY are unset: using a random development secret (never do this in production)');
  process.stderr.write(
    '\n  WARNING: no JWT_SECRET or JWT_PUBLIC_KEY set; generated a development secret for this run.\n' +
      '  Mint a widget token for it with:\n\n' +
      `    JWT_SECRET=${cfg.jwt.key} npm run --silent token -- --creator demo\n\n` +
      `  then connect to ws://localhost:${cfg.port}/api/v1/channels/widget/demo/connect?token=<token>\n` +
      (cfg.demoPage ? `  or open the demo chat page: http://localhost:${cfg.port}/demo\n\n` : '\n'),
  );
}

class Supervisor {
  readonly #slots = new Map<number, Slot>();
  readonly #relay = new Relay();
  /** Telegram opt-ins of the host (embedded mode; Redis mode keeps them in Redis). */
  readonly #chats = new MemoryChatList();
  /** Session and creator budgets shared by the workers (embedded mode; with Redis they use Redis). */
  readonly #rates = new MemoryRateStore();
  /** Streams for widget.v2 (embedded mode, history on); with Redis they live in Redis. */
  readonly #streams: StreamService | undefined;
  #failures = 0;
  #stopping = false;
  #wasReady = false;
  #rolling = false;
  /** A SIGHUP arrived during a rolling restart: roll once more after it (the configuration may have changed since). */
  #reloadAgain = false;
  /** Variables given to forked workers on top of this process's environment. */
  #forkEnv: Record<string, string> = {};

  constructor(
    private cfg: Readonly<Config>,
    private readonly log: Logger,
  ) {
    // A generated development secret reaches the workers through their environment.
    if (cfg.jwt.generated) this.#forkEnv = { JWT_SECRET: cfg.jwt.key, GATEWAY_DEV_SECRET: '1' };
    this.#streams = !cfg.redis && cfg.history.size > 0 ? new StreamService(cfg.history) : undefined;
  }

  start(): void {
    cluster.setupPrimary({ serialization: 'advanced', execArgv: workerExecArgv(process.execArgv, { semiSpaceMb: this.cfg.workerSemiSpaceMb, gc: this.cfg.workerGc }) });
    for (let i = 0; i < this.cfg.workers; i++) this.#fork();
    process.on('SIGTERM', () => this.shutdown('SIGTERM'));
    process.on('SIGINT', () => this.shutdown('SIGINT'));
    process.on('SIGHUP', () => void this.reload());
  }

  #fork(): Slot {
    const worker = cluster.fork(this.#forkEnv);
    const port = new BatchingPort<PrimaryToWorker>({
      send: (m) => worker.send(m as Serializable),
      get connected() {
        return worker.isConnected();
      },
      on: (_e, fn) => worker.on('message', fn),
    });
    const slot: Slot = {
      worker,
      port,
      ready: false,
      healthy: false,
      startedAt: Date.now(),
      retiring: false,
      readyWaiters: [],
      exitWaiters: [],
      target: { id: worker.id, send: (m: PrimaryToWorker) => port.send(m) },
      requests: new IpcRequests<WorkerOps>((m) => port.send(m), `worker ${worker.id}`),
    };
    this.#slots.set(worker.id, slot);
    port.on('message', (m: unknown) => this.#onMessage(slot, m));
    worker.on('error', (err) => this.log.warn({ worker: worker.id, err: err.message }, 'worker IPC error'));
    worker.on('exit', (code, signal) => this.#onExit(slot, code, signal));
    return slot;
  }

  /** SIGHUP: validate the configuration again, then replace the workers one at a time. */
  async reload(): Promise<void> {
    if (this.#stopping) return;
    if (this.#rolling) {
      this.#reloadAgain = true;
      this.log.warn('reload already in progress; another rolling restart follows it');
      return;
    }
    let next: Readonly<Config>;
    let overlay: Record<string, string>;
    try {
      const r = reloadEnv();
      overlay = r.overlay;
      if (this.cfg.jwt.generated && !r.env.JWT_SECRET && !r.env.JWT_PUBLIC_KEY && !r.env.JWT_PUBLIC_KEY_FILE) {
        r.env.JWT_SECRET = this.cfg.jwt.key; // keep the development secret: issued tokens stay valid
        overlay = { ...overlay, JWT_SECRET: this.cfg.jwt.key, GATEWAY_DEV_SECRET: '1' };
      }
      next = loadConfig(r.env);
    } catch (err) {
      this.log.error({ err: (err as Error).message }, 'configuration reload refused; the running configuration stays');
      return;
    }
    this.cfg = next;
    this.#forkEnv = overlay;
    this.#rolling = true;
    const olds = [...this.#slots.values()].filter((s) => !s.retiring);
    this.log.info({ workers: olds.length, target: next.workers }, 'rolling restart');
    try {
      for (const [i, old] of olds.entries()) {
        if (this.#stopping) return;
        if (i < next.workers) {
          const fresh = this.#fork();
          const ok = await this.#waitFor(fresh, 'ready', 30_000);
          if (!ok || this.#stopping) {
            this.log.error({ worker: fresh.worker.id }, 'replacement worker did not become ready; rolling restart stopped');
            fresh.retiring = true;
            fresh.worker.process.kill('SIGKILL');
            return;
          }
        }
        old.retiring = true;
        old.port.send({ t: 'shutdown', code: 1012 });
        await this.#waitFor(old, 'exit', this.cfg.shutdownTimeoutS * 1000);
        if (old.worker.isDead() === false) old.worker.process.kill('SIGKILL');
      }
      for (let n = olds.length; n < next.workers; n++) this.#fork();
      this.log.info('rolling restart done');
    } finally {
      this.#rolling = false;
      this.#announce();
      if (this.#reloadAgain && !this.#stopping) {
        this.#reloadAgain = false;
        void this.reload();
      }
    }
  }

  #waitFor(slot: Slot, what: 'ready' | 'exit', ms: number): Promise<boolean> {
    if (what === 'ready' ? slot.ready : slot.worker.isDead()) return Promise.resolve(true);
    return new Promise((resolve) => {
      const timer = setTimeout(() => resolve(false), ms);
      (what === 'ready' ? slot.readyWaiters : slot.exitWaiters).push(() => {
        clearTimeout(timer);
        resolve(true);
      });
    });
  }

  #onMessage(slot: Slot, m: unknown): void {
    if (!isTagged(m)) return;
    const msg = m as WorkerToPrimary;
    switch (msg.t) {
      case 'pub':
        this.#relay.publish(slot.target, msg.topic, msg.payload);
        break;
      case 'sub':
        this.#relay.update(slot.target, msg.add, msg.del);
        break;
      case 'unfollow':
        this.#streams?.unfollow(slot.target, msg.stream);
        break;
      case 'chunk':
        this.#streams?.chunk(slot.target, msg.stream, msg.chunk);
        break;
      case 'puts':
        if (this.#streams) eachPut(msg.p, (stream, epoch, offset, payload, cmid, ends, fwd) => this.#streams!.put(slot.target, stream, epoch, offset, payload, { cmid, ends }, fwd));
        break;
      case 'decline':
        this.#streams?.decline(slot.target, msg.stream, msg.fwd);
        break;
      case 'health':
        if (slot.healthy !== msg.ready) {
          slot.healthy = msg.ready;
          if (!msg.ready) this.log.warn({ worker: slot.worker.id }, 'worker reports a dependency down');
          this.#announce();
        }
        break;
      case 'ready':
        slot.ready = true;
        this.log.info({ worker: slot.worker.id, worker_pid: slot.worker.process.pid }, 'worker ready');
        this.#announce(true);
        for (const w of slot.readyWaiters.splice(0)) w();
        break;
      case 'req': {
        const reply = (r: PrimaryToWorker) => slot.port.send(r);
        if (msg.op === 'append' && this.#streams) {
          this.#streams.appendFor(slot.target, msg.id, msg.arg ?? '', msg.frame ?? '', { cmid: msg.cmid, ends: msg.ends });
          break;
        }
        answer(reply, msg.id, (): PrimaryOps[typeof msg.op] | Promise<PrimaryOps[typeof msg.op]> => {
          switch (msg.op) {
            case 'sync':
              return null;
            case 'stats':
              return this.#stats();
            case 'metrics':
              return this.#metrics();
            case 'append': // appendFor above takes it while history is kept here; else #stream() throws why not (answered as an error)
              return this.#stream().append(msg.arg ?? '', msg.frame ?? '', {});
            case 'follow':
              return this.#stream().follow(slot.target, msg.arg ?? '', msg.pos, msg.times);
            case 'claim':
              return this.#stream().claim(slot.target, msg.arg ?? '', msg.cmid ?? '');
            case 'chats-add':
              void this.#chats.add(msg.arg ?? '', msg.chat ?? '');
              return null;
            case 'chats-del':
              void this.#chats.remove(msg.arg ?? '', msg.chat ?? '');
              return null;
            case 'chats':
              return this.#chats.list(msg.arg ?? '');
            case 'frame-at':
              return this.#stream().store.frameAt(msg.arg ?? '', msg.pos ?? { epoch: '', offset: 0 }) ?? null;
            case 'rate': {
              const batch = msg.batch ?? { kind: '', intervalUs: 0, keys: [], counts: [] };
              return this.#rates.charge(batch).then((result) => {
                const update = chargedUpdate(batch, result);
                // After the answer: the asking worker hears its result first.
                if (update) setImmediate(() => { for (const s of this.#slots.values()) if (s !== slot) s.port.send({ t: 'rate', update }); });
                return result;
              });
            }
            default:
              return this.#deliver(slot, msg.arg ?? '', msg.payload ?? new Uint8Array());
          }
        });
        break;
      }
      case 'res':
        slot.requests.settle(msg);
        break;
      default:
        break;
    }
  }

  #stream(): StreamService {
    if (!this.#streams) throw new Error('history is off (HISTORY_SIZE=0) or kept in Redis');
    return this.#streams;
  }

  /** One request to each of `slots`, answers collected (undefined for a time-out or an error). */
  #ask<K extends keyof WorkerOps>(slots: Slot[], op: K, arg?: string, payload?: Uint8Array): Promise<Array<WorkerOps[K] | undefined>> {
    return Promise.all(slots.map((s) => s.requests.request(op, { arg, payload }).catch(() => undefined)));
  }

  /** A targeted send: every other worker delivers if it holds the connection. */
  async #deliver(from: Slot, connectionId: string, payload: Uint8Array): Promise<boolean> {
    const others = [...this.#slots.values()].filter((s) => s !== from && s.ready);
    return (await this.#ask(others, 'local-deliver', connectionId, payload)).some((r) => r === true);
  }

  /** Every worker's registry, summed (gauges marked max/min aggregate that way). */
  async #metrics(): Promise<string> {
    const live = [...this.#slots.values()].filter((s) => s.ready && !s.retiring);
    const parts = (await this.#ask(live, 'local-metrics')).filter((m): m is object[] => Array.isArray(m));
    return AggregatorRegistry.aggregate(parts as never).metrics();
  }

  /** Asks every ready worker for its counts and merges them. */
  async #stats(): Promise<ClusterStats> {
    const live = [...this.#slots.values()].filter((s) => s.ready && !s.retiring);
    const answers = await this.#ask(live, 'local-stats');
    const out: ClusterStats = { total_connections: 0, connections_by_creator: counts(), connections_by_worker: counts(), workers: live.length, workers_answered: 0 };
    for (const a of answers) {
      if (!a) continue;
      out.workers_answered++;
      out.total_connections += a.total;
      out.connections_by_worker[String(a.pid)] = a.total;
      for (const [c, n] of a.byCreator) addCount(out.connections_by_creator, c, n);
    }
    return out;
  }

  /**
   * Tells every worker whether the host is ready, when that changes: WORKERS
   * workers up, each reporting its own dependencies healthy (Redis connected,
   * every wanted subscription confirmed). /readyz on any worker answers for
   * the whole host.
   */
  #announce(force = false): void {
    const ready = !this.#stopping && [...this.#slots.values()].filter((s) => s.ready && s.healthy && !s.retiring).length >= this.cfg.workers;
    if (ready === this.#wasReady && !force) return;
    if (ready !== this.#wasReady) this.log.info({ ready }, ready ? 'cluster ready' : 'cluster not ready');
    this.#wasReady = ready;
    for (const s of this.#slots.values()) s.port.send({ t: 'cluster', ready });
  }

  #onExit(slot: Slot, code: number | null, signal: string | null): void {
    this.#slots.delete(slot.worker.id);
    slot.requests.close(`worker ${slot.worker.id} exited`);
    this.#relay.remove(slot.target);
    this.#streams?.remove(slot.target);
    for (const w of slot.exitWaiters.splice(0)) w();
    if (this.#stopping) {
      if (this.#slots.size === 0) this.#exit(0);
      return;
    }
    this.#announce();
    if (slot.retiring) {
      this.log.info({ worker: slot.worker.id, code }, 'retired worker exited');
      return;
    }
    const lived = Date.now() - slot.startedAt;
    this.#failures = lived >= STABLE_MS ? 0 : this.#failures + 1;
    const delay = backoffMs(this.#failures);
    this.log.error({ worker: slot.worker.id, code, signal, lived_ms: lived, respawn_in_ms: delay }, 'worker died; replacing it');
    // Not unref'd: when every worker is dead, this timer is all that keeps
    // the primary alive (it used to exit 0 quietly, with nothing serving).
    setTimeout(() => {
      if (!this.#stopping) this.#fork();
    }, delay);
  }

  shutdown(signal: string): void {
    if (this.#stopping) return;
    this.#stopping = true;
    this.log.info({ signal, workers: this.#slots.size }, 'shutting down');
    this.#announce();
    const watchdog = setTimeout(() => {
      this.log.error({ left: this.#slots.size }, 'shutdown deadline passed; killing the workers left');
      for (const s of this.#slots.values()) s.worker.process.kill('SIGKILL');
      this.#exit(1);
    }, this.cfg.shutdownTimeoutS * 1000);
    watchdog.unref();
    if (this.#slots.size === 0) return this.#exit(0);
    for (const s of this.#slots.values()) s.port.send({ t: 'shutdown', code: 1001 });
  }

  #exit(code: number): void {
    this.log.info({ code }, 'primary exiting');
    this.log.flush();
    process.exit(code);
  }
}
