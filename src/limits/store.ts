/**
 * Where the workers of a cluster (and the hosts sharing a Redis) reconcile
 * their rate-limit buckets. Each worker decides locally, on its own buckets,
 * and reports in batches what it took; the store adds every worker's takes
 * to one shared TAT per key and answers how far ahead of now each key's TAT
 * is, which the worker then adopts; the other workers are told too
 * (`onUpdate`), so a tab on another worker learns within one sync period
 * that its session's budget was spent. See limits/sync.ts for the resulting
 * overshoot bound.
 */
import { nowUs } from './buckets.js';

/** One batch: keys of one kind, with the takes made on each since the last report. */
export interface ChargeBatch {
  /** The kind's name: part of the stored key ("session", "creator"). */
  kind: string;
  intervalUs: number;
  keys: string[];
  counts: number[];
}

/** Keys charged by another worker, with how far ahead of now their TATs are. */
export interface RateUpdate {
  kind: string;
  keys: string[];
  aheadUs: number[];
}

export interface RateStore {
  /**
   * Adds `counts[i] * intervalUs` to key i's shared TAT (from now, if it is
   * in the past) and resolves, per key, how many microseconds ahead of the
   * store's clock the TAT now is (0 for a full bucket). A count of 0 only
   * reads. Rejects if the store cannot be reached; the caller reports the
   * takes again later.
   */
  charge(batch: ChargeBatch): Promise<number[]>;
  /** Calls `listener` with the keys other workers charged (at most once per their batch; at most once delivery). */
  onUpdate(listener: (u: RateUpdate) => void): void;
  close(): Promise<void>;
}

/** The keys of a batch that were charged (not only read), with their results: what other workers are told. */
export function chargedUpdate(b: ChargeBatch, aheadUs: number[]): RateUpdate | undefined {
  const u: RateUpdate = { kind: b.kind, keys: [], aheadUs: [] };
  b.counts.forEach((n, i) => {
    if (n > 0) {
      u.keys.push(b.keys[i]!);
      u.aheadUs.push(aheadUs[i]!);
    }
  });
  return u.keys.length > 0 ? u : undefined;
}

/**
 * The GCRA charge on a map: the primary's store in embedded mode (one host,
 * no Redis; the primary tells the other workers of each charge itself) and
 * the reference the Redis script follows.
 */
export class MemoryRateStore implements RateStore {
  readonly #listeners: Array<(u: RateUpdate) => void> = [];
  readonly #tat = new Map<string, number>();
  readonly #timer: NodeJS.Timeout;

  constructor(private readonly now: () => number = nowUs) {
    // Full buckets are the same as none: forget them.
    this.#timer = setInterval(() => {
      const t = this.now();
      for (const [k, v] of this.#tat) if (v <= t) this.#tat.delete(k);
    }, 10_000);
    this.#timer.unref();
  }

  async charge(b: ChargeBatch): Promise<number[]> {
    const now = this.now();
    const ahead = b.keys.map((key, i) => {
      const k = `${b.kind}\u0000${key}`;
      let tat = Math.max(this.#tat.get(k) ?? 0, now);
      const n = b.counts[i] ?? 0;
      if (n > 0) {
        tat += n * b.intervalUs;
        this.#tat.set(k, tat);
      }
      return tat - now;
    });
    const u = this.#listeners.length > 0 ? chargedUpdate(b, ahead) : undefined;
    // After the answer, as from the primary and Redis: the caller hears its result first.
    if (u) setImmediate(() => { for (const l of this.#listeners) l(u); });
    return ahead;
  }

  /**
   * Listeners hear of every charge, after its caller has its answer
   * (callers in one process have no origin to skip; adopting one's own
   * update then is harmless: it holds nothing the caller has not adopted).
   */
  onUpdate(listener: (u: RateUpdate) => void): void {
    this.#listeners.push(listener);
  }

  get size(): number {
    return this.#tat.size;
  }

  async close(): Promise<void> {
    clearInterval(this.#timer);
  }
}
