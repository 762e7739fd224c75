/**
 * Token buckets in a SharedArrayBuffer, kept as GCRA (the generic cell rate
 * algorithm): one 64-bit "theoretical arrival time" (TAT, microseconds since
 * the epoch) per bucket, updated with one compare-and-swap. The uWS thread
 * and the validation pool's threads update the same buckets, so a frame is
 * limited the same way whichever thread validates it.
 *
 * A table holds buckets of one kind (all with one rate): `limit` takes per
 * `windowMs`, refilled continuously, a burst of `limit` allowed. A slot's
 * TAT at or before now is a full bucket; TAT = now + windowMs is an empty
 * one. Lock-free on purpose: a pool thread that dies mid-update (piscina
 * replaces it) cannot leave a lock held.
 *
 * A table that is synchronised with other workers (see limits/sync.ts) also
 * counts, per slot, the takes not yet reported.
 */
import { performance } from 'node:perf_hooks';

/** A table as it crosses to a pool thread: the shared memory and its rate. */
export interface SharedTable {
  sab: SharedArrayBuffer;
  capacity: number;
  intervalUs: number;
  tauUs: number;
  counted: boolean;
}

/** This thread's performance.timeOrigin, read once: Node 20's getter checks its receiver on every read. */
const ORIGIN_MS = performance.timeOrigin;

/** Wall-clock microseconds, the same in every thread of the process (each thread adds its own time origin). */
export function nowUs(): number {
  return Math.round((ORIGIN_MS + performance.now()) * 1000);
}

export class BucketTable {
  readonly #tat: BigInt64Array;
  readonly #charged: Int32Array;
  /** Microseconds one take adds to the TAT: windowMs / limit. */
  readonly intervalUs: number;
  /** How far ahead of now the TAT may be before a take: the burst, less one interval. */
  readonly tauUs: number;

  constructor(readonly shared: SharedTable) {
    this.#tat = new BigInt64Array(shared.sab, 0, shared.capacity);
    this.#charged = new Int32Array(shared.sab, shared.capacity * 8, shared.capacity);
    this.intervalUs = shared.intervalUs;
    this.tauUs = shared.tauUs;
  }

  /** A new table of `capacity` slots for `limit` takes per `windowMs`; `counted` if synchronised. */
  static create(capacity: number, limit: number, windowMs: number, counted = false): BucketTable {
    const intervalUs = (windowMs * 1000) / limit;
    return new BucketTable({
      sab: new SharedArrayBuffer(capacity * 12),
      capacity,
      intervalUs,
      tauUs: windowMs * 1000 - intervalUs,
      counted,
    });
  }

  get capacity(): number {
    return this.shared.capacity;
  }

  /** Takes one token from `slot`; false (and nothing taken) when it is empty. */
  take(slot: number, now: number): boolean {
    const tat = this.#tat;
    for (;;) {
      const old = Atomics.load(tat, slot);
      const t = Number(old);
      const base = t > now ? t : now;
      if (base - now > this.tauUs) return false;
      if (Atomics.compareExchange(tat, slot, old, BigInt(Math.ceil(base + this.intervalUs))) === old) {
        if (this.shared.counted) Atomics.add(this.#charged, slot, 1);
        return true;
      }
    }
  }

  /** Moves the slot's TAT forward to `tatUs` if it is behind (what other workers took). */
  adopt(slot: number, tatUs: number): void {
    const tat = this.#tat;
    const want = BigInt(Math.ceil(tatUs));
    for (;;) {
      const old = Atomics.load(tat, slot);
      if (old >= want || Atomics.compareExchange(tat, slot, old, want) === old) return;
    }
  }

  /** Takes made on the slot since the last call (synchronised tables). */
  drainCharged(slot: number): number {
    return Atomics.exchange(this.#charged, slot, 0);
  }

  /** Takes made on the slot and not yet reported. */
  charged(slot: number): number {
    return Atomics.load(this.#charged, slot);
  }

  /** Gives back takes that could not be reported (they are reported next time). */
  restoreCharged(slot: number, n: number): void {
    Atomics.add(this.#charged, slot, n);
  }

  /** The slot as a full bucket with nothing to report (before it is reused). */
  reset(slot: number): void {
    Atomics.store(this.#tat, slot, 0n);
    Atomics.store(this.#charged, slot, 0);
  }

  /** The slot's TAT in microseconds. */
  tat(slot: number): number {
    return Number(Atomics.load(this.#tat, slot));
  }

  /** Full, with nothing left to report: the same as no bucket. */
  idle(slot: number, now: number): boolean {
    return this.tat(slot) <= now && Atomics.load(this.#charged, slot) === 0;
  }
}
