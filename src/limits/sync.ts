/**
 * Reconciles this worker's synchronised buckets (sessions, creators) with
 * the other workers' through a RateStore (the primary in embedded mode,
 * Redis otherwise), in batches: every `periodMs`, and soon after a key is
 * first seen here (a session that reconnects to another worker learns its
 * debt within one round trip).
 *
 * Overshoot bound. A worker admits on its own bucket, which knows the other
 * workers' takes as of the last reconciliation. So for a key used on N
 * workers (on any hosts) at once, at most (N - 1) x limit takes beyond the
 * budget can be admitted (each other worker spending the whole burst it
 * believed it had), and once the bucket is empty at most
 * (N - 1) x rate x (periodMs + round trip). Every admitted take is charged
 * in the store, so an excess is paid back: the key then waits longer. With
 * the store unreachable, workers go on limiting on their own buckets and
 * report the takes when it returns.
 */
import type { Logger } from '../observability/log.js';
import { nowUs } from './buckets.js';
import type { KeyedBuckets } from './keyed.js';
import type { RateStore } from './store.js';

/** Keys per store call. */
const MAX_BATCH = 1000;

export class RateSync {
  readonly #timer: NodeJS.Timeout;
  #running: Promise<void> | undefined;
  #again = false;
  #soon: NodeJS.Timeout | undefined;
  #closed = false;
  #lastWarn = 0;

  constructor(
    private readonly store: RateStore,
    private readonly tables: KeyedBuckets[],
    periodMs: number,
    private readonly log: Logger,
  ) {
    this.#timer = setInterval(() => void this.sync(), periodMs);
    this.#timer.unref();
    for (const t of tables) t.onNewKey = () => this.#syncSoon();
  }

  /** Reports every pending take and adopts the shared state (one run at a time). */
  sync(): Promise<void> {
    if (this.#running) {
      this.#again = true;
      return this.#running;
    }
    this.#running = this.#run().finally(() => {
      this.#running = undefined;
      if (this.#again && !this.#closed) {
        this.#again = false;
        void this.sync();
      }
    });
    return this.#running;
  }

  #syncSoon(): void {
    if (this.#soon || this.#closed) return;
    this.#soon = setTimeout(() => {
      this.#soon = undefined;
      void this.sync();
    }, 1);
  }

  async #run(): Promise<void> {
    for (const t of this.tables) {
      let keys: string[] = [];
      let slots: number[] = [];
      let counts: number[] = [];
      for (const [key, slot, fresh] of t.entries()) {
        const n = t.table.drainCharged(slot);
        if (n === 0 && !fresh) continue;
        keys.push(key);
        slots.push(slot);
        counts.push(n);
        if (keys.length === MAX_BATCH) {
          await this.#charge(t, keys, slots, counts);
          keys = [];
          slots = [];
          counts = [];
        }
      }
      if (keys.length > 0) await this.#charge(t, keys, slots, counts);
    }
  }

  async #charge(t: KeyedBuckets, keys: string[], slots: number[], counts: number[]): Promise<void> {
    try {
      const ahead = await this.store.charge({ kind: t.name, intervalUs: t.table.intervalUs, keys, counts });
      const now = nowUs();
      keys.forEach((key, i) => {
        if (t.slotOf(key) === slots[i] && ahead[i]! > 0) t.table.adopt(slots[i]!, now + ahead[i]!);
      });
    } catch (err) {
      keys.forEach((key, i) => {
        if (t.slotOf(key) !== slots[i]) return;
        t.table.restoreCharged(slots[i]!, counts[i]!);
        t.refresh(key);
      });
      const now = Date.now();
      if (now - this.#lastWarn > 5000) {
        this.#lastWarn = now;
        this.log.warn({ err: (err as Error).message, kind: t.name }, 'rate-limit store unreachable; limiting per worker until it returns');
      }
    }
  }

  /** Stops the timers and reports what is pending one last time. Safe to call twice. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#timer);
    clearTimeout(this.#soon);
    await this.sync().catch(() => {});
  }
}
