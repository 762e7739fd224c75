/**
 * Reconciles this worker's synchronised buckets (sessions, creators) with
 * the other workers' through a RateStore (the primary in embedded mode,
 * Redis otherwise), in batches: every `periodMs`, and at once when a key is
 * first seen here. A socket whose session is new to this worker has its
 * frames handled only after that (see Limits.prepare), so a session that
 * reconnects to another worker or host arrives with its debt.
 *
 * Overshoot bound. A worker admits on its own bucket, which knows the other
 * workers' takes as of their last report (each report is charged in the
 * store and pushed to every worker: RateStore.onUpdate). The takes a worker
 * does not know of are what the other workers admitted in the last
 * periodMs plus a round trip. So for a key used on N workers (on any hosts)
 * at once, at most (N - 1) x limit takes beyond the budget are admitted:
 * every other worker spending, in the same period, the whole burst it
 * believed it had. Bursts further apart than periodMs + a round trip are
 * limited exactly, whichever report reaches the store first: a worker that
 * adopts the shared state adds the takes of its own the store has not got
 * yet (unreported, or in a batch still on its way), so a session moving to
 * another worker or host mid-report is counted once per take, never
 * dropped. Every admitted take is charged in the store, so an excess
 * is paid back: the key then waits longer. With the store unreachable,
 * workers go on limiting on their own buckets and report the takes when it
 * returns (they then count from the time of the report: late, so stricter,
 * never looser).
 */
import type { Logger } from '../observability/log.js';
import { nowUs } from './buckets.js';
import type { KeyedBuckets } from './keyed.js';
import type { RateStore, RateUpdate } from './store.js';

/** Keys per store call. */
const MAX_BATCH = 1000;

export class RateSync {
  readonly #timer: NodeJS.Timeout;
  #running: Promise<void> | undefined;
  #again = false;
  #soon: NodeJS.Timeout | undefined;
  #now = false;
  #closed = false;
  #lastWarn = 0;
  /** Batches the store could not take (a metric). */
  failures = 0;
  /** Resolved when the next run (one that starts after they were added) ends. */
  #waiters: Array<() => void> = [];
  /** The batch the store has yet to answer (one at a time), by key: its takes are in neither the bucket's count nor the store's answer to others. */
  #sending: { table: KeyedBuckets; counts: Map<string, number> } | undefined;

  constructor(
    private readonly store: RateStore,
    private readonly tables: KeyedBuckets[],
    periodMs: number,
    private readonly log: Logger,
  ) {
    this.#timer = setInterval(() => void this.sync(), periodMs);
    this.#timer.unref();
    store.onUpdate((u) => this.#adopt(u));
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

  /** What other workers charged: adopted for the keys this worker has. */
  #adopt(u: RateUpdate): void {
    const t = this.tables.find((x) => x.name === u.kind);
    if (t !== undefined) this.#adoptInto(t, u.keys, u.aheadUs, this.#sending?.table === t ? this.#sending.counts : undefined);
  }

  /**
   * Moves each key's bucket (wherever its slot is now) up to the shared
   * state plus what this worker took that the shared state cannot hold yet:
   * takes not reported, and (`inFlight`) takes in a batch the store has
   * not answered. The shared state alone would forget them: a worker that
   * took 1 while another's report of 3 was on its way would have adopted
   * 3, not 4, and admitted one take too many.
   */
  #adoptInto(t: KeyedBuckets, keys: string[], aheadUs: number[], inFlight?: Map<string, number>): void {
    const now = nowUs();
    const interval = t.table.intervalUs;
    keys.forEach((key, i) => {
      const slot = t.slotOf(key);
      if (slot === undefined || !(aheadUs[i]! > 0)) return;
      const unreported = t.table.charged(slot) + (inFlight?.get(key) ?? 0);
      t.table.adopt(slot, now + aheadUs[i]! + unreported * interval);
    });
  }

  /** Resolves once a run that starts from now has ended (reached the store or failed). */
  whenSynced(): Promise<void> {
    return new Promise((resolve) => {
      this.#waiters.push(resolve);
      this.#syncSoon();
    });
  }

  /** Reports pending takes at the end of this event-loop turn (a socket holding them closed). */
  syncNow(): void {
    if (this.#closed || this.#now) return;
    this.#now = true;
    setImmediate(() => {
      this.#now = false;
      void this.sync();
    });
  }

  #syncSoon(): void {
    if (this.#soon || this.#closed) return;
    this.#soon = setTimeout(() => {
      this.#soon = undefined;
      void this.sync();
    }, 1);
  }

  async #run(): Promise<void> {
    const waiters = this.#waiters.splice(0);
    try {
      await this.#runTables();
    } finally {
      for (const w of waiters) w();
    }
  }

  async #runTables(): Promise<void> {
    for (const t of this.tables) {
      let keys: string[] = [];
      let counts: number[] = [];
      for (const [key, slot, fresh] of t.entries()) {
        const n = t.table.drainCharged(slot);
        if (n === 0 && !fresh) continue;
        keys.push(key);
        counts.push(n);
        if (keys.length === MAX_BATCH) {
          await this.#charge(t, keys, counts);
          keys = [];
          counts = [];
        }
      }
      if (keys.length > 0) await this.#charge(t, keys, counts);
    }
  }

  async #charge(t: KeyedBuckets, keys: string[], counts: number[]): Promise<void> {
    const sending = new Map<string, number>();
    keys.forEach((key, i) => counts[i]! > 0 && sending.set(key, counts[i]!));
    this.#sending = { table: t, counts: sending };
    try {
      this.#adoptInto(t, keys, await this.store.charge({ kind: t.name, intervalUs: t.table.intervalUs, keys, counts }));
    } catch (err) {
      this.failures++;
      // Keep the takes (on the key's slot, wherever it is now) for the next report.
      keys.forEach((key, i) => {
        const slot = t.slotOf(key);
        if (slot === undefined) return;
        t.table.restoreCharged(slot, counts[i]!);
        t.refresh(key);
      });
      const now = Date.now();
      if (now - this.#lastWarn > 5000) {
        this.#lastWarn = now;
        this.log.warn({ err: (err as Error).message, kind: t.name }, 'rate-limit store unreachable; limiting per worker until it returns');
      }
    } finally {
      this.#sending = undefined;
    }
  }

  /** Stops the timers and reports what is pending one last time. Safe to call twice. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    clearInterval(this.#timer);
    clearTimeout(this.#soon);
    // A run in progress may have missed the last takes: wait for it, then one more.
    await this.#running?.catch(() => {});
    await this.#run().catch(() => {});
    for (const w of this.#waiters.splice(0)) w();
  }
}
