/**
 * The cluster view of a worker in embedded mode (no Redis): the workers of
 * one host, through the primary over IPC. Readiness is pushed by the
 * primary; stats, metrics and targeted sends are asked of it, and it asks
 * this worker for its local counts, metrics and deliveries.
 *
 * Also the worker's end of the primary's control messages (shutdown,
 * cluster readiness) and of its rate-limit store, which the Redis view
 * reuses for readiness and metrics of the host.
 */
import type { Metrics } from '../observability/metrics.js';
import type { ChargeBatch, RateStore, RateUpdate } from '../limits/store.js';
import {
  answer,
  IpcRequests,
  isTagged,
  roomForPut,
  type Put,
  type PrimaryOps,
  type PrimaryToWorker,
  type Request,
  type WorkerOps,
  type WorkerToPrimary,
} from './ipc.js';
import type { ClusterStats, ClusterView, LocalDeliver, LocalStats } from './view.js';
import type { StreamSink } from '../streams/streams.js';

export interface LinkHandlers {
  localStats(): LocalStats;
  localDeliver: LocalDeliver;
  localMetrics(): Promise<object[]>;
  shutdown(code: 1001 | 1012): void;
}

/** The IPC end a worker talks through (`process` in a cluster worker). */
export interface WorkerPort {
  connected?: boolean;
  send?: (msg: WorkerToPrimary) => boolean;
  /** A port that batches (cluster/ipc-port.ts): the message queued last, not sent yet. */
  readonly last?: WorkerToPrimary;
  on(event: 'message', fn: (m: unknown) => void): unknown;
  off(event: 'message', fn: (m: unknown) => void): unknown;
}

/** The primary's stream messages besides frames and chunks (primary/streams.ts). */
export interface StreamControl {
  /** Another worker follows a session this worker follows too (or none does any more). */
  shared(stream: string, shared: boolean): void;
  /** An append to a session whose offsets this worker holds, for it to make. */
  forwarded(msg: Extract<PrimaryToWorker, { t: 'fwd' }>): void;
  /** This worker holds a session's offsets no more. */
  unlease(stream: string): void;
}

export class EmbeddedCluster implements ClusterView {
  #ready = false;
  #handlers: LinkHandlers | undefined;
  readonly #requests: IpcRequests<PrimaryOps>;
  readonly #onMessage = (m: unknown): void => this.#receive(m);
  #onRate: ((u: RateUpdate) => void) | undefined;
  #streams: StreamSink | undefined;
  #control: StreamControl | undefined;

  constructor(private readonly port: WorkerPort = process as unknown as WorkerPort) {
    this.#requests = new IpcRequests<PrimaryOps>((m) => this.send(m), 'primary');
    port.on('message', this.#onMessage);
  }

  /** Attaches what the primary's requests of this worker are answered with (the worker, once the gateway exists). */
  attach(handlers: LinkHandlers): void {
    this.#handlers = handlers;
  }

  /** Deliveries are asked of the worker through its handlers (`attach`). */
  serve(): void {}

  ready(): boolean {
    return this.#ready && this.port.connected === true;
  }

  send(msg: WorkerToPrimary): void {
    if (this.port.connected && this.port.send) this.port.send(msg);
  }

  /** A frame put to the primary (streams/embedded.ts): added to the `puts` message queued last if that is one (the puts of a turn go as one), else in a new one. */
  put(...put: Put): void {
    const last = this.port.last;
    if (last?.t === 'puts' && roomForPut(last.p)) last.p.push(...put);
    else this.send({ t: 'puts', p: put });
  }

  /** The primary counts every worker itself (it asks each for its local stats). */
  add(): void {}
  remove(): void {}

  stats(): Promise<ClusterStats> {
    return this.#requests.request('stats');
  }

  async deliver(connectionId: string, payload: Uint8Array): Promise<boolean> {
    return (await this.#requests.request('deliver', { arg: connectionId, payload })) === true;
  }

  metrics(_local: Metrics): Promise<string> {
    return this.#requests.request('metrics');
  }

  /** A request to the primary (one deadline policy: cluster/ipc.ts). */
  request<K extends keyof PrimaryOps>(op: K, fields: Omit<Request<K>, 't' | 'id' | 'op'> = {}): Promise<PrimaryOps[K]> {
    return this.#requests.request(op, fields);
  }

  /** Where the frames and chunks of streams this worker follows go, and the primary's other stream messages (streams/embedded.ts). */
  onStream(sink: StreamSink, control?: StreamControl): void {
    this.#streams = sink;
    this.#control = control;
  }

  /** The primary's rate-limit store, shared by the workers of this host (embedded mode). */
  readonly rateStore: RateStore = {
    charge: (batch: ChargeBatch) => this.#requests.request('rate', { batch }),
    onUpdate: (listener) => (this.#onRate = listener),
    close: async () => {},
  };

  #receive(m: unknown): void {
    if (!isTagged(m)) return;
    const msg = m as PrimaryToWorker;
    switch (msg.t) {
      case 'cluster':
        this.#ready = msg.ready;
        break;
      case 'shutdown':
        this.#handlers?.shutdown(msg.code);
        break;
      case 'rate':
        this.#onRate?.(msg.update);
        break;
      case 'smsg':
        try {
          this.#streams?.frame(msg.stream, msg.epoch, { offset: msg.offset, payload: msg.payload });
        } finally {
          // This worker's own append: its frame answers it (primary/streams.ts), whatever the delivery did.
          if (msg.id !== undefined) this.#requests.settle({ t: 'res', id: msg.id, result: { epoch: msg.epoch, offset: msg.offset } });
        }
        break;
      case 'chunk':
        this.#streams?.chunk(msg.stream, msg.chunk);
        break;
      case 'shared':
        this.#control?.shared(msg.stream, msg.shared);
        break;
      case 'fwd':
        this.#control?.forwarded(msg);
        break;
      case 'unlease':
        this.#control?.unlease(msg.stream);
        break;
      case 'res':
        this.#requests.settle(msg);
        break;
      case 'req': {
        const h = this.#handlers;
        const reply = (r: WorkerToPrimary) => this.send(r);
        if (!h) return reply({ t: 'res', id: msg.id, error: 'worker not serving yet' });
        answer(reply, msg.id, (): WorkerOps[typeof msg.op] | Promise<WorkerOps[typeof msg.op]> => {
          switch (msg.op) {
            case 'local-metrics':
              return h.localMetrics();
            case 'local-stats':
              return h.localStats();
            default:
              return h.localDeliver(msg.arg ?? '', msg.payload ?? new Uint8Array());
          }
        });
        break;
      }
      default:
        break;
    }
  }

  async close(): Promise<void> {
    this.port.off('message', this.#onMessage);
    this.#requests.close('cluster link closed');
  }
}
