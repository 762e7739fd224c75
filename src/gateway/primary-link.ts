/**
 * A worker's view of its cluster, over IPC to the primary: readiness pushed
 * by the primary, stats and topic look-ups asked of it, and the primary's
 * requests of this worker answered.
 */
import { GatewayError } from '../errors.js';
import {
  isTagged,
  type ClusterStats,
  type LocalStats,
  type PrimaryOps,
  type PrimaryToWorker,
  type WorkerOps,
  type WorkerToPrimary,
} from '../primary/ipc.js';
import type { ClusterView } from './gateway.js';
import type { ChargeBatch, RateStore, RateUpdate } from '../limits/store.js';

export interface LinkHandlers {
  localStats(): LocalStats;
  localDeliver(topic: string, payload: Uint8Array): boolean;
  localMetrics(): Promise<object[]>;
  shutdown(code: 1001 | 1012): void;
}

export class PrimaryLink implements ClusterView {
  #nextId = 1;
  #ready = false;
  readonly #pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void; timer: NodeJS.Timeout }>();
  readonly #onMessage = (m: unknown): void => this.#receive(m);
  #onRate: ((u: RateUpdate) => void) | undefined;

  constructor(
    private readonly handlers: LinkHandlers,
    private readonly timeoutMs = 2000,
  ) {
    process.on('message', this.#onMessage);
  }

  ready(): boolean {
    return this.#ready && process.connected === true;
  }

  send(msg: WorkerToPrimary): void {
    if (process.connected && process.send) process.send(msg);
  }

  stats(local: LocalStats): Promise<ClusterStats> {
    // The primary asks every worker, this one included, so `local` is not needed here.
    void local;
    return this.#request('stats') as Promise<ClusterStats>;
  }

  async deliver(topic: string, payload: Uint8Array): Promise<boolean> {
    return (await this.#request('deliver', topic, payload)) === true;
  }

  async metrics(): Promise<string> {
    return (await this.#request('metrics')) as string;
  }

  /** The primary's rate-limit store, shared by the workers of this host (embedded mode). */
  readonly rateStore: RateStore = {
    charge: (batch: ChargeBatch) => this.#request('rate', undefined, undefined, batch) as Promise<number[]>,
    onUpdate: (listener) => (this.#onRate = listener),
    close: async () => {},
  };

  #request(op: keyof PrimaryOps, arg?: string, payload?: Uint8Array, batch?: ChargeBatch): Promise<unknown> {
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id);
        reject(new GatewayError('GW_ERR_IPC_TIMEOUT', `primary did not answer "${op}" in ${this.timeoutMs} ms`));
      }, this.timeoutMs);
      this.#pending.set(id, { resolve, reject, timer });
      this.send({ t: 'req', id, op, arg, payload, batch });
    });
  }

  #receive(m: unknown): void {
    if (!isTagged(m)) return;
    const msg = m as PrimaryToWorker;
    switch (msg.t) {
      case 'cluster':
        this.#ready = msg.ready;
        break;
      case 'shutdown':
        this.handlers.shutdown(msg.code);
        break;
      case 'rate':
        this.#onRate?.(msg.update);
        break;
      case 'res': {
        const p = this.#pending.get(msg.id);
        if (!p) return;
        this.#pending.delete(msg.id);
        clearTimeout(p.timer);
        if (msg.error) p.reject(new Error(msg.error));
        else p.resolve(msg.result);
        break;
      }
      case 'req': {
        const id = msg.id;
        if (msg.op === 'local-metrics') {
          void this.handlers.localMetrics().then(
            (result) => this.send({ t: 'res', id, result }),
            (err: Error) => this.send({ t: 'res', id, error: err.message }),
          );
          break;
        }
        const result: WorkerOps[typeof msg.op] =
          msg.op === 'local-stats' ? this.handlers.localStats() : this.handlers.localDeliver(msg.arg ?? '', msg.payload ?? new Uint8Array());
        this.send({ t: 'res', id, result });
        break;
      }
      default:
        break;
    }
  }

  close(): void {
    process.off('message', this.#onMessage);
    for (const p of this.#pending.values()) {
      clearTimeout(p.timer);
      p.reject(new GatewayError('GW_ERR_CLOSED', 'cluster link closed'));
    }
    this.#pending.clear();
  }
}
